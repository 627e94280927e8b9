//! Cyclic arbitrage across constant-product pools.
//!
//! Two stages:
//!
//! 1. **Detection (floating point).** Each pool gives two directed edges
//!    between its tokens, weighted `-ln(marginal rate after fee)` (see
//!    [`edge_weight`]). A cycle whose weights sum to less than zero multiplies
//!    a marginal amount by more than one: a negative cycle is a profitable
//!    loop for an infinitesimal trade. Bellman-Ford finds them, either from a
//!    virtual source joined to every token ([`find_negative_cycle`]) or from
//!    the token the trader holds ([`best_cycle_through`]).
//! 2. **Sizing (exact integers).** For a cycle, [`optimise`] searches for the
//!    integer input that maximises `output - input`, where the output is
//!    computed by [`predict`] hop by hop with the pools' exact integer
//!    [`amount_out`](super::amm::amount_out). Because [`predict`] does exactly
//!    what [`execute`] (and [`Pool::swap`]) does, executing an
//!    [`Opportunity`] on the same reserves realises exactly its predicted
//!    profit.
//!
//! Nothing here panics: malformed cycles, unknown pool indices and
//! arithmetic overflow all yield `None`.

use super::amm::{Pool, Token, BPS_DENOMINATOR};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Weights are compared with this tolerance so that floating-point noise on
/// a break-even cycle is not reported as a negative cycle. It is far below
/// any fee (1 bp is `1e-4` in log terms); the exact integer sizing decides
/// profitability in the end anyway.
const EPS: f64 = 1e-12;

/// A closed trading loop: sell `tokens[i]` into pool `pools[i]` and receive
/// `tokens[i + 1]`, for every hop `i`.
///
/// A well-formed cycle has `tokens.len() == pools.len() + 1`, at least two
/// hops, and `tokens[0] == tokens[last]` (the start token, in which profit is
/// measured). See [`Cycle::is_valid`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cycle {
    /// The tokens visited, starting and ending with the start token.
    pub tokens: Vec<Token>,
    /// Indices (into the caller's pool slice) of the pool used by each hop.
    pub pools: Vec<usize>,
}

impl Cycle {
    /// The token the loop starts and ends with, if the cycle is non-empty.
    pub fn start(&self) -> Option<&Token> {
        self.tokens.first()
    }

    /// The number of hops (swaps).
    pub fn hops(&self) -> usize {
        self.pools.len()
    }

    /// Whether the cycle is well formed and every hop's pool exists in
    /// `pools` and trades exactly that hop's pair of tokens.
    pub fn is_valid(&self, pools: &[Pool]) -> bool {
        if self.pools.len() < 2
            || self.tokens.len() != self.pools.len() + 1
            || self.tokens.first() != self.tokens.last()
        {
            return false;
        }
        self.pools.iter().enumerate().all(|(i, &p)| {
            pools.get(p).and_then(|pool| pool.other(&self.tokens[i])).is_some_and(|next| *next == self.tokens[i + 1])
        })
    }

    /// Sum of the hops' [`edge_weight`]s at the pools' current reserves:
    /// negative means the loop is profitable for a marginal amount. `None`
    /// if the cycle is not valid for `pools`.
    pub fn log_weight(&self, pools: &[Pool]) -> Option<f64> {
        if !self.is_valid(pools) {
            return None;
        }
        self.pools.iter().zip(&self.tokens).map(|(&p, t)| pools.get(p).and_then(|pool| edge_weight(pool, t))).sum()
    }

    /// Product of the hops' marginal rates after fees, `exp(-log_weight)`:
    /// above 1 means profitable for a marginal amount.
    pub fn marginal_product(&self, pools: &[Pool]) -> Option<f64> {
        self.log_weight(pools).map(|w| (-w).exp())
    }

    /// The same loop started at `token` instead, or `None` if `token` is not
    /// on the cycle (or the cycle is malformed). Profit is measured in the
    /// start token, so rotating changes which token the trader needs.
    pub fn rotate_to(&self, token: &Token) -> Option<Cycle> {
        let n = self.pools.len();
        if n == 0 || self.tokens.len() != n + 1 || self.tokens.first() != self.tokens.last() {
            return None;
        }
        let k = self.tokens[..n].iter().position(|t| t == token)?;
        let mut tokens: Vec<Token> = (0..n).map(|i| self.tokens[(k + i) % n].clone()).collect();
        tokens.push(token.clone());
        let pools = (0..n).map(|i| self.pools[(k + i) % n]).collect();
        Some(Cycle { tokens, pools })
    }
}

/// A sized, profitable arbitrage: trade `input` of the cycle's start token
/// around `cycle` and receive `predicted_output` of it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opportunity {
    /// The loop to trade (tokens and pool indices).
    pub cycle: Cycle,
    /// The amount of the start token to sell into the first pool.
    pub input: u128,
    /// The exact amount of the start token the last hop returns, given the
    /// reserves the opportunity was computed on.
    pub predicted_output: u128,
    /// `predicted_output - input`; always greater than zero.
    pub predicted_profit: u128,
}

/// Weight of the directed edge "sell `token_in` into `pool`":
/// `-ln((1 - fee) * reserve_out / reserve_in)`, the negative log of
/// [`Pool::marginal_rate`]. Computed as a sum of logarithms so that extreme
/// reserve ratios neither overflow nor underflow. `None` if the pool does
/// not hold `token_in`.
pub fn edge_weight(pool: &Pool, token_in: &Token) -> Option<f64> {
    let token_out = pool.other(token_in)?;
    let r_in = pool.reserve_of(token_in)? as f64;
    let r_out = pool.reserve_of(token_out)? as f64;
    let fee_factor = f64::from(BPS_DENOMINATOR - pool.fee_bps()) / f64::from(BPS_DENOMINATOR);
    Some(-(fee_factor.ln() + r_out.ln() - r_in.ln()))
}

