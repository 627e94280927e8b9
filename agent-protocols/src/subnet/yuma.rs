//! Yuma Consensus, the original (non-Yuma3, liquid alpha off) epoch of Bittensor's subtensor,
//! as a pure function.
//!
//! A subnet has `n` uids. Every uid may act as a miner (it is scored) and as a validator (it
//! scores others, if its stake earns it a permit). Each epoch, [`epoch`] takes the uids'
//! stakes, the weights each validator set on each uid, and the bonds left by the previous
//! epoch, and returns:
//!
//! - the consensus weight per uid: the highest weight that validators holding at least
//!   `kappa` of the active stake agree to give it;
//! - the clipped weights (no validator may give more than consensus; derived from the weights
//!   and consensus, [`Outcome::clipped_weights`]), ranks, trust and the normalised incentive
//!   that pays miners;
//! - validator trust (how much of its weight survived clipping);
//! - the new bonds, an exponential moving average of clipped weight times stake, and the
//!   dividends they earn, which pay validators;
//! - the split of the epoch's tokens between the subnet owner, miners and validators, in
//!   whole tokens that add up exactly to the emission.
//!
//! The weight and bond matrices are uid by uid, stored as sparse rows as subtensor's own epoch
//! stores them: row `i` lists uid `i`'s non-zero entries as `(uid, value)` pairs. Miners' rows
//! are empty, so an epoch costs time and memory in proportion to the weights actually set
//! (one with 256 validators and 4,096 miners, each validator weighting 10–20% of them, takes
//! about 9 ms on the development machine), not to `n²`. A caller that runs epoch after epoch
//! holds a [`Yuma`] workspace, which reuses each outcome's memory for the next. When most weights are set, consensus walks the
//! columns densely instead; a large epoch splits each pass over two threads, by rows or by
//! columns. Every way gives the same result to the bit (`docs/subnet.md`, *Cost*).
//!
//! The arithmetic is `f64`; subtensor computes the same formulas in 32.32 fixed point, so
//! its results differ from these by its rounding (about 1e-9). `docs/subnet.md` has every
//! formula, the subtensor source each follows, and what was left out.
//!
//! ```
//! use agent_protocols::subnet::yuma::{epoch, Inputs, Params};
//!
//! // uids 0 and 1 validate (60 and 40 tokens of stake); uids 2 and 3 mine.
//! let stakes = [60, 40, 0, 0];
//! let weights = vec![
//!     vec![(2, 0.75), (3, 0.25)], // uid 0 rates miner 2 higher
//!     vec![(2, 0.25), (3, 0.75)], // uid 1 rates miner 3 higher
//!     vec![],                     // miners set no weights
//!     vec![],
//! ];
//! let out = epoch(&Inputs { stakes: &stakes, weights: &weights, bonds: &[], emission: 1_000_000 }, &Params::default())?;
//!
//! // 60% of the stake backs 0.75 for miner 2; for miner 3 only 0.25 has majority backing,
//! // so uid 1's 0.75 is clipped to 0.25.
//! assert!((out.consensus[2] - 0.75).abs() < 1e-12);
//! assert!((out.consensus[3] - 0.25).abs() < 1e-12);
//! assert!((out.incentive[2] - 0.6875).abs() < 1e-12);
//! assert!((out.dividends[0] - 0.75).abs() < 1e-12);
//! assert_eq!(out.clipped_weights()[1], [(2, 0.25), (3, 0.25)]);
//!
//! // 18% to the owner, the rest half to miners, half to validators, to the last token.
//! assert_eq!(out.emissions.owner, 179_995);
//! assert_eq!(out.emissions.total(), 1_000_000);
//!
//! // The new bonds go back in next epoch.
//! let inputs = Inputs { stakes: &stakes, weights: &weights, bonds: &out.bonds, emission: 1_000_000 };
//! let next = epoch(&inputs, &Params::default())?;
//! # assert_eq!(next.emissions.total(), 1_000_000);
//! # Ok::<(), agent_protocols::subnet::yuma::YumaError>(())
//! ```

use std::borrow::Cow;
use std::ops::Range;
use std::sync::OnceLock;

use thiserror::Error;

/// `u16::MAX` as a float: subtensor stores fractions such as kappa as `x / 65535`.
const U16_DENOMINATOR: f64 = 65535.0;
/// How far, relative to the voting stake, a sum of stakes may be from its exact value: sums of
/// at most 2^16 positive terms (one per validator) are each within 2^-37 of it; allow 1e-9.
/// Consensus decides a comparison without sorting only when it clears this margin.
const ROUNDING_MARGIN: f64 = 1e-9;
/// Below this many weights an epoch runs on one thread: on the development machine the
/// second thread's start and its own allocations cost more than it saves below about this.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 18;
/// Denominator of the per-million parameters ([`Params::bonds_moving_average`], [`Params::miner_share`]).
const PER_MILLION: u64 = 1_000_000;

/// The parameters of one epoch, in subtensor's own encodings so chain hyperparameters can be
/// copied over unchanged. [`Params::default`] is subtensor's default for a new subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Consensus quantile, as `kappa / 65535`: a uid's consensus weight is the highest
    /// weight that validators holding at least this share of active stake give it or more.
    /// Default 32 767 (just under one half).
    pub kappa: u16,
    /// Weight of the old bonds in the bonds moving average, in millionths; the new epoch's
    /// bonds enter with weight `1 - bonds_moving_average / 1_000_000`. Default 900 000
    /// (old 0.9, new 0.1). At most 1 000 000.
    pub bonds_moving_average: u64,
    /// How far bonds follow clipped rather than raw weights, as `bonds_penalty / 65535`:
    /// 0 builds bonds from the raw weights, 65 535 from the clipped ones. Default 65 535.
    pub bonds_penalty: u16,
    /// How many uids, by stake, may validate (the top-k with non-zero stake). Default 128.
    pub max_allowed_validators: u16,
    /// Stakes below this count as zero. Default 0.
    pub min_stake: u64,
    /// The subnet owner's cut of each emission, as `owner_cut / 65535`. Default 11 796 (18%).
    pub owner_cut: u16,
    /// The miners' share of what is left after the owner's cut, in millionths; validators get
    /// the rest. Default 500 000 (half). At most 1 000 000.
    pub miner_share: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            kappa: 32_767,
            bonds_moving_average: 900_000,
            bonds_penalty: u16::MAX,
            max_allowed_validators: 128,
            min_stake: 0,
            owner_cut: 11_796,
            miner_share: 500_000,
        }
    }
}

impl Params {
    /// Kappa as a fraction in `[0, 1]`.
    pub fn kappa_fraction(&self) -> f64 {
        f64::from(self.kappa) / U16_DENOMINATOR
    }

    /// The weight of the new epoch's bonds in the moving average,
    /// `1 - bonds_moving_average / 1_000_000` (0.1 by default).
    pub fn bonds_alpha(&self) -> f64 {
        // As subtensor: scale the moving average down first, then subtract from one.
        1.0 - self.bonds_moving_average as f64 / PER_MILLION as f64
    }

    /// The bonds penalty as a fraction in `[0, 1]`.
    pub fn bonds_penalty_fraction(&self) -> f64 {
        f64::from(self.bonds_penalty) / U16_DENOMINATOR
    }
}

/// One row of a weight or bond matrix, sparse: `(uid, value)` pairs, the uid being the column.
/// Uids not listed are zero, so an empty row is a row of zeros.
pub type SparseRow = Vec<(usize, f64)>;

/// One epoch's inputs, indexed by uid.
///
/// The matrices are uid by uid, as in subtensor: row `i` is what uid `i` says as a validator
/// (or holds, for bonds), column `j` is about uid `j` as a miner. Each row is a [`SparseRow`]:
/// its entries may come in any order and may include zeros, but name each uid (below the
/// number of uids) at most once; the outcome does not depend on their order. An empty slice
/// stands for a matrix of zeros, and an empty row for a row of zeros (a uid that set no
/// weights or holds no bonds): leave miners' rows empty.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Each uid's stake, in tokens.
    pub stakes: &'a [u64],
    /// `weights[i]`: the weights validator `i` sets, `(j, w)` for weight `w` on uid `j`. Any
    /// finite non-negative scale; each row is normalised to sum to 1. A validator's weight on
    /// itself is ignored.
    pub weights: &'a [SparseRow],
    /// `bonds[i]`: validator `i`'s bonds after the previous epoch, `(j, b)` for bond `b` in
    /// uid `j`, any finite non-negative scale (each column is normalised); pass
    /// [`Outcome::bonds`] back in.
    pub bonds: &'a [SparseRow],
    /// Tokens to distribute this epoch.
    pub emission: u64,
}

