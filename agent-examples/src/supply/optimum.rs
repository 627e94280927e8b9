//! Assignments of parts to suppliers: their cost and lead time, the exact optimum for
//! small instances, and the cheapest-first greedy plan.
//!
//! An [`Assignment`] records, for every part, which suppliers deliver how many units at
//! what unit price and lead time. It carries the agreed price and lead time itself, so
//! an assignment built from a contract-net negotiation (whose prices may differ from
//! the published offers) is scored the same way as one built from the specs.
//!
//! Costs are in the same integer unit as [`Offer::price_per_unit`]; lead times are
//! simulated hours. A part's lead time is the slowest of its suppliers (they deliver in
//! parallel) and an assignment's lead time is the slowest part.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::bom::{sub_part_delay, unique_suppliers, Bom, Offer, Part, SupplierSpec};

/// Most search nodes [`brute_force_search`] visits (over all parts together) before
/// giving up with [`SearchError::TooLarge`]. A node is one partial split of a part's
/// quantity among its offers.
pub const NODE_LIMIT: u64 = 1_000_000;

/// Most offers one part may have for [`brute_force_search`]; more is
/// [`SearchError::TooLarge`]. Bounds the recursion depth of the enumeration.
pub const MAX_OFFERS_PER_PART: usize = 64;

/// Units of one part bought from one supplier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Supplier name.
    pub supplier: String,
    /// Units bought.
    pub units: u64,
    /// Agreed price per unit.
    pub unit_price: u64,
    /// Hours until delivery, including waiting for sub-parts (see
    /// [`effective_lead_time`](super::bom::effective_lead_time)).
    pub lead_time_hours: u32,
}

/// Who supplies each part: part name → allocations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// Allocations per part name.
    pub parts: BTreeMap<String, Vec<Allocation>>,
}

/// Total cost of `assignment` (units × unit price, summed), or `None` on overflow.
pub fn cost(assignment: &Assignment) -> Option<u64> {
    assignment.parts.values().flatten().try_fold(0u64, |acc, a| acc.checked_add(a.units.checked_mul(a.unit_price)?))
}

/// Lead time of `assignment` in hours: the largest lead time of any allocation with
/// units, 0 if there is none.
pub fn lead_time(assignment: &Assignment) -> u32 {
    assignment.parts.values().flatten().filter(|a| a.units > 0).map(|a| a.lead_time_hours).max().unwrap_or(0)
}

/// What the optimiser minimises. Both objectives are non-decreasing in cost and in
/// lead time, which is what makes [`brute_force_search`]'s combination step exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Objective {
    /// Lowest cost; among equal costs, shortest lead time.
    CostThenLeadTime,
    /// Lowest `cost + cost_per_hour × lead_time`; among equal scores, lowest cost.
    Weighted {
        /// What one hour of lead time is worth, in cost units.
        cost_per_hour: u64,
    },
}

impl Objective {
    /// Sort key of a plan with this cost and lead time: smaller is better. Computed in
    /// `u128`, which cannot overflow.
    pub fn score(&self, cost: u64, lead_time_hours: u32) -> (u128, u128) {
        let (c, l) = (u128::from(cost), u128::from(lead_time_hours));
        match *self {
            Objective::CostThenLeadTime => (c, l),
            Objective::Weighted { cost_per_hour } => (c + u128::from(cost_per_hour) * l, c),
        }
    }
}

/// Why [`brute_force_search`] found no plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchError {
    /// Some part cannot be covered (not enough capacity, no buildable offer, a quantity
    /// sum overflowing, or every covering split costing more than `u64::MAX`).
    Infeasible,
    /// The search would exceed [`NODE_LIMIT`] nodes or a part has more than
    /// [`MAX_OFFERS_PER_PART`] offers.
    TooLarge,
}

impl fmt::Display for SearchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SearchError::Infeasible => write!(f, "no assignment covers the bill of materials"),
            SearchError::TooLarge => write!(f, "instance too large for exhaustive search"),
        }
    }
}