/// A directed edge of the token graph.
#[derive(Debug, Clone, Copy)]
struct Edge {
    from: usize,
    to: usize,
    pool: usize,
    weight: f64,
}

/// Tokens (sorted, so results are deterministic) and both directed edges of
/// every pool.
struct Graph {
    tokens: Vec<Token>,
    edges: Vec<Edge>,
}

impl Graph {
    fn build(pools: &[Pool]) -> Graph {
        let mut index: BTreeMap<&Token, usize> = BTreeMap::new();
        for p in pools {
            index.insert(p.token_a(), 0);
            index.insert(p.token_b(), 0);
        }
        for (i, v) in index.values_mut().enumerate() {
            *v = i;
        }
        let mut edges = Vec::with_capacity(pools.len() * 2);
        for (pi, p) in pools.iter().enumerate() {
            for (t_in, t_out) in [(p.token_a(), p.token_b()), (p.token_b(), p.token_a())] {
                if let (Some(&from), Some(&to), Some(weight)) =
                    (index.get(t_in), index.get(t_out), edge_weight(p, t_in))
                {
                    if weight.is_finite() {
                        edges.push(Edge { from, to, pool: pi, weight });
                    }
                }
            }
        }
        let tokens = index.keys().map(|t| (*t).clone()).collect();
        Graph { tokens, edges }
    }

    /// Turns a list of edges forming a closed walk into a [`Cycle`].
    fn cycle_from_edges(&self, edges: &[usize]) -> Option<Cycle> {
        let first = self.edges.get(*edges.first()?)?;
        let mut tokens = vec![self.tokens.get(first.from)?.clone()];
        let mut pools = Vec::with_capacity(edges.len());
        for &e in edges {
            let edge = self.edges.get(e)?;
            tokens.push(self.tokens.get(edge.to)?.clone());
            pools.push(edge.pool);
        }
        Some(Cycle { tokens, pools })
    }

    fn weight_of(&self, edges: &[usize]) -> f64 {
        edges.iter().filter_map(|&e| self.edges.get(e)).map(|e| e.weight).sum()
    }
}

/// Whether a list of pool indices uses some pool twice.
fn reuses_pool(pools: &[usize]) -> bool {
    pools.iter().enumerate().any(|(i, p)| pools[..i].contains(p))
}

/// Finds a negative cycle anywhere in the market with Bellman-Ford from a
/// virtual source (every token starts at distance 0).
///
/// Returns the most negative of the simple cycles recovered from the
/// predecessor graph after `|tokens|` rounds, started at its smallest token
/// (by `Ord`); use [`Cycle::rotate_to`] to start it elsewhere. `None` if no
/// cycle with weight below `-1e-12` is found.
pub fn find_negative_cycle(pools: &[Pool]) -> Option<Cycle> {
    let g = Graph::build(pools);
    let n = g.tokens.len();
    let mut dist = vec![0.0_f64; n];
    let mut pred: Vec<Option<usize>> = vec![None; n];
    // With the virtual source there are n + 1 vertices, so shortest paths
    // settle within n rounds; any relaxation in round n + 1 means a
    // negative cycle. We remember the vertices relaxed in the last round.
    let mut last_relaxed = Vec::new();
    for _round in 0..=n {
        last_relaxed.clear();
        for (ei, e) in g.edges.iter().enumerate() {
            let cand = dist[e.from] + e.weight;
            if cand < dist[e.to] - EPS {
                dist[e.to] = cand;
                pred[e.to] = Some(ei);
                last_relaxed.push(e.to);
            }
        }
        if last_relaxed.is_empty() {
            return None;
        }
    }
    let mut best: Option<(f64, Vec<usize>)> = None;
    for &v in &last_relaxed {
        if let Some(edges) = cycle_in_pred_graph(&g, &pred, v) {
            let w = g.weight_of(&edges);
            if w < -EPS && best.as_ref().is_none_or(|(bw, _)| w < *bw) {
                best = Some((w, edges));
            }
        }
    }
    let cycle = g.cycle_from_edges(&best?.1)?;
    let smallest = cycle.tokens.iter().min()?.clone();
    cycle.rotate_to(&smallest)
}

/// Walks predecessor edges back from `v` for `n` steps (which must land on a
/// cycle if there is one on the path), then collects that cycle's edges in
/// forward order.
fn cycle_in_pred_graph(g: &Graph, pred: &[Option<usize>], v: usize) -> Option<Vec<usize>> {
    let n = g.tokens.len();
    let mut x = v;
    for _ in 0..n {
        x = g.edges.get((*pred.get(x)?)?)?.from;
    }
    let start = x;
    let mut edges = Vec::new();
    loop {
        let e = (*pred.get(x)?)?;
        edges.push(e);
        x = g.edges.get(e)?.from;
        if x == start {
            break;
        }
        if edges.len() > n {
            return None;
        }
    }
    edges.reverse();
    Some(edges)
}