/// Why [`epoch`] refused its inputs.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum YumaError {
    /// There are no uids.
    #[error("the subnet has no uids (the stake vector is empty)")]
    Empty,
    /// A matrix has neither zero rows nor one per uid.
    #[error("{matrix} has {rows} rows; expected {uids} (one per uid) or none")]
    RowCount {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// Rows given.
        rows: usize,
        /// Number of uids.
        uids: usize,
    },
    /// A matrix row has an entry for a uid that does not exist.
    #[error("{matrix} row {row} has an entry for uid {uid}; there are only {uids} uids")]
    UnknownUid {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// The row (uid).
        row: usize,
        /// The uid named.
        uid: usize,
        /// Number of uids.
        uids: usize,
    },
    /// A matrix row has two entries for the same uid.
    #[error("{matrix} row {row} has two entries for uid {uid}")]
    DuplicateEntry {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// The row (uid).
        row: usize,
        /// The uid named twice.
        uid: usize,
    },
    /// A matrix entry is negative, infinite or NaN.
    #[error("{matrix} row {row}, uid {col}, is {value}; entries must be finite and non-negative")]
    InvalidEntry {
        /// `"weights"` or `"bonds"`.
        matrix: &'static str,
        /// Row (uid).
        row: usize,
        /// Column (uid).
        col: usize,
        /// The entry.
        value: f64,
    },
    /// A per-million parameter is above one million.
    #[error("parameter {name} is {value}; at most 1000000 (it is in millionths)")]
    ParamOutOfRange {
        /// The parameter's field name.
        name: &'static str,
        /// Its value.
        value: u64,
    },
}

/// Whole-token payouts of one epoch. `owner + Σ miners + Σ validators + unallocated` is
/// exactly the emission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emissions {
    /// The subnet owner's cut.
    pub owner: u64,
    /// Per uid, paid for its incentive (as a miner).
    pub miners: Vec<u64>,
    /// Per uid, paid for its dividends (as a validator).
    pub validators: Vec<u64>,
    /// Tokens nobody could be paid: non-zero only when no stake passes the
    /// [`Params::min_stake`] filter, so there is neither incentive nor anyone to fall back on.
    pub unallocated: u64,
}

impl Emissions {
    /// Each uid's miner plus validator payout.
    pub fn per_uid(&self) -> Vec<u64> {
        self.miners.iter().zip(&self.validators).map(|(m, v)| m.saturating_add(*v)).collect()
    }

    /// Everything paid or left unallocated; equals the epoch's emission.
    pub fn total(&self) -> u128 {
        let uids: u128 = self.per_uid().iter().map(|&x| u128::from(x)).sum();
        u128::from(self.owner) + uids + u128::from(self.unallocated)
    }
}

/// Everything one epoch computes, indexed by uid. Fractions are `f64` in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Stake after the [`Params::min_stake`] filter, normalised to sum to 1 (all 0 if none).
    pub stake: Vec<f64>,
    /// Whether the uid may validate this epoch: among the top [`Params::max_allowed_validators`]
    /// by stake, with non-zero stake.
    pub validator_permits: Vec<bool>,
    /// Stake of permitted validators, normalised to sum to 1 (all 0 if none).
    pub active_stake: Vec<f64>,
    /// The weights that count: rows of validators without a permit and each validator's
    /// weight on itself set to 0, then each row normalised to sum to 1 (or left all 0).
    /// As in every matrix here, one row per uid, each listing its non-zero entries in
    /// ascending uid; the rows of uids without a validator permit are empty.
    pub weights: Vec<SparseRow>,
    /// Per uid, the `kappa`-quantile of the weights it received, weighted by active stake.
    /// The clipped weights follow from it and [`Outcome::weights`]
    /// ([`clipped_weights`](Outcome::clipped_weights)), so they are not stored.
    pub consensus: Vec<f64>,
    /// Per uid, `Σ_i clipped_weights[i][j] · active_stake[i]` (not normalised).
    pub ranks: Vec<f64>,
    /// Per uid, its rank over the rank it would have had unclipped (0 if that is 0).
    pub trust: Vec<f64>,
    /// Ranks normalised to sum to 1 (all 0 if no rank is positive): the miners' share.
    pub incentive: Vec<f64>,
    /// Per validator, the sum of its clipped weights: how much of its weight survived.
    pub validator_trust: Vec<f64>,
    /// Per validator, `Σ_j bonds[i][j] · incentive[j]`, normalised to sum to 1 (or all 0).
    pub dividends: Vec<f64>,
    /// The new bonds to pass to the next epoch: the moving average, each column normalised to
    /// sum to 1, with the rows of uids without a validator permit cleared (left empty).
    /// Sparse as [`Outcome::weights`].
    pub bonds: Vec<SparseRow>,
    /// The token split.
    pub emissions: Emissions,
}

impl Outcome {
    /// Row `i` of the clipped weights, `min(weights[i][j], consensus[j])`, without zeros, in
    /// ascending uid (empty for a uid without a validator permit, or not in the subnet).
    pub fn clipped_row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let row = self.weights.get(i).map_or(&[][..], Vec::as_slice);
        clip(row, &self.consensus)
    }

    /// The clipped weights, `min(weights[i][j], consensus[j])`, sparse as
    /// [`Outcome::weights`]: what ranks, trust and validator trust were computed from.
    pub fn clipped_weights(&self) -> Vec<SparseRow> {
        (0..self.weights.len()).map(|i| self.clipped_row(i).collect()).collect()
    }
}

/// A weight row's entries clipped to `consensus`, zeros left out.
fn clip<'a>(row: &'a [(usize, f64)], consensus: &'a [f64]) -> impl Iterator<Item = (usize, f64)> + 'a {
    row.iter().map(|&(j, w)| (j, w.min(consensus[j]))).filter(|&(_, c)| c != 0.0)
}

/// Runs one epoch of Yuma Consensus. Pure and deterministic: same inputs, same outcome.
///
/// # Errors
///
/// [`YumaError`] if there are no uids, a matrix has neither no rows nor one per uid, a row
/// names a uid twice or one that does not exist, an entry is negative or not finite, or a
/// per-million parameter is above one million.
pub fn epoch(inputs: &Inputs<'_>, params: &Params) -> Result<Outcome, YumaError> {
    epoch_with(inputs, params, Layout::Auto, &mut Workspace::default(), &mut None)
}

/// Runs epochs one after another, reusing the memory of each outcome for the next: what a
/// caller that runs every tempo (a subnet owner, a benchmark) should hold rather than calling
/// [`epoch`] afresh. A dense epoch of 256 validators and 4,096 miners returns about 32 MB of
/// weight and bond rows; allocated afresh each time, much of that memory is handed back to
/// the operating system between epochs and faulted in again in the next.
///
/// Each [`run`](Self::run) gives the same outcome, to the bit, as [`epoch`] on the same inputs,
/// whatever ran before it.
///
/// ```
/// use agent_protocols::subnet::yuma::{epoch, Inputs, Params, Yuma};
///
/// let stakes = [60, 40, 0, 0];
/// let weights = vec![vec![(2, 0.75), (3, 0.25)], vec![(2, 0.25), (3, 0.75)], vec![], vec![]];
/// let params = Params::default();
/// let mut yuma = Yuma::new();
/// let mut bonds = Vec::new();
/// for _ in 0..3 {
///     let inputs = Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission: 1_000_000 };
///     let out = yuma.run(&inputs, &params)?;
///     assert_eq!(*out, epoch(&inputs, &params)?);
///     bonds.clone_from(&out.bonds); // The next epoch's input (its rows keep their memory too).
/// }
/// # Ok::<(), agent_protocols::subnet::yuma::YumaError>(())
/// ```
#[derive(Debug, Default)]
pub struct Yuma {
    /// The last outcome; its rows become the next one's.
    outcome: Option<Outcome>,
    workspace: Workspace,
}

impl Yuma {
    /// A workspace that has run no epoch yet.
    pub fn new() -> Yuma {
        Yuma::default()
    }

    /// Runs one epoch, as [`epoch`] does, into this workspace's outcome, and returns it. The
    /// previous outcome's memory is reused, so it is gone once this succeeds; clone what must
    /// outlive the next run (such as [`Outcome::bonds`], the next epoch's input).
    ///
    /// # Errors
    ///
    /// As [`epoch`]. On an error the previous outcome is kept.
    pub fn run(&mut self, inputs: &Inputs<'_>, params: &Params) -> Result<&Outcome, YumaError> {
        self.run_with(inputs, params, Layout::Auto)
    }

    /// [`run`](Self::run) with the consensus computed in the given [`Layout`].
    fn run_with(&mut self, inputs: &Inputs<'_>, params: &Params, layout: Layout) -> Result<&Outcome, YumaError> {
        let outcome = epoch_with(inputs, params, layout, &mut self.workspace, &mut self.outcome)?;
        Ok(self.outcome.insert(outcome))
    }

    /// The outcome of the last successful [`run`](Self::run), if any.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// The outcome of the last successful [`run`](Self::run), taken out of the workspace
    /// (whose next run then allocates its rows afresh, unless one is handed back with
    /// [`recycle`](Self::recycle)).
    pub fn take_outcome(&mut self) -> Option<Outcome> {
        self.outcome.take()
    }

    /// Hands back an outcome nobody needs any more (one [`take_outcome`](Self::take_outcome)
    /// gave out, or any other), so that the next run reuses its memory.
    pub fn recycle(&mut self, outcome: Outcome) {
        self.workspace.recycle(outcome);
    }
}

/// The memory one epoch leaves for the next: the rows of the last outcome, emptied, and the
/// buffer sparse consensus gathers its columns into.
#[derive(Debug, Default)]
struct Workspace {
    weights: SpareRows,
    bonds: SpareRows,
    /// [`weighted_median_cols`]'s points.
    points: Vec<(u64, usize)>,
}

impl Workspace {
    /// Keeps the rows of `outcome`, each matrix's for the same matrix next time, so a row
    /// is usually long enough already.
    fn recycle(&mut self, outcome: Outcome) {
        self.weights.keep(outcome.weights);
        self.bonds.keep(outcome.bonds);
    }
}