impl std::error::Error for SearchError {}

/// Why [`check`] rejected an assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentError {
    /// A part's allocations do not add up to its quantity.
    Uncovered {
        /// Part name.
        part: String,
        /// Units in the BOM.
        needed: u64,
        /// Units allocated.
        assigned: u64,
    },
    /// An allocation names a part that is not in the BOM.
    UnknownPart(String),
    /// An allocation names a supplier that does not offer the part.
    UnknownOffer {
        /// Part name.
        part: String,
        /// Supplier name.
        supplier: String,
    },
    /// A supplier is allocated more units of a part than its capacity.
    OverCapacity {
        /// Part name.
        part: String,
        /// Supplier name.
        supplier: String,
        /// Units allocated.
        units: u64,
        /// The offer's capacity.
        capacity: u64,
    },
    /// A sum of units overflowed `u64`.
    Overflow,
}

impl fmt::Display for AssignmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignmentError::Uncovered { part, needed, assigned } => {
                write!(f, "part {part}: {assigned} units assigned, {needed} needed")
            }
            AssignmentError::UnknownPart(part) => write!(f, "part {part} is not in the bill of materials"),
            AssignmentError::UnknownOffer { part, supplier } => write!(f, "supplier {supplier} does not offer {part}"),
            AssignmentError::OverCapacity { part, supplier, units, capacity } => {
                write!(f, "supplier {supplier}: {units} units of {part} exceed capacity {capacity}")
            }
            AssignmentError::Overflow => write!(f, "unit count overflow"),
        }
    }
}

impl std::error::Error for AssignmentError {}

/// Checks that `assignment` covers every part of `bom` exactly (duplicate BOM lines
/// merged, see [`Bom::demand`]), names only BOM parts and real offers, and keeps every
/// supplier within its capacity for each part. Prices and lead times are not checked:
/// they may have been negotiated.
pub fn check(assignment: &Assignment, bom: &Bom, suppliers: &[SupplierSpec]) -> Result<(), AssignmentError> {
    let demand = bom.demand().ok_or(AssignmentError::Overflow)?;
    if let Some(extra) = assignment.parts.keys().find(|name| demand.iter().all(|(p, _)| &p.name != *name)) {
        return Err(AssignmentError::UnknownPart(extra.clone()));
    }
    let unique = unique_suppliers(suppliers);
    for (part, needed) in demand {
        let allocations = assignment.parts.get(&part.name).map_or(&[][..], Vec::as_slice);
        let mut per_supplier: HashMap<&str, u64> = HashMap::new();
        let mut assigned = 0u64;
        for a in allocations {
            assigned = assigned.checked_add(a.units).ok_or(AssignmentError::Overflow)?;
            let offer = unique.iter().find(|s| s.name == a.supplier).and_then(|s| s.offer(&part.name));
            let Some(offer) = offer else {
                return Err(AssignmentError::UnknownOffer { part: part.name.clone(), supplier: a.supplier.clone() });
            };
            let units = per_supplier.entry(a.supplier.as_str()).or_insert(0);
            *units = units.checked_add(a.units).ok_or(AssignmentError::Overflow)?;
            if *units > offer.capacity {
                return Err(AssignmentError::OverCapacity {
                    part: part.name.clone(),
                    supplier: a.supplier.clone(),
                    units: *units,
                    capacity: offer.capacity,
                });
            }
        }
        if assigned != needed {
            return Err(AssignmentError::Uncovered { part: part.name.clone(), needed, assigned });
        }
    }
    Ok(())
}

/// One usable offer for a part.
struct Candidate<'a> {
    supplier: &'a str,
    offer: &'a Offer,
    lead: u32,
}