/// The lowest-weight cycle through `start` that Bellman-Ford from `start`
/// finds, with its weight (sum of [`edge_weight`]s; negative means
/// profitable for a marginal amount, positive is how far fees keep the loop
/// from break-even). The cycle starts and ends at `start`, visits no other
/// token twice and never uses a pool twice.
///
/// Method: Bellman-Ford whose vertices are the directed edges ("arrived at
/// token `v` through pool `p`"), so that a walk may not leave a token by the
/// pool it just arrived through. Without that rule the shortest-path tree
/// from `start` would mostly end in immediate "bounces" back through the same
/// pool (weight `-2 ln(1 - fee) > 0`), hiding the real cycles whenever no
/// cycle is negative, and two parallel pools on one pair could not both be
/// tried. The source is `start`; edges into `start` are not relaxed. After
/// `|tokens| - 1` rounds (or when nothing changes), every closing edge
/// `u -> start` through a different pool than the one that reached `u` gives
/// a candidate cycle. Its path is recovered from the predecessors, checked to
/// be simple, and its weight recomputed from the edges; the lightest wins.
///
/// When no negative cycle avoids `start` this finds the lightest simple
/// cycle through `start`. When one does, distances are not well defined and
/// the search is best effort: it still only returns genuine cycles through
/// `start`, with their true weight, but may miss the lightest.
///
/// `None` if `start` is in no pool or no cycle through it exists.
pub fn best_cycle_through(pools: &[Pool], start: &Token) -> Option<(Cycle, f64)> {
    let g = Graph::build(pools);
    let n = g.tokens.len();
    let s = g.tokens.iter().position(|t| t == start)?;
    let m = g.edges.len();
    let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (ei, e) in g.edges.iter().enumerate() {
        out_edges[e.from].push(ei);
    }
    // dist[e]: lightest walk from `start` whose last edge is `e`.
    let mut dist = vec![f64::INFINITY; m];
    let mut pred: Vec<Option<usize>> = vec![None; m];
    for &e in &out_edges[s] {
        if g.edges[e].to != s {
            dist[e] = g.edges[e].weight;
        }
    }
    for _round in 1..n {
        let mut changed = false;
        for ei in 0..m {
            if !dist[ei].is_finite() {
                continue;
            }
            let e = g.edges[ei];
            for &fi in &out_edges[e.to] {
                let f = g.edges[fi];
                if f.to == s || f.pool == e.pool {
                    continue;
                }
                let cand = dist[ei] + f.weight;
                if cand < dist[fi] - EPS {
                    dist[fi] = cand;
                    pred[fi] = Some(ei);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut best: Option<(f64, Vec<usize>)> = None;
    for (ei, e) in g.edges.iter().enumerate() {
        if e.to == s || !dist[ei].is_finite() {
            continue;
        }
        // Recover the walk start -> ... -> e.to (at most n - 1 edges).
        let mut path = vec![ei];
        let mut cur = ei;
        while g.edges[cur].from != s {
            let Some(p) = pred[cur] else { break };
            path.push(p);
            cur = p;
            if path.len() >= n {
                break;
            }
        }
        if g.edges[cur].from != s {
            continue;
        }
        path.reverse();
        for &ci in &out_edges[e.to] {
            let closing = g.edges[ci];
            if closing.to != s || closing.pool == e.pool {
                continue;
            }
            let mut cycle = path.clone();
            cycle.push(ci);
            if !is_simple(&g, &cycle) {
                continue;
            }
            let w = g.weight_of(&cycle);
            if best.as_ref().is_none_or(|(bw, _)| w < *bw) {
                best = Some((w, cycle));
            }
        }
    }
    let (w, path) = best?;
    Some((g.cycle_from_edges(&path)?, w))
}

/// Whether a closed walk (as edge indices) visits each token once (apart
/// from returning to its start) and uses each pool once.
fn is_simple(g: &Graph, edges: &[usize]) -> bool {
    let mut seen_tokens = vec![false; g.tokens.len()];
    let mut pools_used = Vec::with_capacity(edges.len());
    for &e in edges {
        let Some(edge) = g.edges.get(e) else {
            return false;
        };
        if std::mem::replace(&mut seen_tokens[edge.to], true) {
            return false;
        }
        pools_used.push(edge.pool);
    }
    !reuses_pool(&pools_used)
}

/// A negative cycle through `start` (see [`best_cycle_through`]), or `None`
/// if the lightest cycle found is not negative.
pub fn find_cycle_through(pools: &[Pool], start: &Token) -> Option<Cycle> {
    best_cycle_through(pools, start).filter(|(_, w)| *w < -EPS).map(|(c, _)| c)
}

/// Looks up the current state of pool `idx`: the simulated copy if an earlier
/// hop touched it, otherwise a fresh clone from `pools`.
fn touched<'a>(local: &'a mut Vec<(usize, Pool)>, pools: &[Pool], idx: usize) -> Option<&'a mut Pool> {
    let pos = match local.iter().position(|(i, _)| *i == idx) {
        Some(pos) => pos,
        None => {
            local.push((idx, pools.get(idx)?.clone()));
            local.len() - 1
        }
    };
    local.get_mut(pos).map(|(_, p)| p)
}

/// Runs the hops on copies of the touched pools; returns the output and the
/// updated copies.
fn simulate(cycle: &Cycle, pools: &[Pool], input: u128) -> Option<(u128, Vec<(usize, Pool)>)> {
    if !cycle.is_valid(pools) {
        return None;
    }
    let mut local: Vec<(usize, Pool)> = Vec::with_capacity(cycle.pools.len());
    let mut amount = input;
    for (i, &idx) in cycle.pools.iter().enumerate() {
        let pool = touched(&mut local, pools, idx)?;
        amount = pool.swap(&cycle.tokens[i], amount)?;
    }
    Some((amount, local))
}

/// The exact amount of the start token returned by trading `input` around
/// `cycle`, hop by hop, with each pool's integer swap formula and with each
/// hop seeing the reserves left by the previous hops (so a pool used twice
/// is simulated correctly). `pools` is not modified.
///
/// `None` if the cycle is malformed or does not match `pools`, or on
/// arithmetic overflow.
pub fn predict(cycle: &Cycle, pools: &[Pool], input: u128) -> Option<u128> {
    simulate(cycle, pools, input).map(|(out, _)| out)
}

/// Trades `input` around `cycle` for real, updating `pools`, and returns the
/// output. Atomic: on `None` no pool is changed. For the same reserves the
/// output equals [`predict`]'s.
pub fn execute(cycle: &Cycle, pools: &mut [Pool], input: u128) -> Option<u128> {
    let (out, local) = simulate(cycle, pools, input)?;
    for (idx, pool) in local {
        *pools.get_mut(idx)? = pool;
    }
    Some(out)
}

/// `output - input` as a signed number, saturating at the `i128` range;
/// `i128::MIN` when the trade cannot be simulated (overflow), which only
/// happens for inputs above some threshold and so keeps the profit unimodal.
fn profit_at(cycle: &Cycle, pools: &[Pool], input: u128) -> i128 {
    match predict(cycle, pools, input) {
        None => i128::MIN,
        Some(out) if out >= input => i128::try_from(out - input).unwrap_or(i128::MAX),
        Some(out) => i128::try_from(input - out).map_or(i128::MIN, |loss| -loss),
    }
}

/// Ternary search stops once the bracket is this narrow; the rest is scanned.
const WINDOW: u128 = 32;
/// Extra inputs scanned on each side of the final ternary bracket.
const MARGIN: u128 = 32;
/// Upper bound on ternary-search iterations: each one shrinks the bracket to
/// at most 2/3 (plus one), and `log_{1.5}(2^128) < 220`.
const MAX_TERNARY: u32 = 256;
/// Upper bound on hill-climbing steps after the ternary scan.
const MAX_CLIMB: u32 = 1024;
/// Widest band of candidate inputs that is scanned exhaustively.
const MAX_SCAN: u128 = 4096;

/// The real-valued (no rounding) output of a cycle over distinct pools,
/// `F(x) = a x / (1 + c x)`, plus `noise`, an upper bound on how far the
/// integer output can fall below it.
///
/// One hop is `h(x) = g R_out x / (R_in + g x)` with `g = 1 - fee`, and the
/// integer swap is exactly `floor(h(x))`. Composing `y = A x / (B + C x)`
/// with a hop gives `A' = g R_out A`, `B' = R_in B`, `C' = R_in C + g A`,
/// renormalised here to `B = 1` so nothing overflows.
///
/// Rounding: if the integer chain is `D_{j-1}` below the real one before hop
/// `j`, it is below by `D_j < r_j D_{j-1} + 1` after it, because `h_j` is
/// concave with slope at most its marginal rate `r_j` and the floor loses
/// less than one unit. So `0 <= F(x) - output(x) < 1 + r_k + r_k r_{k-1} + ...`.
struct Model {
    a: f64,
    c: f64,
    noise: f64,
}

impl Model {
    fn new(cycle: &Cycle, pools: &[Pool]) -> Option<Model> {
        let (mut a, mut c) = (1.0_f64, 0.0_f64);
        let mut rates = Vec::with_capacity(cycle.pools.len());
        for (i, &idx) in cycle.pools.iter().enumerate() {
            let pool = pools.get(idx)?;
            let t_in = cycle.tokens.get(i)?;
            let r_in = pool.reserve_of(t_in)? as f64;
            let r_out = pool.reserve_of(pool.other(t_in)?)? as f64;
            let g = f64::from(BPS_DENOMINATOR - pool.fee_bps()) / f64::from(BPS_DENOMINATOR);
            // (A, B = 1, C) -> (g R_out A, R_in, R_in C + g A), divided by R_in.
            let a_old = a;
            a = g * r_out * a_old / r_in;
            c += g * a_old / r_in;
            rates.push(g * r_out / r_in);
        }
        let mut noise = 0.0;
        let mut scale = 1.0;
        for r in rates.iter().rev() {
            noise += scale;
            scale *= r;
        }
        (a.is_finite() && c.is_finite() && c > 0.0 && noise.is_finite()).then_some(Model { a, c, noise })
    }

    /// Real-valued profit `F(x) - x`.
    fn profit(&self, x: u128) -> f64 {
        let x = x as f64;
        self.a * x / (1.0 + self.c * x) - x
    }

    /// The real maximiser of `F(x) - x`: `F'(x) = a / (1 + c x)^2 = 1`.
    fn argmax(&self) -> f64 {
        ((self.a.sqrt() - 1.0) / self.c).max(0.0)
    }
}

/// `x` as a `u128`, clamped to `0..=cap` (NaN maps to 0).
fn clamp_to_u128(x: f64, cap: u128) -> u128 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= cap as f64 {
        cap
    } else {
        (x as u128).min(cap)
    }
}

/// Smallest `x` in `lo..=hi` with `pred(x)`, assuming `pred` is false then
/// true on that range and `pred(hi)` holds.
fn first_true(mut lo: u128, mut hi: u128, pred: impl Fn(u128) -> bool) -> u128 {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// The best `(input, profit)` over every input in `lo..=hi` (ascending, so
/// ties keep the smaller input).
fn scan(lo: u128, hi: u128, p: &impl Fn(u128) -> i128) -> (u128, i128) {
    let mut best = (lo, p(lo));
    let mut x = lo;
    while x < hi {
        x += 1;
        let px = p(x);
        if px > best.1 {
            best = (x, px);
        }
    }
    best
}

/// Ternary search for the maximum of the integer profit on `lo..=hi`, then
/// an exhaustive scan of the final bracket widened by [`MARGIN`], then a
/// bounded hill-climb while the profit strictly improves.
fn ternary(mut lo: u128, mut hi: u128, p: &impl Fn(u128) -> i128) -> (u128, i128) {
    let (min, max) = (lo, hi);
    let mut iters = 0;
    while hi - lo > WINDOW && iters < MAX_TERNARY {
        let third = (hi - lo) / 3;
        let (m1, m2) = (lo + third, hi - third);
        if p(m1) < p(m2) {
            lo = m1;
        } else {
            hi = m2;
        }
        iters += 1;
    }
    let (mut best_x, mut best_p) = scan(lo.saturating_sub(MARGIN).max(min), hi.saturating_add(MARGIN).min(max), p);
    for up in [false, true] {
        let mut x = best_x;
        for _ in 0..MAX_CLIMB {
            let next = if up { x.checked_add(1).filter(|n| *n <= max) } else { x.checked_sub(1).filter(|n| *n >= min) };
            let Some(next) = next else { break };
            let pn = p(next);
            if pn <= best_p {
                break;
            }
            (best_x, best_p, x) = (next, pn, next);
        }
    }
    (best_x, best_p)
}

/// Sizes a trade around `cycle`: an integer `input` in `0..=max_input`
/// maximising `predict(input) - input`, returned as an [`Opportunity`] only
/// if that profit is positive. The reported profit is always exact for the
/// input chosen.
///
/// The real-valued output of one hop, `x -> a x / (b + c x)`, is concave and
/// increasing, and composing such maps keeps that form, so the real profit
/// `G(x) = F(x) - x` is concave. The integer profit `P` (what [`predict`]
/// gives) differs from it by rounding only: `G(x) - E < P(x) <= G(x)` with a
/// small `E` (see `Model`; about one unit per hop for rates near 1). So the
/// integer profit is unimodal up to a few units of noise, and:
///
/// * **Cycles over distinct pools** (all cycles the detectors return): the
///   continuous optimum `x*` is known in closed form. Evaluating `P` next to
///   it gives a value `T` the optimum must reach, and since `P <= G`, every
///   integer maximiser lies in the interval `{x : G(x) >= T}` (found by
///   binary search on the concave `G`, widened for floating-point error).
///   If that band is at most `MAX_SCAN` (4096) wide it is scanned exhaustively,
///   which makes the result the exact integer optimum (smallest input on
///   ties). That is the case for pools of up to roughly a million units; for
///   deeper pools the band is searched as below, and the result is then
///   within `E` units (base units, i.e. dust) of the optimum.
/// * **Otherwise** (a pool used twice, or a wide band): integer ternary
///   search, which keeps the two thirds of the bracket on the better side of
///   the two probes (bounded by `MAX_TERNARY` (256) iterations), then an
///   exhaustive scan of the final bracket plus `MARGIN` (32) points each side,
///   then a hill-climb of at most `MAX_CLIMB` (1024) steps while strictly
///   improving. Rounding noise can only mislead a probe comparison when the
///   two probes are within `E` of each other, so this lands within a few
///   units of the optimum.
///
/// The search never goes beyond the last hop's reserve of the start token
/// when the pools are distinct: the output is always below that reserve, so
/// larger inputs can only lose.
pub fn optimise(cycle: &Cycle, pools: &[Pool], max_input: u128) -> Option<Opportunity> {
    if !cycle.is_valid(pools) {
        return None;
    }
    let p = |x: u128| profit_at(cycle, pools, x);
    let (best_x, best_p) = if reuses_pool(&cycle.pools) {
        ternary(0, max_input, &p)
    } else {
        let last_pool = pools.get(*cycle.pools.last()?)?;
        let cap = max_input.min(last_pool.reserve_of(cycle.start()?)?);
        let model = Model::new(cycle, pools)?;
        if model.a <= 1.0 {
            // F(x) <= a x <= x: no input can profit.
            return None;
        }
        let x_c = clamp_to_u128(model.argmax(), cap);
        let (near_x, t) = scan(x_c, x_c.saturating_add(1).min(cap), &p);
        // Any maximiser x has G(x) >= P(x) >= t; allow for float error in G.
        let slack = 1.0 + 1e-9 * (model.profit(x_c).abs() + x_c as f64);
        let threshold = t as f64 - slack;
        let ok = |x: u128| model.profit(x) >= threshold;
        // The model must agree with the exact integers to within the
        // rounding bound; if float error broke that, fall back entirely.
        let model_ok = ok(x_c) && model.profit(x_c) - t as f64 <= model.noise + slack;
        if !model_ok {
            ternary(0, cap, &p)
        } else {
            let band_lo = first_true(0, x_c, ok);
            // Largest x in x_c..=cap with ok(x): first x where it fails, minus one.
            let band_hi = if ok(cap) { cap } else { first_true(x_c, cap, |x| !ok(x)).saturating_sub(1).max(x_c) };
            let best =
                if band_hi - band_lo <= MAX_SCAN { scan(band_lo, band_hi, &p) } else { ternary(band_lo, band_hi, &p) };
            if best.1 >= t {
                best
            } else {
                (near_x, t)
            }
        }
    };
    if best_p <= 0 {
        return None;
    }
    let output = predict(cycle, pools, best_x)?;
    let profit = output.checked_sub(best_x).filter(|p| *p > 0)?;
    Some(Opportunity { cycle: cycle.clone(), input: best_x, predicted_output: output, predicted_profit: profit })
}

/// Detects and sizes the best arbitrage starting and ending at `start`:
/// [`find_cycle_through`] then [`optimise`] with at most `max_input` (the
/// trader's balance of `start`, or `u128::MAX` for no limit). `None` if there
/// is no negative cycle through `start` or rounding leaves no integer profit.
pub fn find_opportunity(pools: &[Pool], start: &Token, max_input: u128) -> Option<Opportunity> {
    let cycle = find_cycle_through(pools, start)?;
    optimise(&cycle, pools, max_input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Token {
        Token::new(s)
    }

    fn pool(a: &str, ra: u128, b: &str, rb: u128, fee: u32) -> Pool {
        Pool::new(t(a), ra, t(b), rb, fee).unwrap()
    }

    /// A = B = C by pools 0 and 1, but pool 2 prices 1 C at 1.1 A.
    /// Around A -> B -> C -> A the marginal product is
    /// 1 * 1 * 1.1 * 0.997^3 = 1.0901... > 1.
    fn mispriced_triangle() -> Vec<Pool> {
        vec![pool("A", 10_000, "B", 10_000, 30), pool("B", 10_000, "C", 10_000, 30), pool("C", 10_000, "A", 11_000, 30)]
    }

    /// Brute force: best (input, profit) over every input in `0..=max`,
    /// smallest input on ties.
    fn brute_force(cycle: &Cycle, pools: &[Pool], max: u128) -> (u128, i128) {
        let mut best = (0, profit_at(cycle, pools, 0));
        for x in 1..=max {
            let px = profit_at(cycle, pools, x);
            if px > best.1 {
                best = (x, px);
            }
        }
        best
    }

    #[test]
    fn edge_weights() {
        let p = pool("A", 1_000, "B", 2_000, 0);
        // Selling A: rate 2000/1000 = 2 -> weight -ln 2.
        assert!((edge_weight(&p, &t("A")).unwrap() + 2f64.ln()).abs() < 1e-12);
        assert!((edge_weight(&p, &t("B")).unwrap() - 2f64.ln()).abs() < 1e-12);
        assert_eq!(edge_weight(&p, &t("C")), None);
    }

    #[test]
    fn triangle_cycle_found_from_start() {
        let pools = mispriced_triangle();
        let (cycle, w) = best_cycle_through(&pools, &t("A")).unwrap();
        assert_eq!(cycle.tokens, vec![t("A"), t("B"), t("C"), t("A")]);
        assert_eq!(cycle.pools, vec![0, 1, 2]);
        // w = -ln(1.1 * 0.997^3)
        let expected = -(1.1f64 * 0.997f64.powi(3)).ln();
        assert!((w - expected).abs() < 1e-9, "{w} vs {expected}");
        assert!((cycle.marginal_product(&pools).unwrap() - 1.1 * 0.997f64.powi(3)).abs() < 1e-9);
        // The same loop seen from B starts and ends at B.
        let from_b = find_cycle_through(&pools, &t("B")).unwrap();
        assert_eq!(from_b.tokens, vec![t("B"), t("C"), t("A"), t("B")]);
        assert_eq!(from_b.pools, vec![1, 2, 0]);
        assert_eq!(cycle.rotate_to(&t("B")), Some(from_b));
    }

    #[test]
    fn triangle_virtual_source() {
        let pools = mispriced_triangle();
        let cycle = find_negative_cycle(&pools).unwrap();
        assert_eq!(cycle.tokens, vec![t("A"), t("B"), t("C"), t("A")]);
        assert_eq!(cycle.pools, vec![0, 1, 2]);
    }

    #[test]
    fn triangle_optimum_matches_brute_force() {
        let pools = mispriced_triangle();
        let opp = find_opportunity(&pools, &t("A"), u128::MAX).unwrap();
        // Any input above pool 2's A reserve (11_000) returns less than it costs.
        let (bx, bp) = brute_force(&opp.cycle, &pools, 11_000);
        assert_eq!(opp.predicted_profit as i128, bp);
        assert_eq!(opp.input, bx);
        assert_eq!(opp.predicted_output, opp.input + opp.predicted_profit);
        // Hand check of one point, input 200 A:
        // hop 1 (A->B, 10_000/10_000): 200*9970 = 1_994_000;
        //   1_994_000*10_000 / (10_000*10_000 + 1_994_000) = 19_940_000_000/101_994_000 = 195.5 -> 195
        // hop 2 (B->C, 10_000/10_000): 195*9970 = 1_944_150;
        //   19_441_500_000 / 101_944_150 = 190.7 -> 190
        // hop 3 (C->A, 10_000/11_000): 190*9970 = 1_894_300;
        //   1_894_300*11_000 / (100_000_000 + 1_894_300) = 20_837_300_000/101_894_300 = 204.5 -> 204
        assert_eq!(predict(&opp.cycle, &pools, 200), Some(204));
        // And the optimum is strictly better than that.
        assert!(opp.predicted_profit > 4);
    }

    #[test]
    fn budget_caps_the_input() {
        let pools = mispriced_triangle();
        let opp = find_opportunity(&pools, &t("A"), 100).unwrap();
        let (bx, bp) = brute_force(&opp.cycle, &pools, 100);
        assert_eq!((opp.input, opp.predicted_profit as i128), (bx, bp));
        assert!(opp.input <= 100);
        assert_eq!(find_opportunity(&pools, &t("A"), 0), None);
    }

    #[test]
    fn consistent_prices_give_no_opportunity() {
        // 1 A = 1 B, 1 B = 2 C, 1 C = 0.5 A: the product is exactly 1, so
        // fees (0.997^3) make every loop lose.
        let pools = vec![
            pool("A", 10_000, "B", 10_000, 30),
            pool("B", 10_000, "C", 20_000, 30),
            pool("C", 20_000, "A", 10_000, 30),
        ];
        let (_, w) = best_cycle_through(&pools, &t("A")).unwrap();
        assert!(w > 0.0);
        assert_eq!(find_cycle_through(&pools, &t("A")), None);
        assert_eq!(find_negative_cycle(&pools), None);
        assert_eq!(find_opportunity(&pools, &t("A"), u128::MAX), None);
    }

    #[test]
    fn mispricing_smaller_than_fees_gives_no_opportunity() {
        // Pool 2 is off by 0.4 % (1 C = 0.502 A), less than the 0.9 % of fees.
        let pools = vec![
            pool("A", 10_000, "B", 10_000, 30),
            pool("B", 10_000, "C", 20_000, 30),
            pool("C", 20_000, "A", 10_040, 30),
        ];
        for start in ["A", "B", "C"] {
            assert_eq!(find_opportunity(&pools, &t(start), u128::MAX), None);
        }
        assert_eq!(find_negative_cycle(&pools), None);
    }

    #[test]
    fn executing_realises_predicted_profit() {
        let pools = mispriced_triangle();
        let opp = find_opportunity(&pools, &t("A"), u128::MAX).unwrap();
        let mut live = pools.clone();
        let out = execute(&opp.cycle, &mut live, opp.input).unwrap();
        assert_eq!(out, opp.predicted_output);
        assert_eq!(out - opp.input, opp.predicted_profit);
        for (before, after) in pools.iter().zip(&live) {
            assert!(after.k() >= before.k());
        }
        // The trade narrows the mispricing: no second opportunity of the same size.
        let after = find_opportunity(&live, &t("A"), u128::MAX);
        assert!(after.is_none_or(|o| o.predicted_profit < opp.predicted_profit));
    }

    #[test]
    fn parallel_pools_two_hop_cycle() {
        // Two A/B pools at different prices: 1 A = 1 B in pool 0, 1 A = 1.2 B in pool 1.
        // Buy B cheaply in pool 1, sell it back in pool 0.
        let pools = vec![pool("A", 50_000, "B", 50_000, 30), pool("A", 50_000, "B", 60_000, 30)];
        let opp = find_opportunity(&pools, &t("A"), u128::MAX).unwrap();
        assert_eq!(opp.cycle.tokens, vec![t("A"), t("B"), t("A")]);
        assert_eq!(opp.cycle.pools, vec![1, 0]);
        // The maximum profit (193) is reached at several inputs, 1963 and 1972
        // among them (rounding makes the integer profit only unimodal up to a
        // few units); the smallest is returned.
        let (bx, bp) = brute_force(&opp.cycle, &pools, 50_000);
        assert_eq!((opp.input, opp.predicted_profit as i128), (bx, bp));
        assert_eq!((bx, bp), (1963, 193));
        assert_eq!(profit_at(&opp.cycle, &pools, 1972), 193);
    }

    #[test]
    fn negative_cycle_away_from_start() {
        // B, C, D are mispriced among themselves; A hangs off B by a single pool,
        // so no loop through A can profit, but the virtual-source search sees it.
        let pools = vec![
            pool("A", 10_000, "B", 10_000, 30),
            pool("B", 10_000, "C", 10_000, 30),
            pool("C", 10_000, "D", 10_000, 30),
            pool("D", 10_000, "B", 12_000, 30),
        ];
        assert_eq!(find_opportunity(&pools, &t("A"), u128::MAX), None);
        let cycle = find_negative_cycle(&pools).unwrap();
        assert_eq!(cycle.tokens, vec![t("B"), t("C"), t("D"), t("B")]);
        assert_eq!(cycle.pools, vec![1, 2, 3]);
        assert!(optimise(&cycle, &pools, u128::MAX).is_some());
        let from_d = find_opportunity(&pools, &t("D"), u128::MAX).unwrap();
        assert_eq!(from_d.cycle.tokens, vec![t("D"), t("B"), t("C"), t("D")]);
    }

    #[test]
    fn malformed_cycles_are_rejected() {
        let pools = mispriced_triangle();
        let good = Cycle { tokens: vec![t("A"), t("B"), t("C"), t("A")], pools: vec![0, 1, 2] };
        assert!(good.is_valid(&pools));
        let bad_index = Cycle { pools: vec![0, 1, 7], ..good.clone() };
        let wrong_pool = Cycle { pools: vec![0, 2, 1], ..good.clone() };
        let not_closed = Cycle { tokens: vec![t("A"), t("B"), t("C"), t("B")], pools: vec![0, 1, 1] };
        let empty = Cycle { tokens: vec![], pools: vec![] };
        for c in [&bad_index, &wrong_pool, &not_closed, &empty] {
            assert!(!c.is_valid(&pools));
            assert_eq!(predict(c, &pools, 100), None);
            assert_eq!(optimise(c, &pools, 100), None);
            let mut live = pools.clone();
            assert_eq!(execute(c, &mut live, 100), None);
            assert_eq!(live, pools);
        }
        assert_eq!(empty.rotate_to(&t("A")), None);
        assert_eq!(good.rotate_to(&t("Z")), None);
        assert_eq!(best_cycle_through(&pools, &t("Z")), None);
        assert_eq!(find_negative_cycle(&[]), None);
    }

    #[test]
    fn predict_handles_a_pool_used_twice() {
        // A -> B -> A -> B -> A through the same pool twice in a row: the
        // second visit must see the reserves left by the first.
        let pools = vec![pool("A", 1_000, "B", 1_000, 0)];
        let cycle = Cycle { tokens: vec![t("A"), t("B"), t("A")], pools: vec![0, 0] };
        // hop 1: 100*10_000*1_000 / (1_000*10_000 + 1_000_000) = 1e9/1.1e7 = 90.9 -> 90
        //   reserves now A 1_100, B 910
        // hop 2: 90*10_000*1_100 / (910*10_000 + 900_000) = 990_000_000/10_000_000 = 99
        assert_eq!(predict(&cycle, &pools, 100), Some(99));
        let mut live = pools.clone();
        assert_eq!(execute(&cycle, &mut live, 100), Some(99));
        assert_eq!((live[0].reserve_a(), live[0].reserve_b()), (1_001, 1_000));
        // Can never profit on a single pool.
        assert_eq!(optimise(&cycle, &pools, 10_000), None);
    }

    #[test]
    fn ternary_path_on_a_cycle_reusing_pools() {
        // Loop twice around a mispriced two-pool loop: pools [1, 0, 1, 0]
        // reuse pools, so `optimise` takes the ternary-search path.
        let pools = vec![pool("A", 50_000, "B", 50_000, 30), pool("A", 50_000, "B", 60_000, 30)];
        let cycle = Cycle { tokens: vec![t("A"), t("B"), t("A"), t("B"), t("A")], pools: vec![1, 0, 1, 0] };
        let opp = optimise(&cycle, &pools, 60_000).unwrap();
        // The ternary path is only guaranteed to land within the rounding
        // noise (about one unit per hop) of the optimum: here 192 vs 193.
        let (_, bp) = brute_force(&cycle, &pools, 60_000);
        let got = opp.predicted_profit as i128;
        assert!(got <= bp && bp - got <= 4, "{got} vs {bp}");
        let mut live = pools.clone();
        assert_eq!(execute(&cycle, &mut live, opp.input), Some(opp.predicted_output));
    }

    #[test]
    fn huge_reserves_do_not_panic() {
        let e18 = 1_000_000_000_000_000_000u128;
        let pools = vec![
            pool("A", 1_000_000 * e18, "B", 1_000_000 * e18, 30),
            pool("B", 1_000_000 * e18, "C", 1_000_000 * e18, 30),
            pool("C", 1_000_000 * e18, "A", 1_100_000 * e18, 30),
        ];
        let opp = find_opportunity(&pools, &t("A"), u128::MAX).unwrap();
        let mut live = pools.clone();
        assert_eq!(execute(&opp.cycle, &mut live, opp.input), Some(opp.predicted_output));
        // Near-optimal: one unit more or less in either direction does not help.
        for x in [opp.input - 1, opp.input + 1] {
            assert!(profit_at(&opp.cycle, &pools, x) <= opp.predicted_profit as i128);
        }
        let extreme = vec![
            pool("A", u128::MAX / 2, "B", 1, 0),
            pool("B", 1, "C", u128::MAX / 2, 0),
            pool("C", 1, "A", u128::MAX / 2, 0),
        ];
        let _ = find_opportunity(&extreme, &t("A"), u128::MAX);
        let _ = find_negative_cycle(&extreme);
    }

    /// Up to four tokens and up to five pools between random pairs.
    fn market(max_reserve: u128) -> impl Strategy<Value = Vec<Pool>> {
        let names = ["A", "B", "C", "D"];
        prop::collection::vec((0usize..4, 1usize..4, 100u128..=max_reserve, 100u128..=max_reserve, 0u32..=100), 2..=5)
            .prop_map(move |specs| {
                specs.into_iter().map(|(i, d, ra, rb, fee)| pool(names[i], ra, names[(i + d) % 4], rb, fee)).collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any opportunity found is real: executing it on cloned pools
        /// realises exactly the predicted (positive) profit, and no pool's k
        /// decreases.
        #[test]
        fn found_opportunities_are_realised(pools in market(1_000_000_000_000), start in 0usize..4) {
            let start = t(["A", "B", "C", "D"][start]);
            if let Some(opp) = find_opportunity(&pools, &start, u128::MAX) {
                prop_assert!(opp.predicted_profit > 0);
                prop_assert!(opp.cycle.is_valid(&pools));
                prop_assert_eq!(opp.cycle.start(), Some(&start));
                let mut live = pools.clone();
                let out = execute(&opp.cycle, &mut live, opp.input);
                prop_assert_eq!(out, Some(opp.predicted_output));
                prop_assert_eq!(opp.predicted_output - opp.input, opp.predicted_profit);
                for (i, (before, after)) in pools.iter().zip(&live).enumerate() {
                    prop_assert!(after.k() >= before.k());
                    if !opp.cycle.pools.contains(&i) {
                        prop_assert_eq!(before, after);
                    }
                }
            }
            if let Some(cycle) = find_negative_cycle(&pools) {
                prop_assert!(cycle.is_valid(&pools));
                prop_assert!(cycle.log_weight(&pools).unwrap() < 0.0);
            }
        }

        /// On small pools, the sized input is the exact integer optimum.
        #[test]
        fn optimum_matches_brute_force(pools in market(3_000), start in 0usize..4) {
            let start = t(["A", "B", "C", "D"][start]);
            if let Some((cycle, _)) = best_cycle_through(&pools, &start) {
                let bound = pools[*cycle.pools.last().unwrap()].reserve_of(&start).unwrap();
                let (bx, bp) = brute_force(&cycle, &pools, bound);
                match optimise(&cycle, &pools, u128::MAX) {
                    // Same profit, and the same (smallest) maximising input.
                    Some(opp) => {
                        prop_assert_eq!(opp.predicted_profit as i128, bp);
                        prop_assert_eq!(opp.input, bx);
                    }
                    None => prop_assert!(bp <= 0),
                }
            }
        }
    }
}