/// Emptied rows whose memory new rows reuse.
#[derive(Debug, Default)]
struct SpareRows(Vec<SparseRow>);

impl SpareRows {
    /// Keeps the rows of `matrix` that hold memory.
    fn keep(&mut self, matrix: Vec<SparseRow>) {
        self.0.extend(matrix.into_iter().filter(|row| row.capacity() > 0));
    }

    /// An empty row with room for `capacity` entries: a kept one if any is left.
    fn take(&mut self, capacity: usize) -> SparseRow {
        match self.0.pop() {
            Some(mut row) => {
                row.clear();
                row.reserve(capacity);
                row
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Splits off the last `count` rows (or all, if fewer), for another thread.
    fn split(&mut self, count: usize) -> SpareRows {
        SpareRows(self.0.split_off(self.0.len().saturating_sub(count)))
    }
}

/// How [`epoch`] walks the weights for consensus. Every layout gives the same outcome, to the
/// bit; they differ only in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Dense when at least a quarter of the validators' possible weights are set.
    Auto,
    /// Column by column over every validator ([`weighted_median_cols_dense`]).
    #[cfg_attr(not(test), allow(dead_code))]
    Dense,
    /// Over the weights set only ([`weighted_median_cols`]).
    #[cfg_attr(not(test), allow(dead_code))]
    Sparse,
}

impl Layout {
    /// Whether to take the dense path with `set` weights on `rows` validators' rows of `n` uids.
    fn dense(self, set: usize, rows: usize, n: usize) -> bool {
        match self {
            Layout::Auto => set.saturating_mul(4) >= rows.saturating_mul(n),
            Layout::Dense => true,
            Layout::Sparse => false,
        }
    }
}

/// [`epoch`], with the consensus computed in the given [`Layout`].
///
/// Each step runs on its own, in passes that each take a whole row or a whole column at a
/// time: a row's entries depend only on that row, and a column's sums are added down the rows
/// in ascending uid whichever pass adds them. A large epoch therefore splits every pass in
/// two halves, of rows or of columns, on two threads ([`join`]); the outcome is the same to the
/// bit as on one thread (`reference::epoch`, kept in the tests, is the plain one-pass-per-step
/// version).
///
/// Once the inputs are checked, the `previous` outcome (if any) is taken apart into
/// `workspace`'s spare rows, and rows are taken from those where there are any ([`Yuma`]), so
/// memory is reused from epoch to epoch; the values written are the same either way. On an
/// error `previous` is left as it was.
fn epoch_with(
    inputs: &Inputs<'_>,
    params: &Params,
    layout: Layout,
    workspace: &mut Workspace,
    previous: &mut Option<Outcome>,
) -> Result<Outcome, YumaError> {
    let given_weights: usize = inputs.weights.iter().map(Vec::len).sum();
    let parallel = given_weights >= PARALLEL_MIN_WEIGHTS && two_cores();
    let (n, bonds_ascending, old_bonds) = validate(inputs, params, parallel)?;
    if let Some(previous) = previous.take() {
        workspace.recycle(previous);
    }

    // Stake: filter by the threshold, normalise.
    let filtered: Vec<u64> = inputs.stakes.iter().map(|&s| if s < params.min_stake { 0 } else { s }).collect();
    let stake = normalized_stake(&filtered);

    // Validator permits and active stake.
    let validator_permits = top_k_nonzero(&filtered, usize::from(params.max_allowed_validators));
    let mut active_stake: Vec<f64> =
        stake.iter().zip(&validator_permits).map(|(&s, &p)| if p { s } else { 0.0 }).collect();
    normalize(&mut active_stake);

    // Only permitted validators' rows of the weight matrices can be non-zero, and only their
    // non-zero entries count: the steps below run on those, rows in ascending uid and each
    // row's entries in ascending uid. Every sum therefore adds the same non-zero terms in the
    // same order as it would over the whole square matrix, and gives the same result.
    let validators: Vec<usize> = (0..n).filter(|&i| validator_permits[i]).collect();
    let validator_stake: Vec<f64> = validators.iter().map(|&i| active_stake[i]).collect();

    // Weights: unpermitted rows are zero; mask the diagonal, normalise rows.
    let given = |i: usize| inputs.weights.get(i).map_or(&[][..], Vec::as_slice);
    let mid = balanced_split(validators.iter().map(|&i| given(i).len()));
    let normalise = |uids: &[usize], mut spare: SpareRows| -> Vec<SparseRow> {
        uids.iter()
            .map(|&i| {
                let mut row = spare.take(given(i).len());
                sorted_nonzero(&mut row, given(i).iter().filter(|&&(j, _)| j != i));
                normalize_row(&mut row);
                row.retain(|&(_, w)| w != 0.0); // Entries too small to survive normalisation.
                row
            })
            .collect()
    };
    let (left, right) = validators.split_at(mid);
    let right_spare = workspace.weights.split(right.len());
    let left_spare = std::mem::take(&mut workspace.weights);
    let weights = concat(join(parallel, || normalise(left, left_spare), || normalise(right, right_spare)));

    // Consensus, and the weights' column sums that depend on it: ranks before and after
    // clipping, and the bonds delta (the weights for bonds times stake). The dense pass adds
    // them up as it goes down each column; otherwise they take a pass of their own.
    let set: usize = weights.iter().map(Vec::len).sum();
    let kappa = params.kappa_fraction();
    let penalty = params.bonds_penalty_fraction();
    let (consensus, totals) = if layout.dense(set, weights.len(), n) {
        weighted_median_cols_dense(&validator_stake, &weights, n, kappa, penalty, parallel)
    } else {
        let consensus = weighted_median_cols(&validator_stake, &weights, n, kappa, &mut workspace.points);
        let cut = column_split(weights.iter().map(Vec::as_slice), n);
        let sums = |columns| weight_totals(&weights, &validator_stake, &consensus, penalty, columns);
        let (left, right) = join(parallel, || sums(0..cut), || sums(cut..n));
        let totals = left.append(right);
        (consensus, totals)
    };

    // Old bonds: the rows given, each sorted by uid.
    let holders: Vec<(usize, Cow<'_, [_]>)> = (0..inputs.bonds.len())
        .filter(|&i| !inputs.bonds[i].is_empty())
        .map(|i| {
            let row = &inputs.bonds[i];
            if bonds_ascending || row.windows(2).all(|p| p[0].0 < p[1].0) {
                (i, Cow::Borrowed(row.as_slice()))
            } else {
                let mut sorted = row.clone();
                sorted.sort_unstable_by_key(|&(j, _)| j); // Uids are distinct.
                (i, Cow::Owned(sorted))
            }
        })
        .collect();

    let ranks = totals.ranks;
    let trust: Vec<f64> =
        ranks.iter().zip(&totals.preranks).map(|(&r, &p)| if p > 0.0 { r / p } else { 0.0 }).collect();
    let mut incentive = ranks.clone();
    normalize(&mut incentive);

    // The bonds delta and the old bonds, each column normalised, entry by entry where used.
    let consensus_ref = &consensus;
    let delta_scale = ColumnScale::from_sums(totals.delta, || {
        weights
            .iter()
            .zip(&validator_stake)
            .flat_map(|(row, &s)| row.iter().map(move |&(j, w)| (j, delta_entry(w, consensus_ref[j], penalty, s))))
    });
    let old_scale = ColumnScale::from_sums(old_bonds, || inputs.bonds.iter().flatten().copied());

    // Row by row: the clipped weights and validator trust of each validator, and the moving
    // average on the rows of validators and of old bond holders (a row or an entry missing
    // from one side counts as zero there).
    let alpha = params.bonds_alpha();
    let mut bond_rows = Vec::with_capacity(validators.len() + holders.len());
    let (mut v, mut h) = (0, 0);
    loop {
        let (new_uid, old_uid) = (validators.get(v).copied(), holders.get(h).map(|&(i, _)| i));
        let Some(uid) = new_uid.into_iter().chain(old_uid).min() else { break };
        let validator = (new_uid == Some(uid)).then(|| {
            v += 1;
            v - 1
        });
        let holder = (old_uid == Some(uid)).then(|| {
            h += 1;
            h - 1
        });
        bond_rows.push(BondRow { uid, validator, holder });
    }
    let rows_of = |rows: &[BondRow], mut spare_bonds: SpareRows| -> RowsOut {
        let mut out = RowsOut::default();
        for &BondRow { uid, validator, holder } in rows {
            let (new, s): (&[(usize, f64)], f64) = match validator {
                Some(v) => {
                    // The sum of the clipped row, which the outcome derives rather than stores.
                    out.validator_trust.push(clip(&weights[v], &consensus).map(|(_, c)| c).sum());
                    (&weights[v], validator_stake[v])
                }
                None => (&[], 0.0),
            };
            let old: &[(usize, f64)] = holder.map_or(&[], |h| &holders[h].1);
            let mut bonds = spare_bonds.take(union_len(new, old));
            moving_average(
                &mut bonds,
                new,
                |j, w| delta_scale.apply(j, delta_entry(w, consensus[j], penalty, s)),
                old,
                |j, b| old_scale.apply(j, b),
                alpha,
            );
            out.bonds.push((uid, bonds));
        }
        out
    };
    let mid = balanced_split(
        bond_rows
            .iter()
            .map(|row| row.validator.map_or(0, |v| weights[v].len()) + row.holder.map_or(0, |h| holders[h].1.len())),
    );
    let (left, right) = bond_rows.split_at(mid);
    let rows = {
        let right_bonds = workspace.bonds.split(right.len());
        let left_bonds = std::mem::take(&mut workspace.bonds);
        let (left, right) = join(parallel, || rows_of(left, left_bonds), || rows_of(right, right_bonds));
        left.append(right)
    };
    let mut validator_trust = vec![0.0; n];
    for (&i, &t) in validators.iter().zip(&rows.validator_trust) {
        validator_trust[i] = t;
    }

    // The new bonds, each column normalised again, and the dividends they earn.
    let mut bonds = rows.bonds;
    let cut = column_split(bonds.iter().map(|(_, row)| &row[..]), n);
    let bond_sums = |columns| column_sums(bonds.iter().map(|(_, row)| &row[..]), columns);
    let (mut sums, right) = join(parallel, || bond_sums(0..cut), || bond_sums(cut..n));
    sums.extend(right);
    let bonds_scale = ColumnScale::from_sums(sums, || bonds.iter().flat_map(|(_, row)| row.iter().copied()));
    let scale_rows = |rows: &mut [(usize, SparseRow)]| -> Vec<f64> {
        rows.iter_mut()
            .map(|(_, row)| {
                row.iter_mut().for_each(|(j, b)| *b = bonds_scale.apply(*j, *b));
                let dividend = row.iter().map(|&(j, b)| b * incentive[j]).sum();
                row.retain(|&(_, b)| b != 0.0);
                dividend
            })
            .collect()
    };
    let mid = balanced_split(bonds.iter().map(|(_, row)| row.len()));
    let (left, right) = bonds.split_at_mut(mid);
    let row_dividends = concat(join(parallel, || scale_rows(left), || scale_rows(right)));
    let mut dividends = vec![0.0; n];
    for (&(i, _), d) in bonds.iter().zip(row_dividends) {
        dividends[i] = d;
    }
    normalize(&mut dividends);

    let emissions = split_emission(inputs.emission, params, &incentive, &dividends, &active_stake, &stake);

    // Every other row is zero: left empty. Bonds of uids that lost their permit are cleared.
    let bonds = place(bonds.into_iter().filter(|&(i, _)| validator_permits[i]), n);
    Ok(Outcome {
        stake,
        validator_permits,
        active_stake,
        weights: place(validators.iter().copied().zip(weights), n),
        consensus,
        ranks,
        trust,
        incentive,
        validator_trust,
        dividends,
        bonds,
        emissions,
    })
}
/// A row of the bonds moving average: the uid, its index among the validators if it has a
/// permit, and among the old bond holders if it held bonds.
#[derive(Debug, Clone, Copy)]
struct BondRow {
    uid: usize,
    validator: Option<usize>,
    holder: Option<usize>,
}

/// What the row pass of [`epoch_with`] computes for a run of [`BondRow`]s.
#[derive(Debug, Default)]
struct RowsOut {
    /// Each validator's trust (the sum of its clipped weights), in the order of its rows.
    validator_trust: Vec<f64>,
    /// Each row's uid and moving average, not yet normalised.
    bonds: Vec<(usize, SparseRow)>,
}

impl RowsOut {
    /// These rows, then `next`'s.
    fn append(mut self, next: RowsOut) -> RowsOut {
        self.validator_trust.extend(next.validator_trust);
        self.bonds.extend(next.bonds);
        self
    }
}

/// The weights' column sums over a range of columns, indexed from its first.
#[derive(Debug)]
struct WeightTotals {
    /// `Σ_i weights[i][j] · active_stake[i]`.
    preranks: Vec<f64>,
    /// `Σ_i clipped_weights[i][j] · active_stake[i]`: the ranks.
    ranks: Vec<f64>,
    /// `Σ_i delta_entry(weights[i][j], …)`: the bonds delta's column sums ([`delta_entry`]).
    delta: Vec<f64>,
}

impl WeightTotals {
    fn zeros(columns: usize) -> WeightTotals {
        WeightTotals { preranks: vec![0.0; columns], ranks: vec![0.0; columns], delta: vec![0.0; columns] }
    }

    /// These columns, then `next`'s.
    fn append(mut self, next: WeightTotals) -> WeightTotals {
        self.preranks.extend(next.preranks);
        self.ranks.extend(next.ranks);
        self.delta.extend(next.delta);
        self
    }
}

/// [`WeightTotals`] over `columns`, down the validators' weight `rows` (each in ascending uid,
/// `stake[k]` that of `rows[k]`) in order.
fn weight_totals(
    rows: &[SparseRow],
    stake: &[f64],
    consensus: &[f64],
    penalty: f64,
    columns: Range<usize>,
) -> WeightTotals {
    let mut totals = WeightTotals::zeros(columns.len());
    for (row, &s) in rows.iter().zip(stake) {
        for &(j, w) in in_columns(row, &columns) {
            let c = j - columns.start;
            totals.preranks[c] += w * s;
            totals.ranks[c] += w.min(consensus[j]) * s;
            totals.delta[c] += delta_entry(w, consensus[j], penalty, s);
        }
    }
    totals
}

/// The sums over `columns` (indexed from its first) of the sparse `rows`, each in ascending
/// uid, added down the rows in order.
fn column_sums<'a>(rows: impl Iterator<Item = &'a [(usize, f64)]>, columns: Range<usize>) -> Vec<f64> {
    let mut sums = vec![0.0; columns.len()];
    for row in rows {
        for &(j, v) in in_columns(row, &columns) {
            sums[j - columns.start] += v;
        }
    }
    sums
}

/// Whether the machine has a second core to split an epoch's passes over (asked once).
fn two_cores() -> bool {
    static TWO_CORES: OnceLock<bool> = OnceLock::new();
    *TWO_CORES.get_or_init(|| std::thread::available_parallelism().is_ok_and(|cores| cores.get() >= 2))
}

/// Runs `left` and `right`, on two threads if `parallel` (`right` on a new one), else in turn.
/// Each half computes its own part of the outcome, so the result is the same either way.
fn join<L: Send, R: Send>(parallel: bool, left: impl FnOnce() -> L + Send, right: impl FnOnce() -> R + Send) -> (L, R) {
    if !parallel {
        return (left(), right());
    }
    std::thread::scope(|scope| {
        let right = scope.spawn(right);
        let left = left();
        // A panic in `right` is re-raised here, as it would have been on this thread.
        (left, right.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// The two halves' items, left then right.
fn concat<T>((mut left, right): (Vec<T>, Vec<T>)) -> Vec<T> {
    left.extend(right);
    left
}

/// Where to split a run of rows, whose lengths `lens` gives, into two halves of about the same
/// number of entries.
fn balanced_split(lens: impl Iterator<Item = usize> + Clone) -> usize {
    let half = lens.clone().sum::<usize>() / 2;
    let mut seen = 0;
    lens.take_while(|&len| {
        seen += len;
        seen <= half
    })
    .count()
}

/// A column that splits the entries of `rows` (each in ascending uid) into two halves of about
/// the same size: the middle entry's column in the longest row, or `n / 2` if all are empty.
fn column_split<'a>(rows: impl IntoIterator<Item = &'a [(usize, f64)]>, n: usize) -> usize {
    rows.into_iter().max_by_key(|row| row.len()).and_then(|row| row.get(row.len() / 2)).map_or(n / 2, |&(j, _)| j)
}

/// How many uids appear in either of two sparse rows in ascending uid: the most entries their
/// [`moving_average`] can have (reserved at once, so the row is never copied as it grows).
fn union_len(a: &[(usize, f64)], b: &[(usize, f64)]) -> usize {
    let (mut i, mut k, mut both) = (0, 0, 0);
    while let (Some(&(x, _)), Some(&(y, _))) = (a.get(i), b.get(k)) {
        both += usize::from(x == y);
        i += usize::from(x <= y);
        k += usize::from(y <= x);
    }
    a.len() + b.len() - both
}

/// The entries of `row` (in ascending uid) in `columns`.
fn in_columns<'a>(row: &'a [(usize, f64)], columns: &Range<usize>) -> &'a [(usize, f64)] {
    let start = row.partition_point(|&(j, _)| j < columns.start);
    let end = start + row[start..].partition_point(|&(j, _)| j < columns.end);
    &row[start..end]
}

/// Checks shapes, entries and parameters (the two matrices on two threads if `parallel`);
/// returns the number of uids, whether every row of bonds is in ascending uid, and the bonds'
/// column sums (added down the rows in order while each row is still in cache from its check,
/// which saves a pass over the bonds from memory).
fn validate(inputs: &Inputs<'_>, params: &Params, parallel: bool) -> Result<(usize, bool, Vec<f64>), YumaError> {
    let n = inputs.stakes.len();
    if n == 0 {
        return Err(YumaError::Empty);
    }
    let mut bond_sums = vec![0.0; n];
    let (weights, bonds) = join(
        parallel,
        || check_matrix("weights", inputs.weights, n, None),
        || check_matrix("bonds", inputs.bonds, n, Some(&mut bond_sums)),
    );
    weights?;
    let bonds_ascending = bonds?;
    if params.bonds_moving_average > PER_MILLION {
        return Err(YumaError::ParamOutOfRange { name: "bonds_moving_average", value: params.bonds_moving_average });
    }
    if u64::from(params.miner_share) > PER_MILLION {
        return Err(YumaError::ParamOutOfRange { name: "miner_share", value: u64::from(params.miner_share) });
    }
    Ok((n, bonds_ascending, bond_sums))
}

/// Checks a matrix: one row per uid or none, each naming existing uids at most once, with
/// finite non-negative entries; returns whether every row is in strictly ascending uid. Such
/// rows (the usual case) are checked in one pass without a per-uid table; the first error is
/// found by [`check_matrix_entries`]. With `sums`, also adds each column's entries into it,
/// down the rows in order (as [`column_sums`] does); it is left unspecified on an error.
fn check_matrix(
    matrix: &'static str,
    rows: &[SparseRow],
    uids: usize,
    mut sums: Option<&mut Vec<f64>>,
) -> Result<bool, YumaError> {
    // Only rows whose uids are checked to be below `uids` are added.
    let add = |sums: &mut Option<&mut Vec<f64>>, row: &SparseRow| {
        if let Some(sums) = sums.as_deref_mut() {
            row.iter().for_each(|&(j, v)| sums[j] += v);
        }
    };
    let plain = |row: &SparseRow| {
        let (mut valid, mut next) = (true, 0);
        for &(uid, value) in row {
            valid &= uid >= next && uid < uids && value >= 0.0 && value.is_finite();
            next = uid.saturating_add(1);
        }
        valid
    };
    if rows.is_empty()
        || (rows.len() == uids
            && rows.iter().all(|row| {
                let valid = plain(row);
                if valid {
                    add(&mut sums, row);
                }
                valid
            }))
    {
        return Ok(true);
    }
    check_matrix_entries(matrix, rows, uids)?;
    // Valid, but some row is not in ascending uid: sum again from the start.
    if let Some(sums) = sums.as_deref_mut() {
        sums.fill(0.0);
    }
    rows.iter().for_each(|row| add(&mut sums, row));
    Ok(rows.iter().all(|row| row.windows(2).all(|p| p[0].0 < p[1].0)))
}

/// [`check_matrix`] entry by entry, for any order of uids: the first error in row order.
fn check_matrix_entries(matrix: &'static str, rows: &[SparseRow], uids: usize) -> Result<(), YumaError> {
    if !rows.is_empty() && rows.len() != uids {
        return Err(YumaError::RowCount { matrix, rows: rows.len(), uids });
    }
    // `seen[j] == row + 1` once `row` has an entry for uid `j` (needed only for rows whose
    // uids are not strictly ascending).
    let mut seen = Vec::new();
    for (row, entries) in rows.iter().enumerate() {
        let ascending = entries.windows(2).all(|p| p[0].0 < p[1].0);
        if !ascending && seen.is_empty() {
            seen = vec![0usize; uids];
        }
        for &(uid, value) in entries {
            if uid >= uids {
                return Err(YumaError::UnknownUid { matrix, row, uid, uids });
            }
            if !value.is_finite() || value < 0.0 {
                return Err(YumaError::InvalidEntry { matrix, row, col: uid, value });
            }
            if !ascending {
                if seen[uid] == row + 1 {
                    return Err(YumaError::DuplicateEntry { matrix, row, uid });
                }
                seen[uid] = row + 1;
            }
        }
    }
    Ok(())
}

/// Replaces `row` with the non-zero `entries` (zeros, `-0.0` included, dropped) in ascending uid.
fn sorted_nonzero<'a>(row: &mut SparseRow, entries: impl Iterator<Item = &'a (usize, f64)>) {
    row.clear();
    row.extend(entries.copied().filter(|&(_, v)| v != 0.0));
    if !row.windows(2).all(|p| p[0].0 < p[1].0) {
        row.sort_unstable_by_key(|&(j, _)| j); // Uids are distinct: no ties to keep in order.
    }
}

/// An `n`-row matrix from the rows of some uids, the other rows empty.
fn place(rows: impl Iterator<Item = (usize, SparseRow)>, n: usize) -> Vec<SparseRow> {
    let mut matrix = vec![Vec::new(); n];
    for (i, row) in rows {
        matrix[i] = row;
    }
    matrix
}

/// Stakes as fractions of their total (all zero if the total is zero).
fn normalized_stake(stakes: &[u64]) -> Vec<f64> {
    let total: u128 = stakes.iter().map(|&s| u128::from(s)).sum();
    if total == 0 {
        return vec![0.0; stakes.len()];
    }
    let total = total as f64;
    stakes.iter().map(|&s| s as f64 / total).collect()
}

/// Scales non-negative finite values to sum to 1; leaves an all-zero vector alone.
fn normalize(values: &mut [f64]) {
    let mut sum: f64 = values.iter().sum();
    if !sum.is_finite() {
        // Huge entries overflowed the sum: scale by the largest first.
        let max = values.iter().copied().fold(0.0, f64::max);
        values.iter_mut().for_each(|v| *v /= max);
        sum = values.iter().sum();
    }
    if sum > 0.0 {
        values.iter_mut().for_each(|v| *v /= sum);
    }
}

/// [`normalize`] on a sparse row's values.
fn normalize_row(row: &mut [(usize, f64)]) {
    let mut sum: f64 = row.iter().map(|&(_, v)| v).sum();
    if !sum.is_finite() {
        let max = row.iter().map(|&(_, v)| v).fold(0.0, f64::max);
        row.iter_mut().for_each(|(_, v)| *v /= max);
        sum = row.iter().map(|&(_, v)| v).sum();
    }
    if sum > 0.0 {
        row.iter_mut().for_each(|(_, v)| *v /= sum);
    }
}

/// [`normalize`] for each column of a matrix, without storing it: entry `v` of column `j`
/// becomes [`apply`](Self::apply)`(j, v)`.
struct ColumnScale {
    /// Per column, 1, or its largest entry if its sum overflowed; empty if none did.
    pre: Vec<f64>,
    /// Per column, its sum (after `pre`), or 1 if that is not positive.
    post: Vec<f64>,
}

impl ColumnScale {
    /// The scales of the columns of a matrix from their `sums`, each summed down the rows in
    /// ascending uid as [`normalize`] sums it, and its entries, `(column, value)`, which
    /// `entries` yields in the same row order (in any order within a row). `entries` is called
    /// only if some column's sum overflowed, twice.
    fn from_sums<I: Iterator<Item = (usize, f64)>>(sums: Vec<f64>, entries: impl Fn() -> I) -> ColumnScale {
        let n = sums.len();
        let mut post = sums;
        let mut pre = Vec::new();
        if post.iter().any(|sum| !sum.is_finite()) {
            // Rare: huge entries. As `normalize` does: divide by the largest, sum again.
            let overflowed: Vec<bool> = post.iter().map(|sum| !sum.is_finite()).collect();
            pre = vec![1.0; n];
            let mut max = vec![0.0f64; n];
            for (j, v) in entries().filter(|&(j, _)| overflowed[j]) {
                max[j] = max[j].max(v);
            }
            for j in (0..n).filter(|&j| overflowed[j]) {
                pre[j] = max[j];
                post[j] = 0.0;
            }
            for (j, v) in entries().filter(|&(j, _)| overflowed[j]) {
                post[j] += v / pre[j];
            }
        }
        for sum in &mut post {
            if *sum <= 0.0 {
                *sum = 1.0; // An all-zero column stays as it is (x / 1 is x).
            }
        }
        ColumnScale { pre, post }
    }

    /// Entry `v` of column `j`, normalised.
    fn apply(&self, j: usize, v: f64) -> f64 {
        match self.pre.get(j) {
            Some(pre) => v / pre / self.post[j],
            None => v / self.post[j],
        }
    }
}

/// `true` for the `k` largest non-zero stakes; ties go to the higher uid (subtensor sorts uids
/// by stake, stably, and takes permits from the front).
fn top_k_nonzero(stakes: &[u64], k: usize) -> Vec<bool> {
    let n = stakes.len();
    let mut permits: Vec<bool> = stakes.iter().map(|&s| s > 0).collect();
    if n < k {
        return permits;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| stakes[i]);
    for &i in order.iter().take(n - k) {
        permits[i] = false;
    }
    permits
}

/// Per column of `n`, the stake-weighted `kappa` quantile over the rows with positive stake
/// (`stake[k]` is that of `rows[k]`, a sparse row in ascending uid; rows not given are zero):
/// sort their weights ascending and take the first whose cumulative stake exceeds
/// `(1 - kappa)` of the total, i.e. the highest weight `c` such that validators giving `c` or
/// more hold at least `kappa` of the stake. 0 for a column when no validator has stake.
///
/// The weights are non-negative, so a column sorts as its zeros, in row order (the sort is
/// stable), then its positive weights. In a large subnet most columns are mostly zeros: where
/// the zeros' stake exceeds the minority by far more than any rounding of these sums could
/// move either, the answer is 0 without sorting. Every other column goes to [`quantile`],
/// whose answer is the same as sorting the column.
fn weighted_median_cols(
    stake: &[f64],
    rows: &[SparseRow],
    n: usize,
    kappa: f64,
    points: &mut Vec<(u64, usize)>,
) -> Vec<f64> {
    let voters: Vec<usize> = (0..rows.len()).filter(|&k| stake[k] > 0.0).collect();
    let positive = |k: usize| rows[k].iter().filter(|&&(_, w)| w != 0.0);
    // Each column's count of positive weights, and the stake behind them.
    let mut count = vec![0usize; n];
    let mut backing = vec![0.0; n];
    for &k in &voters {
        for &(j, _) in positive(k) {
            count[j] += 1;
            backing[j] += stake[k];
        }
    }
    let voting: f64 = voters.iter().map(|&k| stake[k]).sum();
    let margin = voting * ROUNDING_MARGIN;
    let minority_bound = voting * (1.0 - kappa) + margin;
    let zeros_decide = |j: usize| count[j] == 0 || voting - backing[j] - margin > minority_bound;

    // The other columns: their positive weights with the row giving each, grouped by column,
    // each group in row order.
    let exact: Vec<usize> = (0..n).filter(|&j| !zeros_decide(j)).collect();
    let mut start = vec![usize::MAX; n];
    let mut next = 0;
    for &j in &exact {
        start[j] = next;
        next += count[j];
    }
    // A positive finite weight's bits order as the weight does. `points` is reused from
    // epoch to epoch (every entry is written before it is read).
    points.clear();
    points.resize(next, (0, 0));
    let mut fill = start.clone();
    for &k in &voters {
        for &(j, w) in positive(k) {
            if fill[j] != usize::MAX {
                points[fill[j]] = (w.to_bits(), k);
                fill[j] += 1;
            }
        }
    }

    let mut consensus = vec![0.0; n];
    let mut scratch = Vec::new();
    for &j in &exact {
        let points = &mut points[start[j]..start[j] + count[j]];
        // The zeros' stake, summed in row order.
        let mut zero_stake = 0.0;
        let mut given = points.iter().map(|&(_, k)| k).peekable();
        for &k in &voters {
            if given.next_if_eq(&k).is_none() {
                zero_stake += stake[k];
            }
        }
        consensus[j] = quantile(points, &mut scratch, zero_stake, voting, stake, kappa);
    }
    consensus
}

/// [`weighted_median_cols`] for dense rows (each in ascending uid), a block of columns at a
/// time: the voters' weights on [`BLOCK`] columns are copied, by a cursor walking each row, into
/// one reused column-major buffer small enough to stay in cache, and each column's positive
/// weights are then gathered from it in row order into another reused buffer; nothing is
/// allocated per column. The sums and comparisons are [`weighted_median_cols`]'s own, term for
/// term and in the same order, so the results are identical; it costs `n` times the number of
/// voters rather than the number of weights, which is cheaper only when most weights are set.
/// Columns are independent, so a large matrix is split in two halves of columns ([`column_split`])
/// computed on two threads when `parallel`.
fn weighted_median_cols_dense(
    stake: &[f64],
    rows: &[SparseRow],
    n: usize,
    kappa: f64,
    penalty: f64,
    parallel: bool,
) -> (Vec<f64>, WeightTotals) {
    let voters: Vec<(usize, &[(usize, f64)])> =
        (0..rows.len()).filter(|&k| stake[k] > 0.0).map(|k| (k, rows[k].as_slice())).collect();
    let mut consensus = vec![0.0; n];
    let cut = column_split(rows.iter().map(Vec::as_slice), n);
    let (left, right) = consensus.split_at_mut(cut);
    let (left, right) = join(
        parallel,
        || consensus_columns(stake, &voters, kappa, penalty, 0, left),
        || consensus_columns(stake, &voters, kappa, penalty, cut, right),
    );
    (consensus, left.append(right))
}

/// [`weighted_median_cols_dense`] for the columns from `first` on, one per entry of `out`; and
/// their [`WeightTotals`], each added down its column in row order once its consensus is known
/// (the rows without stake, left out, would only add zeros), as [`weight_totals`] adds them.
fn consensus_columns(
    stake: &[f64],
    voters: &[(usize, &[(usize, f64)])],
    kappa: f64,
    penalty: f64,
    first: usize,
    out: &mut [f64],
) -> WeightTotals {
    /// Columns per block: `BLOCK` times the voters' `f64`s (128 KiB for 256 voters).
    const BLOCK: usize = 64;
    let m = voters.len();
    // Points name voters by their index `v` among the voters, in the same order as their
    // rows, so ties sort as they would by row.
    let voter_stake: Vec<f64> = voters.iter().map(|&(k, _)| stake[k]).collect();
    let voting: f64 = voter_stake.iter().sum();
    let mut cursors: Vec<usize> = voters.iter().map(|&(_, row)| row.partition_point(|&(col, _)| col < first)).collect();
    let mut block = vec![0.0f64; BLOCK * m];
    let mut points: Vec<(u64, usize)> = Vec::with_capacity(m);
    let mut scratch = Vec::with_capacity(m);
    let mut totals = WeightTotals::zeros(out.len());
    for (chunk, out) in out.chunks_mut(BLOCK).enumerate() {
        let start = first + chunk * BLOCK;
        let end = start + out.len();
        for (v, (&(_, row), cursor)) in voters.iter().zip(&mut cursors).enumerate() {
            while let Some(&(col, w)) = row.get(*cursor).filter(|&&(col, _)| col < end) {
                block[(col - start) * m + v] = w;
                *cursor += 1;
            }
        }
        for (c, (consensus, column)) in out.iter_mut().zip(block.chunks_exact_mut(m.max(1))).enumerate() {
            points.clear();
            let mut zero_stake = 0.0;
            for (v, (&w, &s)) in column.iter().zip(&voter_stake).enumerate() {
                if w != 0.0 {
                    points.push((w.to_bits(), v));
                } else {
                    zero_stake += s;
                }
            }
            if !points.is_empty() {
                *consensus = quantile(&mut points, &mut scratch, zero_stake, voting, &voter_stake, kappa);
            }
            let column_consensus = *consensus;
            let (mut prerank, mut rank, mut delta) = (0.0, 0.0, 0.0);
            for (w, &s) in column.iter_mut().zip(&voter_stake) {
                let w = std::mem::take(w); // Leaves the block zeroed for the next columns.
                if w != 0.0 {
                    prerank += w * s;
                    rank += w.min(column_consensus) * s;
                    delta += delta_entry(w, column_consensus, penalty, s);
                }
            }
            let at = chunk * BLOCK + c;
            (totals.preranks[at], totals.ranks[at], totals.delta[at]) = (prerank, rank, delta);
        }
    }
    totals
}

/// One column's stake-weighted `kappa` quantile, from its positive weights `(bits, row)` in
/// row order and the stake `zero_stake` of the rows giving it zero.
fn column_quantile(points: &mut [(u64, usize)], zero_stake: f64, stake: &[f64], kappa: f64) -> f64 {
    // Ascending weight, ties in row order: what a stable sort gives.
    points.sort_unstable();
    let total = points.iter().fold(zero_stake, |total, &(_, k)| total + stake[k]);
    let minority = total * (1.0 - kappa);
    // The running total only grows, so it exceeds the minority within the zeros exactly
    // when it does after them.
    if zero_stake > minority {
        0.0
    } else {
        let mut cumulative = zero_stake;
        points
            .iter()
            .find(|&&(_, k)| {
                cumulative += stake[k];
                cumulative > minority
            })
            .or(points.last())
            .map_or(0.0, |&(w, _)| f64::from_bits(w))
    }
}

/// One column's stake-weighted `kappa` quantile, as [`column_quantile`] computes it, with
/// `voting` the stake of every voter (those giving it zero and the others). `scratch` is room
/// for [`select_quantile`], reused from column to column.
fn quantile(
    points: &mut [(u64, usize)],
    scratch: &mut Vec<(u64, usize)>,
    zero_stake: f64,
    voting: f64,
    stake: &[f64],
    kappa: f64,
) -> f64 {
    select_quantile(points, scratch, zero_stake, voting, stake, kappa)
        .unwrap_or_else(|| column_quantile(points, zero_stake, stake, kappa))
}

/// [`column_quantile`] without sorting, or `None` where it cannot be sure to agree.
///
/// The quantile is the lowest weight at which the stake of the weights up to and including it
/// exceeds the minority: a weighted quickselect finds it. Each round sums the stake below and
/// at a pivot weight in one pass, then keeps (in `scratch`) only the points on the side the
/// crossing is on. Its sums add the same stakes as the sorted walk of [`column_quantile`] but
/// in another order, and its minority starts from `voting` rather than the sorted total; all of
/// these are within [`ROUNDING_MARGIN`] of their exact values, so wherever each comparison
/// clears that margin, the sorted walk makes the same one. Where one does not (a sum within
/// rounding of the minority), or a run of bad pivots takes more than `2 log₂ m + 8` rounds, it
/// returns `None` and the caller sorts.
fn select_quantile(
    points: &[(u64, usize)],
    scratch: &mut Vec<(u64, usize)>,
    zero_stake: f64,
    voting: f64,
    stake: &[f64],
    kappa: f64,
) -> Option<f64> {
    let margin = voting * ROUNDING_MARGIN;
    let minority = voting * (1.0 - kappa);
    let (low, high) = (minority - margin, minority + margin);
    if zero_stake > high {
        return Some(0.0);
    }
    if zero_stake >= low {
        return None;
    }
    // Invariant: the crossing is in `scratch`; `below`, the stake of the zeros and of the
    // points that weigh less than all of those in `scratch`, stays under the minority.
    scratch.clear();
    scratch.extend_from_slice(points);
    let mut below = zero_stake;
    let mut rounds = 2 * (usize::BITS - points.len().leading_zeros()) + 8;
    while !scratch.is_empty() && rounds > 0 {
        rounds -= 1;
        let (first, middle, last) = (scratch[0].0, scratch[scratch.len() / 2].0, scratch[scratch.len() - 1].0);
        let pivot = first.max(middle).min(first.min(middle).max(last)); // The median of three.
                                                                        // Which side a point is on is as good as random, so a branch would be mispredicted
                                                                        // half the time: each stake is masked to itself or to +0.0 instead.
        let mask = |keep: bool| 0u64.wrapping_sub(u64::from(keep));
        let (mut less, mut equal) = (0.0, 0.0);
        for &(bits, k) in scratch.iter() {
            let s = stake[k].to_bits();
            less += f64::from_bits(s & mask(bits < pivot));
            equal += f64::from_bits(s & mask(bits == pivot));
        }
        let under = below + less;
        let keep_less = if under > high {
            true // The crossing is below the pivot.
        } else if under >= low {
            return None;
        } else {
            let through = under + equal;
            if through > high {
                return Some(f64::from_bits(pivot));
            }
            if through >= low {
                return None;
            }
            below = through; // The crossing is above the pivot.
            false
        };
        let mut kept = 0;
        for i in 0..scratch.len() {
            let point = scratch[i];
            scratch[kept] = point;
            kept += usize::from(if keep_less { point.0 < pivot } else { point.0 > pivot });
        }
        scratch.truncate(kept);
    }
    None
}

/// An entry of the bonds delta before its column is normalised: the weight for bonds (raw
/// weight `w` and clipped `min(w, consensus)` interpolated by the bonds `penalty`) times the
/// validator's active stake `s`.
fn delta_entry(w: f64, consensus: f64, penalty: f64, s: f64) -> f64 {
    interpolate(w, w.min(consensus), penalty) * s
}

/// `a + ratio · (b - a)`, exactly `a` at 0 and `b` at 1 (as subtensor's `interpolate`).
fn interpolate(a: f64, b: f64, ratio: f64) -> f64 {
    if ratio == 0.0 {
        a
    } else if ratio == 1.0 {
        b
    } else {
        a + ratio * (b - a)
    }
}

/// `alpha · new + (1 - alpha) · old`, entry by entry, over two sparse rows in ascending uid
/// whose values are `new_value(uid, entry)` and `old_value(uid, entry)` (an entry missing from
/// one counts as zero there), into `out`. Zeros are left out.
fn moving_average(
    out: &mut SparseRow,
    new: &[(usize, f64)],
    new_value: impl Fn(usize, f64) -> f64,
    old: &[(usize, f64)],
    old_value: impl Fn(usize, f64) -> f64,
    alpha: f64,
) {
    out.clear();
    let mut push = |j: usize, d: f64, b: f64| {
        let v = alpha * d + (1.0 - alpha) * b;
        if v != 0.0 {
            out.push((j, v));
        }
    };
    let (mut a, mut b) = (0, 0);
    while let (Some(&(j, d)), Some(&(k, o))) = (new.get(a), old.get(b)) {
        if j == k {
            push(j, new_value(j, d), old_value(k, o));
            a += 1;
            b += 1;
        } else if j < k {
            push(j, new_value(j, d), 0.0);
            a += 1;
        } else {
            push(k, 0.0, old_value(k, o));
            b += 1;
        }
    }
    new[a..].iter().for_each(|&(j, d)| push(j, new_value(j, d), 0.0));
    old[b..].iter().for_each(|&(k, o)| push(k, 0.0, old_value(k, o)));
}

/// The owner's cut, then miners by incentive and validators by dividends (or, with no
/// dividends, by active stake, then by stake), in whole tokens.
fn split_emission(
    emission: u64,
    params: &Params,
    incentive: &[f64],
    dividends: &[f64],
    active_stake: &[f64],
    stake: &[f64],
) -> Emissions {
    let n = incentive.len();
    // Both quotients are at most `emission`, so they fit back into u64.
    let owner = (u128::from(emission) * u128::from(params.owner_cut) / u128::from(u16::MAX)) as u64;
    let rest = emission - owner;
    let incentive_paid = incentive.iter().any(|&x| x > 0.0);
    let miner_pool = if incentive_paid {
        (u128::from(rest) * u128::from(params.miner_share) / u128::from(PER_MILLION)) as u64
    } else {
        0
    };
    let validator_pool = rest - miner_pool;

    let mut unallocated = 0;
    let miners = apportion(miner_pool, incentive).unwrap_or_else(|| {
        unallocated += miner_pool;
        vec![0; n]
    });
    let validators = apportion(validator_pool, dividends)
        .or_else(|| apportion(validator_pool, active_stake))
        .or_else(|| apportion(validator_pool, stake))
        .unwrap_or_else(|| {
            unallocated += validator_pool;
            vec![0; n]
        });
    Emissions { owner, miners, validators, unallocated }
}

/// Splits `pool` tokens in proportion to `shares` by largest remainder: each share is rounded
/// to a multiple of 2⁻⁵³ of the total, every uid gets the floor of its exact quota, and the
/// tokens left (fewer than the number of uids) go one each to the largest fractional parts,
/// lower uid first among equals. `None` if every share is zero.
fn apportion(pool: u64, shares: &[f64]) -> Option<Vec<u64>> {
    const SCALE: f64 = 9_007_199_254_740_992.0; // 2^53
    let total: f64 = shares.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    // share / total is in [0, 1], so each part is at most 2^53 and the cast is exact.
    let parts: Vec<u128> = shares.iter().map(|&s| ((s / total) * SCALE).round() as u128).collect();
    let denominator: u128 = parts.iter().sum();
    if denominator == 0 {
        return None;
    }
    let pool = u128::from(pool);
    let mut paid: Vec<u128> = parts.iter().map(|&p| pool * p / denominator).collect();
    let mut left = pool - paid.iter().sum::<u128>();
    // Largest remainder first, lower uid first among equals.
    let mut order: Vec<(std::cmp::Reverse<u128>, usize)> =
        parts.iter().enumerate().map(|(i, &p)| (std::cmp::Reverse(pool * p % denominator), i)).collect();
    order.sort_unstable();
    for &(_, i) in &order {
        if left == 0 {
            break;
        }
        paid[i] += 1;
        left -= 1;
    }
    // Each payout is at most `pool`, itself a u64.
    Some(paid.into_iter().map(|p| p as u64).collect())
}

#[cfg(test)]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_is_exact_and_breaks_ties_to_the_lower_uid() {
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), Some(vec![4, 3, 3]));
        assert_eq!(apportion(7, &[0.0, 0.5, 0.5]), Some(vec![0, 4, 3]));
        assert_eq!(apportion(100, &[0.25, 0.75]), Some(vec![25, 75]));
        assert_eq!(apportion(u64::MAX, &[1.0, 1.0]), Some(vec![u64::MAX / 2 + 1, u64::MAX / 2]));
        assert_eq!(apportion(5, &[0.0, 0.0]), None);
        assert_eq!(apportion(0, &[0.3, 0.7]), Some(vec![0, 0]));
    }

    #[test]
    fn permits_go_to_the_top_k_nonzero_stakes_higher_uid_on_ties() {
        assert_eq!(top_k_nonzero(&[5, 0, 7, 5], 2), [false, false, true, true]);
        assert_eq!(top_k_nonzero(&[5, 0, 7], 5), [true, false, true]);
        assert_eq!(top_k_nonzero(&[5, 0, 7], 3), [true, false, true]);
        assert_eq!(top_k_nonzero(&[5, 6], 0), [false, false]);
    }

    /// [`weighted_median_cols`] with a fresh buffer.
    fn weighted_median_cols_fresh(stake: &[f64], rows: &[SparseRow], n: usize, kappa: f64) -> Vec<f64> {
        weighted_median_cols(stake, rows, n, kappa, &mut Vec::new())
    }

    /// [`epoch_with`] with a fresh workspace.
    fn epoch_in(inputs: &Inputs<'_>, params: &Params, layout: Layout) -> Result<Outcome, YumaError> {
        epoch_with(inputs, params, layout, &mut Workspace::default(), &mut None)
    }

    #[test]
    fn weighted_median_edges() {
        let w = vec![vec![(0, 0.2), (1, 0.9)], vec![(0, 0.8), (1, 0.1)]];
        // Equal stakes, kappa just under one half: half the stake backs the higher weight.
        assert_eq!(weighted_median_cols_fresh(&[0.5, 0.5], &w, 2, 32_767.0 / 65_535.0), [0.8, 0.9]);
        // Kappa just over one half: only the lower weight has enough backing.
        assert_eq!(weighted_median_cols_fresh(&[0.5, 0.5], &w, 2, 32_768.0 / 65_535.0), [0.2, 0.1]);
        // Kappa 0 takes the highest, kappa 1 the lowest weight of any staked validator.
        assert_eq!(weighted_median_cols_fresh(&[0.3, 0.7], &w, 2, 0.0), [0.8, 0.9]);
        assert_eq!(weighted_median_cols_fresh(&[0.3, 0.7], &w, 2, 1.0), [0.2, 0.1]);
        // Unstaked validators do not vote; with no voters consensus is 0.
        assert_eq!(weighted_median_cols_fresh(&[0.0, 1.0], &w, 2, 0.0), [0.8, 0.1]);
        assert_eq!(weighted_median_cols_fresh(&[0.0, 0.0], &w, 2, 0.5), [0.0, 0.0]);
    }

    /// A seeded generator for the layout test (no dependency needed).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn dense_and_sparse_consensus_give_the_same_outcome() {
        // Random subnets from empty to fully dense, with ties (weights on a coarse grid), zero
        // entries, unstaked uids, prior bonds, several kappas; large enough for the two-thread
        // split and for blocks of columns that do not divide the uids evenly.
        for case in 0..120u64 {
            let mut rng = Rng(case);
            let n = if case % 20 == 0 { 600 + rng.below(200) as usize } else { 1 + rng.below(90) as usize };
            let density = rng.below(101) as f64 / 100.0;
            let grid = 1 + rng.below(8);
            let stakes: Vec<u64> = (0..n).map(|_| if rng.below(3) == 0 { 0 } else { rng.below(1_000) }).collect();
            let matrix = |rng: &mut Rng, fill: f64| -> Vec<SparseRow> {
                let mut rows = vec![Vec::new(); n];
                for row in &mut rows {
                    for j in 0..n {
                        if (rng.below(1_000) as f64) < fill * 1_000.0 {
                            row.push((j, rng.below(grid + 1) as f64));
                        }
                    }
                }
                rows
            };
            let weights = matrix(&mut rng, density);
            let bonds = if rng.below(2) == 0 { Vec::new() } else { matrix(&mut rng, 0.5) };
            let params = Params {
                kappa: [0, 32_767, 32_768, 50_000, u16::MAX][rng.below(5) as usize],
                max_allowed_validators: 1 + rng.below(n as u64 + 1) as u16,
                ..Params::default()
            };
            let inputs = Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission: 1_000_000_007 };
            let dense = epoch_in(&inputs, &params, Layout::Dense).unwrap();
            let sparse = epoch_in(&inputs, &params, Layout::Sparse).unwrap();
            assert_eq!(dense, sparse, "case {case}: {n} uids, density {density}");
            assert_eq!(epoch(&inputs, &params).unwrap(), sparse, "case {case}: automatic layout");
            assert_eq!(reference::epoch(&inputs, &params).unwrap(), sparse, "case {case}: reference");
        }
    }

    #[test]
    fn the_epoch_matches_the_one_pass_per_step_reference() {
        // Subnets large enough to run on two threads, dense and sparse, and small ones whose
        // stakes are equal or powers of two so that sums of stakes land exactly on the
        // minority (where consensus must fall back to sorting); bonds in any row order.
        for case in 0..40u64 {
            let mut rng = Rng(1_000 + case);
            let large = case % 4 == 0;
            let n = if large { 700 + rng.below(300) as usize } else { 2 + rng.below(40) as usize };
            let validators = if large { 64 + rng.below(64) as usize } else { n };
            let density = [1.0, 0.9, 0.3, 0.05][rng.below(4) as usize];
            let stakes: Vec<u64> = (0..n)
                .map(|i| match (i < validators, case % 3) {
                    (false, _) => 0,
                    (true, 0) => 1_000,
                    (true, 1) => 1 << rng.below(20),
                    (true, _) => rng.below(1_000_000),
                })
                .collect();
            let grid = [2, 16, 65_535][rng.below(3) as usize];
            let mut weights = vec![Vec::new(); n];
            let mut bonds = vec![Vec::new(); n];
            for i in 0..validators {
                for j in 0..n {
                    if (rng.below(1_000) as f64) < density * 1_000.0 {
                        weights[i].push((j, rng.below(grid + 1) as f64));
                    }
                    if rng.below(2) == 0 {
                        bonds[i].push((j, rng.below(1_000) as f64 / 7.0));
                    }
                }
                if rng.below(4) == 0 {
                    bonds[i].reverse();
                }
            }
            let params = Params {
                kappa: [0, 32_767, 32_768, 49_151, u16::MAX][rng.below(5) as usize],
                bonds_penalty: [0, 30_000, u16::MAX][rng.below(3) as usize],
                max_allowed_validators: 1 + rng.below(n as u64) as u16,
                ..Params::default()
            };
            let inputs = Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission: 999_999_937 };
            let expected = reference::epoch(&inputs, &params).unwrap();
            for layout in [Layout::Auto, Layout::Dense, Layout::Sparse] {
                assert_eq!(epoch_in(&inputs, &params, layout).unwrap(), expected, "case {case}, {layout:?}: {n} uids");
            }
        }
    }

    #[test]
    fn a_reused_workspace_gives_the_outcome_of_a_fresh_epoch() {
        // One workspace runs epoch after epoch while the subnet grows and shrinks, its weights
        // go from sparse to dense (and past the two-thread threshold) and back, and each
        // epoch's bonds go into the next; every outcome must be that of a fresh run, to the
        // bit. A refused epoch in the middle must leave the last outcome in place.
        let mut rng = Rng(77);
        let mut yumas = [Yuma::new(), Yuma::new(), Yuma::new()];
        let layouts = [Layout::Auto, Layout::Dense, Layout::Sparse];
        let mut bonds: Vec<SparseRow> = Vec::new();
        let sizes = [40, 40, 700, 700, 90, 650, 650, 650, 3, 1];
        for (step, &n) in sizes.iter().enumerate() {
            // Steps 2 and 6 set over 2^18 weights: their passes run on two threads.
            let validators = if n > 100 { 480 + rng.below(100) as usize } else { n };
            let density = [1.0, 0.05, 0.9, 0.3][step % 4];
            let stakes: Vec<u64> = (0..n).map(|i| if i < validators { 1 + rng.below(1_000_000) } else { 0 }).collect();
            let mut weights = vec![Vec::new(); n];
            for row in weights.iter_mut().take(validators) {
                for j in 0..n {
                    if (rng.below(1_000) as f64) < density * 1_000.0 {
                        row.push((j, rng.below(65_536) as f64));
                    }
                }
            }
            // The last epoch's bonds fit only a subnet of the same size.
            if bonds.len() != n {
                bonds.clear();
            }
            let params = Params {
                kappa: [32_767, 0, 50_000][step % 3],
                max_allowed_validators: 1 + rng.below(n as u64) as u16,
                ..Params::default()
            };
            let inputs = Inputs { stakes: &stakes, weights: &weights, bonds: &bonds, emission: 1_000_000_007 };
            let fresh = epoch(&inputs, &params).unwrap();
            assert_eq!(fresh, reference::epoch(&inputs, &params).unwrap(), "step {step}: {n} uids");
            for (yuma, &layout) in yumas.iter_mut().zip(&layouts) {
                let reused = yuma.run_with(&inputs, &params, layout).unwrap();
                assert_eq!(*reused, fresh, "step {step}, {layout:?}: {n} uids, density {density}");
            }
            if step == 7 {
                let mut bad = weights.clone();
                bad[0].push((n, 1.0));
                let refused = Inputs { weights: &bad, ..inputs };
                for yuma in &mut yumas {
                    assert!(matches!(yuma.run(&refused, &params), Err(YumaError::UnknownUid { .. })));
                    assert_eq!(yuma.outcome(), Some(&fresh), "step {step}: the refused epoch kept the last outcome");
                }
            }
            bonds = fresh.bonds;
        }
        // An outcome taken out and handed back is reused as well.
        let taken = yumas[0].take_outcome().unwrap();
        assert!(yumas[0].outcome().is_none());
        yumas[0].recycle(taken);
        let stakes = [5, 3, 0];
        let weights = vec![vec![(2, 1.0)], vec![(2, 2.0), (0, 1.0)], vec![]];
        let inputs = Inputs { stakes: &stakes, weights: &weights, bonds: &[], emission: 10 };
        let params = Params::default();
        assert_eq!(*yumas[0].run(&inputs, &params).unwrap(), epoch(&inputs, &params).unwrap());
    }

    #[test]
    fn consensus_by_selection_agrees_with_sorting() {
        // Columns of up to 300 points with equal, power-of-two and random stakes, weights on
        // coarse and fine grids, and kappas where the cumulative stake hits the minority exactly.
        let mut selected_count = 0;
        let mut scratch = Vec::new();
        for case in 0..3_000u64 {
            let mut rng = Rng(50_000 + case);
            let m = 1 + rng.below(300) as usize;
            let stake: Vec<f64> = match case % 3 {
                0 => vec![1.0 / m as f64; m],
                1 => (0..m).map(|_| (1u64 << rng.below(12)) as f64 / 4096.0).collect(),
                _ => (0..m).map(|_| rng.below(1_000) as f64 / 997.0).collect(),
            };
            let grid = [1, 3, 1_000, 1 << 40][rng.below(4) as usize];
            let mut points = Vec::new();
            let mut zero_stake = 0.0;
            for (k, &s) in stake.iter().enumerate() {
                match rng.below(grid + 1) {
                    0 => zero_stake += s,
                    w => points.push(((w as f64 / grid as f64).to_bits(), k)),
                }
            }
            let voting: f64 = stake.iter().sum();
            let kappa = [0.0, 0.25, 0.5, 32_767.0 / 65_535.0, 0.75, 1.0][rng.below(6) as usize];
            let mut sorted = points.clone();
            let expected = column_quantile(&mut sorted, zero_stake, &stake, kappa);
            if let Some(selected) = select_quantile(&points, &mut scratch, zero_stake, voting, &stake, kappa) {
                assert_eq!(selected.to_bits(), expected.to_bits(), "case {case}: {m} points, kappa {kappa}");
                selected_count += 1;
            }
            let quantile = quantile(&mut points, &mut scratch, zero_stake, voting, &stake, kappa);
            assert_eq!(quantile.to_bits(), expected.to_bits(), "case {case}");
        }
        // Most columns are decided without sorting (kappas 0 and 1 never are).
        assert!(selected_count > 1_500, "only {selected_count} of 3000 columns selected");
    }
}