/// Usable offers for `part`, in supplier order: first supplier of each name, first
/// offer for the part, non-zero capacity, buildable (sub-parts available).
fn candidates<'a>(part: &Part, unique: &[&'a SupplierSpec]) -> Vec<Candidate<'a>> {
    let Some(delay) = sub_part_delay(part, unique, 0) else {
        return Vec::new();
    };
    unique
        .iter()
        .filter_map(|s| {
            let offer = s.offer(&part.name).filter(|o| o.capacity > 0)?;
            let lead = offer.lead_time_hours.checked_add(delay)?;
            Some(Candidate { supplier: s.name.as_str(), offer, lead })
        })
        .collect()
}

fn allocations(cands: &[Candidate<'_>], units: &[u64]) -> Vec<Allocation> {
    cands
        .iter()
        .zip(units)
        .filter(|(_, &u)| u > 0)
        .map(|(c, &u)| Allocation {
            supplier: c.supplier.to_string(),
            units: u,
            unit_price: c.offer.price_per_unit,
            lead_time_hours: c.lead,
        })
        .collect()
}

/// One way to split a part's quantity among its candidates.
struct Split {
    units: Vec<u64>,
    cost: u64,
    lead: u32,
}

/// State of one part's enumeration.
struct Enumeration<'c, 'a> {
    cands: &'c [Candidate<'a>],
    /// `suffix_cap[i]` = capacity of candidates `i..` (saturating).
    suffix_cap: Vec<u64>,
    units: Vec<u64>,
    budget: u64,
    /// Pareto frontier over (cost, lead); first found wins ties.
    frontier: Vec<Split>,
}

impl Enumeration<'_, '_> {
    fn visit(&mut self, i: usize, remaining: u64) -> Result<(), SearchError> {
        self.budget = self.budget.checked_sub(1).ok_or(SearchError::TooLarge)?;
        let Some(cand) = self.cands.get(i) else {
            if remaining == 0 {
                self.record();
            }
            return Ok(());
        };
        let rest = self.suffix_cap.get(i + 1).copied().unwrap_or(0);
        let lo = remaining.saturating_sub(rest);
        let hi = cand.offer.capacity.min(remaining);
        if lo > hi {
            return Ok(());
        }
        for u in lo..=hi {
            if let Some(slot) = self.units.get_mut(i) {
                *slot = u;
            }
            self.visit(i + 1, remaining - u)?;
        }
        if let Some(slot) = self.units.get_mut(i) {
            *slot = 0;
        }
        Ok(())
    }

    fn record(&mut self) {
        let cost = self
            .cands
            .iter()
            .zip(&self.units)
            .try_fold(0u64, |acc, (c, &u)| acc.checked_add(u.checked_mul(c.offer.price_per_unit)?));
        let Some(cost) = cost else { return };
        let lead = self.cands.iter().zip(&self.units).filter(|(_, &u)| u > 0).map(|(c, _)| c.lead).max().unwrap_or(0);
        if self.frontier.iter().any(|s| s.cost <= cost && s.lead <= lead) {
            return;
        }
        self.frontier.retain(|s| !(cost <= s.cost && lead <= s.lead));
        self.frontier.push(Split { units: self.units.clone(), cost, lead });
    }
}

/// Best combination found so far: its score, the frontier index chosen per part, cost
/// and lead time.
struct Best {
    score: (u128, u128),
    picks: Vec<usize>,
    total: u64,
    lead: u32,
}

/// The optimal assignment under `objective`, with its cost and lead time; `None` if the
/// instance is infeasible or too large (see [`brute_force_search`] for which).
pub fn brute_force_optimum(
    bom: &Bom,
    suppliers: &[SupplierSpec],
    objective: Objective,
) -> Option<(Assignment, u64, u32)> {
    brute_force_search(bom, suppliers, objective).ok()
}

/// Exhaustive search for the optimal assignment under `objective`.
///
/// For every part, every split of its quantity among its usable offers within
/// capacity is enumerated (at most [`NODE_LIMIT`] nodes in all, and at most
/// [`MAX_OFFERS_PER_PART`] offers per part), keeping the splits that are Pareto-optimal
/// in (cost, lead time). Parts are then combined exactly: for each candidate overall
/// lead time `L`, each part takes its cheapest split with lead time ≤ `L`, and the best
/// of these plans wins. Since both objectives only grow with cost and lead time, the
/// optimum is among them. Ties go to the smaller `L`, then to the split found first
/// (offers in supplier order, fewer units to earlier offers first).
pub fn brute_force_search(
    bom: &Bom,
    suppliers: &[SupplierSpec],
    objective: Objective,
) -> Result<(Assignment, u64, u32), SearchError> {
    let demand = bom.demand().ok_or(SearchError::Infeasible)?;
    let unique = unique_suppliers(suppliers);
    let mut budget = NODE_LIMIT;
    let mut per_part: Vec<(&Part, Vec<Candidate<'_>>, Vec<Split>)> = Vec::new();
    for (part, quantity) in demand {
        let cands = candidates(part, &unique);
        if cands.len() > MAX_OFFERS_PER_PART {
            return Err(SearchError::TooLarge);
        }
        let mut suffix_cap = vec![0u64; cands.len() + 1];
        for i in (0..cands.len()).rev() {
            let here = cands.get(i).map_or(0, |c| c.offer.capacity);
            let next = suffix_cap.get(i + 1).copied().unwrap_or(0);
            if let Some(slot) = suffix_cap.get_mut(i) {
                *slot = here.saturating_add(next);
            }
        }
        if suffix_cap.first().copied().unwrap_or(0) < quantity {
            return Err(SearchError::Infeasible);
        }
        let mut e =
            Enumeration { cands: &cands, suffix_cap, units: vec![0; cands.len()], budget, frontier: Vec::new() };
        e.visit(0, quantity)?;
        budget = e.budget;
        let frontier = e.frontier;
        if frontier.is_empty() {
            return Err(SearchError::Infeasible);
        }
        per_part.push((part, cands, frontier));
    }

    let mut thresholds: Vec<u32> = per_part.iter().flat_map(|(_, _, f)| f.iter().map(|s| s.lead)).collect();
    thresholds.sort_unstable();
    thresholds.dedup();
    if thresholds.is_empty() {
        // Empty BOM: nothing to buy.
        return Ok((Assignment::default(), 0, 0));
    }
    let mut best: Option<Best> = None;
    'thresholds: for limit in thresholds {
        let mut picks = Vec::with_capacity(per_part.len());
        let (mut total, mut lead) = (0u64, 0u32);
        for (_, _, frontier) in &per_part {
            let pick = frontier
                .iter()
                .enumerate()
                .filter(|(_, s)| s.lead <= limit)
                .min_by_key(|(i, s)| (s.cost, s.lead, *i))
                .map(|(i, _)| i);
            let Some(i) = pick else { continue 'thresholds };
            let Some(split) = frontier.get(i) else { continue 'thresholds };
            let Some(t) = total.checked_add(split.cost) else { continue 'thresholds };
            total = t;
            lead = lead.max(split.lead);
            picks.push(i);
        }
        let score = objective.score(total, lead);
        if best.as_ref().is_none_or(|b| score < b.score) {
            best = Some(Best { score, picks, total, lead });
        }
    }
    let Best { picks, total, lead, .. } = best.ok_or(SearchError::Infeasible)?;
    let mut assignment = Assignment::default();
    for ((part, cands, frontier), i) in per_part.iter().zip(picks) {
        let units = frontier.get(i).map_or(&[][..], |s| s.units.as_slice());
        assignment.parts.insert(part.name.clone(), allocations(cands, units));
    }
    Ok((assignment, total, lead))
}

/// Cheapest-first plan: for each part, take its usable offers by ascending unit price
/// (ties: shorter lead time, then supplier order) and buy as much as each can supply
/// until the quantity is covered. `None` if some part cannot be covered.
///
/// This is what a contract-net manufacturer approximates by accepting the cheapest
/// bids. With linear prices it always reaches the minimum cost, so it can only lose to
/// [`brute_force_optimum`] on lead time or under [`Objective::Weighted`].
pub fn greedy(bom: &Bom, suppliers: &[SupplierSpec]) -> Option<Assignment> {
    let demand = bom.demand()?;
    let unique = unique_suppliers(suppliers);
    let mut assignment = Assignment::default();
    for (part, quantity) in demand {
        let mut cands = candidates(part, &unique);
        // Stable sort keeps supplier order among equal (price, lead).
        cands.sort_by_key(|c| (c.offer.price_per_unit, c.lead));
        let mut remaining = quantity;
        let mut units = vec![0u64; cands.len()];
        for (c, slot) in cands.iter().zip(units.iter_mut()) {
            let take = remaining.min(c.offer.capacity);
            *slot = take;
            remaining -= take;
        }
        if remaining > 0 {
            return None;
        }
        assignment.parts.insert(part.name.clone(), allocations(&cands, &units));
    }
    Some(assignment)
}

#[cfg(test)]
mod tests {
    use super::super::bom::generate;
    use super::*;
    use proptest::prelude::*;

    fn offer(part: &str, price_per_unit: u64, capacity: u64, lead_time_hours: u32) -> Offer {
        Offer { part: part.into(), price_per_unit, capacity, lead_time_hours }
    }

    fn supplier(name: &str, offers: Vec<Offer>) -> SupplierSpec {
        SupplierSpec { name: name.into(), tier: 1, offers, failure_probability: 0.0 }
    }

    fn alloc(supplier: &str, units: u64, unit_price: u64, lead_time_hours: u32) -> Allocation {
        Allocation { supplier: supplier.into(), units, unit_price, lead_time_hours }
    }

    /// Hand-worked instance: parts A × 10 and B × 4; three suppliers.
    ///
    /// ```text
    ///        A: price cap lead      B: price cap lead
    /// S1         10    6   24h          30    4   60h
    /// S2         10    4   48h          35    4   12h
    /// S3         12   10    8h          30    4   36h
    /// ```
    ///
    /// Pareto-optimal (cost, lead) splits per part:
    /// * A: (100, 48h) = S1 6 + S2 4 (the only way to pay 100: both cheap offers full);
    ///   (108, 24h) = S1 6 + S3 4; (120, 8h) = S3 10. Everything else is dominated
    ///   (e.g. S1 x + S3 (10−x) costs 120 − 2x at 24h, best at x = 6).
    /// * B: (120, 36h) = S3 4 (any unit from S1 costs the same but takes 60h);
    ///   (140, 12h) = S2 4. Mixes S3 + S2 cost more at 36h.
    ///
    /// Cost first, lead time as tie-break: A must be (100, 48h); B costs at least 120,
    /// and S3 4 keeps the overall lead at max(48, 36) = 48h whereas S1 would give 60h.
    /// Optimum: cost 220, lead 48h.
    ///
    /// Weighted, 2 per hour (score = cost + 2 × max lead):
    /// (100,48)+(120,36) = 220 + 96 = 316; (100,48)+(140,12) = 240 + 96 = 336;
    /// (108,24)+(120,36) = 228 + 72 = 300; (108,24)+(140,12) = 248 + 48 = 296;
    /// (120,8)+(120,36) = 240 + 72 = 312; (120,8)+(140,12) = 260 + 24 = **284**.
    /// Optimum: A from S3, B from S2, cost 260, lead 12h.
    ///
    /// Greedy (cheapest first, ties by lead): A: S1 (10, 24h) 6, S2 (10, 48h) 4;
    /// B: S3 (30, 36h) 4. Cost 220, lead 48h: optimal for cost-then-lead, but scores
    /// 316 > 284 under the weighted objective.
    fn hand_instance() -> (Bom, Vec<SupplierSpec>) {
        let bom = Bom { parts: vec![Part::new("A", 10), Part::new("B", 4)] };
        let suppliers = vec![
            supplier("S1", vec![offer("A", 10, 6, 24), offer("B", 30, 4, 60)]),
            supplier("S2", vec![offer("A", 10, 4, 48), offer("B", 35, 4, 12)]),
            supplier("S3", vec![offer("A", 12, 10, 8), offer("B", 30, 4, 36)]),
        ];
        (bom, suppliers)
    }

    #[test]
    fn hand_worked_cost_then_lead_time() {
        let (bom, suppliers) = hand_instance();
        let (a, c, l) = brute_force_optimum(&bom, &suppliers, Objective::CostThenLeadTime).expect("feasible");
        assert_eq!((c, l), (220, 48));
        assert_eq!(a.parts.get("A"), Some(&vec![alloc("S1", 6, 10, 24), alloc("S2", 4, 10, 48)]));
        assert_eq!(a.parts.get("B"), Some(&vec![alloc("S3", 4, 30, 36)]));
        assert_eq!((cost(&a), lead_time(&a)), (Some(220), 48));
        assert_eq!(check(&a, &bom, &suppliers), Ok(()));
    }

    #[test]
    fn hand_worked_weighted() {
        let (bom, suppliers) = hand_instance();
        let objective = Objective::Weighted { cost_per_hour: 2 };
        let (a, c, l) = brute_force_optimum(&bom, &suppliers, objective).expect("feasible");
        assert_eq!((c, l), (260, 12));
        assert_eq!(objective.score(c, l).0, 284);
        assert_eq!(a.parts.get("A"), Some(&vec![alloc("S3", 10, 12, 8)]));
        assert_eq!(a.parts.get("B"), Some(&vec![alloc("S2", 4, 35, 12)]));
    }

    #[test]
    fn hand_worked_greedy() {
        let (bom, suppliers) = hand_instance();
        let g = greedy(&bom, &suppliers).expect("feasible");
        assert_eq!((cost(&g), lead_time(&g)), (Some(220), 48));
        assert_eq!(Objective::Weighted { cost_per_hour: 2 }.score(220, 48).0, 316);
        assert_eq!(check(&g, &bom, &suppliers), Ok(()));
    }

    #[test]
    fn sub_part_lead_time_counts() {
        // Assembly X needs sub-part Y; Y's fastest supplier takes 10h, so an X supplier
        // quoting 5h really takes 15h.
        let mut x = Part::new("X", 2);
        x.sub_parts = vec![Part::new("Y", 3)];
        let bom = Bom { parts: vec![x] };
        let mut t2 = supplier("T2", vec![offer("Y", 1, 100, 10)]);
        t2.tier = 2;
        let suppliers = vec![supplier("T1", vec![offer("X", 7, 5, 5)]), t2];
        let (a, c, l) = brute_force_optimum(&bom, &suppliers, Objective::CostThenLeadTime).expect("feasible");
        assert_eq!((c, l), (14, 15));
        assert_eq!(greedy(&bom, &suppliers).map(|g| lead_time(&g)), Some(15));
        assert_eq!(check(&a, &bom, &suppliers), Ok(()));
        // Without any tier-2 supplier the assembly cannot be built.
        let only_t1 = &suppliers[..1];
        assert_eq!(brute_force_search(&bom, only_t1, Objective::CostThenLeadTime), Err(SearchError::Infeasible));
        assert_eq!(greedy(&bom, only_t1), None);
    }

    #[test]
    fn infeasible_and_too_large_are_told_apart() {
        let bom = Bom { parts: vec![Part::new("A", 11)] };
        let suppliers = vec![supplier("S", vec![offer("A", 1, 10, 1)])];
        assert_eq!(brute_force_search(&bom, &suppliers, Objective::CostThenLeadTime), Err(SearchError::Infeasible));
        assert_eq!(greedy(&bom, &suppliers), None);

        let bom = Bom { parts: vec![Part::new("A", 1_000_000)] };
        let suppliers: Vec<SupplierSpec> =
            (0..4).map(|i| supplier(&format!("S{i}"), vec![offer("A", 1, u64::MAX, 1)])).collect();
        assert_eq!(brute_force_search(&bom, &suppliers, Objective::CostThenLeadTime), Err(SearchError::TooLarge));
        assert!(greedy(&bom, &suppliers).is_some());

        let many: Vec<SupplierSpec> =
            (0..=MAX_OFFERS_PER_PART).map(|i| supplier(&format!("S{i}"), vec![offer("A", 1, 1, 1)])).collect();
        let bom = Bom { parts: vec![Part::new("A", 1)] };
        assert_eq!(brute_force_search(&bom, &many, Objective::CostThenLeadTime), Err(SearchError::TooLarge));
    }

    #[test]
    fn edge_cases_do_not_panic() {
        let empty = Bom::default();
        assert_eq!(brute_force_optimum(&empty, &[], Objective::CostThenLeadTime), Some((Assignment::default(), 0, 0)));
        let zero = Bom { parts: vec![Part::new("A", 0)] };
        let (a, c, l) = brute_force_optimum(&zero, &[], Objective::CostThenLeadTime).expect("nothing to buy");
        assert_eq!((c, l), (0, 0));
        assert_eq!(check(&a, &zero, &[]), Ok(()));
        // Cost overflow: the only covering split is unaffordable.
        let bom = Bom { parts: vec![Part::new("A", 2)] };
        let suppliers = vec![supplier("S", vec![offer("A", u64::MAX, 2, u32::MAX)])];
        assert_eq!(brute_force_search(&bom, &suppliers, Objective::CostThenLeadTime), Err(SearchError::Infeasible));
        let g = greedy(&bom, &suppliers).expect("covered");
        assert_eq!(cost(&g), None);
        assert_eq!(lead_time(&g), u32::MAX);
        // Duplicate supplier names: only the first counts.
        let dup = vec![supplier("S", vec![offer("A", 5, 1, 1)]), supplier("S", vec![offer("A", 1, 9, 1)])];
        assert_eq!(brute_force_search(&bom, &dup, Objective::CostThenLeadTime), Err(SearchError::Infeasible));
    }

    #[test]
    fn check_rejects_bad_assignments() {
        let (bom, suppliers) = hand_instance();
        let mut good = greedy(&bom, &suppliers).expect("feasible");
        let mut over = good.clone();
        over.parts.insert("B".into(), vec![alloc("S2", 3, 35, 12), alloc("S2", 2, 35, 12)]);
        assert!(matches!(check(&over, &bom, &suppliers), Err(AssignmentError::OverCapacity { .. })));
        let mut short = good.clone();
        short.parts.insert("B".into(), vec![alloc("S2", 3, 35, 12)]);
        assert!(matches!(check(&short, &bom, &suppliers), Err(AssignmentError::Uncovered { .. })));
        let mut stranger = good.clone();
        stranger.parts.insert("B".into(), vec![alloc("S9", 4, 1, 1)]);
        assert!(matches!(check(&stranger, &bom, &suppliers), Err(AssignmentError::UnknownOffer { .. })));
        good.parts.insert("Z".into(), vec![]);
        assert_eq!(check(&good, &bom, &suppliers), Err(AssignmentError::UnknownPart("Z".into())));
        let json = serde_json::to_string(&over).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Assignment>(&json).ok(), Some(over));
    }

    /// Naive reference: every split of every part, every combination, best score.
    fn naive_best_score(bom: &Bom, suppliers: &[SupplierSpec], objective: Objective) -> Option<(u128, u128)> {
        fn splits(qty: u64, caps: &[(u64, u64, u32)]) -> Vec<(u64, u32)> {
            match caps.split_first() {
                None => {
                    if qty == 0 {
                        vec![(0, 0)]
                    } else {
                        vec![]
                    }
                }
                Some((&(cap, price, lead), rest)) => (0..=cap.min(qty))
                    .flat_map(|u| {
                        splits(qty - u, rest)
                            .into_iter()
                            .map(move |(c, l)| (c + u * price, if u > 0 { l.max(lead) } else { l }))
                    })
                    .collect(),
            }
        }
        let unique = unique_suppliers(suppliers);
        let mut combos: Vec<(u64, u32)> = vec![(0, 0)];
        for (part, qty) in bom.demand()? {
            let caps: Vec<(u64, u64, u32)> =
                candidates(part, &unique).iter().map(|c| (c.offer.capacity, c.offer.price_per_unit, c.lead)).collect();
            let options = splits(qty, &caps);
            combos =
                combos.iter().flat_map(|&(c, l)| options.iter().map(move |&(c2, l2)| (c + c2, l.max(l2)))).collect();
        }
        combos.into_iter().map(|(c, l)| objective.score(c, l)).min()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn greedy_never_beats_the_optimum(
            seed in any::<u64>(),
            parts in 1usize..=3,
            per_part in 1usize..=3,
            cost_per_hour in 0u64..20,
        ) {
            let (bom, suppliers) = generate(seed, parts, per_part);
            let g = greedy(&bom, &suppliers).ok_or_else(|| TestCaseError::fail("greedy infeasible"))?;
            prop_assert_eq!(check(&g, &bom, &suppliers), Ok(()));
            let (g_cost, g_lead) = (cost(&g).unwrap_or(u64::MAX), lead_time(&g));
            for objective in [Objective::CostThenLeadTime, Objective::Weighted { cost_per_hour }] {
                let (a, c, l) = brute_force_optimum(&bom, &suppliers, objective)
                    .ok_or_else(|| TestCaseError::fail("no optimum"))?;
                prop_assert_eq!(check(&a, &bom, &suppliers), Ok(()));
                prop_assert_eq!((cost(&a), lead_time(&a)), (Some(c), l));
                prop_assert!(objective.score(g_cost, g_lead) >= objective.score(c, l));
                if objective == Objective::CostThenLeadTime {
                    // Linear prices: cheapest-first reaches the minimum cost.
                    prop_assert_eq!(g_cost, c);
                }
                if parts <= 2 || per_part <= 2 {
                    prop_assert_eq!(Some(objective.score(c, l)), naive_best_score(&bom, &suppliers, objective));
                }
            }
        }

        #[test]
        fn assignments_respect_capacity_on_tight_instances(
            quantity in 0u64..12,
            caps in proptest::collection::vec((0u64..6, 1u64..20, 0u32..50), 0..5),
        ) {
            let bom = Bom { parts: vec![Part::new("P", quantity)] };
            let suppliers: Vec<SupplierSpec> = caps
                .iter()
                .enumerate()
                .map(|(i, &(cap, price, lead))| supplier(&format!("S{i}"), vec![offer("P", price, cap, lead)]))
                .collect();
            let total: u64 = caps.iter().map(|c| c.0).sum();
            let opt = brute_force_optimum(&bom, &suppliers, Objective::CostThenLeadTime);
            let g = greedy(&bom, &suppliers);
            prop_assert_eq!(opt.is_some(), total >= quantity);
            prop_assert_eq!(g.is_some(), total >= quantity);
            for a in opt.map(|(a, ..)| a).into_iter().chain(g) {
                prop_assert_eq!(check(&a, &bom, &suppliers), Ok(()));
                for alloc in a.parts.values().flatten() {
                    let cap = suppliers.iter().find(|s| s.name == alloc.supplier).and_then(|s| s.offer("P")).map_or(0, |o| o.capacity);
                    prop_assert!(alloc.units <= cap);
                }
            }
        }
    }
}
