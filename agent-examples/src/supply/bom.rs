//! Bills of materials, supplier specifications, and random feasible instances.
//!
//! A [`Bom`] lists the top-level parts a manufacturer needs. A part may be an assembly
//! with sub-parts, which the tier-1 supplier of the assembly buys from tier-2 suppliers.
//! Prices are integers per unit (token smallest units), quantities and capacities are
//! units, lead times are simulated hours.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Deepest sub-part nesting [`effective_lead_time`] follows; deeper trees are treated
/// as unbuildable (`None`) rather than risking deep recursion.
pub const MAX_SUBPART_DEPTH: usize = 16;

/// A part and how many units are needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Part name; names are unique within a [`Bom`] (see [`Bom::demand`]).
    pub name: String,
    /// Units needed. For a sub-part: units per unit of its parent.
    pub quantity: u64,
    /// Sub-parts, if this part is an assembly; empty for a plain part.
    #[serde(default)]
    pub sub_parts: Vec<Part>,
}

impl Part {
    /// A plain part (no sub-parts).
    pub fn new(name: impl Into<String>, quantity: u64) -> Self {
        Part { name: name.into(), quantity, sub_parts: Vec::new() }
    }
}

/// A manufacturer's bill of materials: the top-level parts to procure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bom {
    /// Top-level parts.
    pub parts: Vec<Part>,
}

impl Bom {
    /// The demand per distinct part name, in first-appearance order: parts listed more
    /// than once have their quantities summed (and the first listing's sub-parts kept).
    /// `None` if a sum overflows `u64`.
    pub fn demand(&self) -> Option<Vec<(&Part, u64)>> {
        let mut out: Vec<(&Part, u64)> = Vec::new();
        for part in &self.parts {
            match out.iter_mut().find(|(p, _)| p.name == part.name) {
                Some((_, q)) => *q = q.checked_add(part.quantity)?,
                None => out.push((part, part.quantity)),
            }
        }
        Some(out)
    }
}

/// One part a supplier makes, and on what terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Name of the part.
    pub part: String,
    /// Price per unit.
    pub price_per_unit: u64,
    /// Most units of this part the supplier can deliver.
    pub capacity: u64,
    /// Hours from order to delivery for the supplier's own work, not counting waiting
    /// for sub-parts (see [`effective_lead_time`]).
    pub lead_time_hours: u32,
}

/// A supplier: its tier and the parts it makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupplierSpec {
    /// Supplier name; names are unique (where not, the first supplier of a name is used
    /// and later ones are ignored by the optimiser).
    pub name: String,
    /// Tier: 1 supplies the manufacturer, 2 supplies tier 1, and so on. Informational:
    /// the optimiser uses whoever offers a part.
    pub tier: u8,
    /// Parts offered. If a part appears twice, the first offer is used.
    pub offers: Vec<Offer>,
    /// Probability in `[0, 1]` that an order fails to be delivered (values outside are
    /// clamped, non-finite counts as 0). Used by simulations, not by the optimiser.
    pub failure_probability: f64,
}

impl SupplierSpec {
    /// This supplier's offer for `part`, if any (the first one).
    pub fn offer(&self, part: &str) -> Option<&Offer> {
        self.offers.iter().find(|o| o.part == part)
    }

    /// [`failure_probability`](Self::failure_probability) clamped to `[0, 1]`.
    pub fn clamped_failure_probability(&self) -> f64 {
        if self.failure_probability.is_finite() {
            self.failure_probability.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// Draws whether one delivery fails (one draw from `rng`).
    pub fn fails(&self, rng: &mut impl Rng) -> bool {
        rng.gen_bool(self.clamped_failure_probability())
    }
}

/// The first supplier spec of each name, in order (later duplicates are skipped).
pub(crate) fn unique_suppliers(suppliers: &[SupplierSpec]) -> Vec<&SupplierSpec> {
    let mut seen = std::collections::HashSet::new();
    suppliers.iter().filter(|s| seen.insert(s.name.as_str())).collect()
}

/// Hours until `offer_lead_hours` work on `part` can be delivered, counting sub-parts:
/// the supplier's own lead time plus the slowest sub-part, where each sub-part comes
/// from its fastest supplier (recursively, so a tier-2 assembly adds its tier-3 parts).
///
/// `None` if some sub-part has no supplier, the tree is deeper than
/// [`MAX_SUBPART_DEPTH`], or the sum overflows `u32`. Tier-2 capacity and prices are
/// not modelled: they are the tier-1 supplier's business and folded into its price.
pub fn effective_lead_time(part: &Part, offer_lead_hours: u32, suppliers: &[SupplierSpec]) -> Option<u32> {
    let unique = unique_suppliers(suppliers);
    offer_lead_hours.checked_add(sub_part_delay(part, &unique, 0)?)
}

/// Hours an assembler of `part` waits for its slowest sub-part (0 for a plain part).
pub(crate) fn sub_part_delay(part: &Part, suppliers: &[&SupplierSpec], depth: usize) -> Option<u32> {
    if depth > MAX_SUBPART_DEPTH {
        return None;
    }
    let mut slowest = 0u32;
    for sub in &part.sub_parts {
        let own = suppliers.iter().filter_map(|s| s.offer(&sub.name)).map(|o| o.lead_time_hours).min()?;
        let sub_lead = own.checked_add(sub_part_delay(sub, suppliers, depth + 1)?)?;
        slowest = slowest.max(sub_lead);
    }
    Some(slowest)
}

/// Makes a random but feasible instance from `seed`: a BOM of `parts` top-level parts
/// (`part-0`, `part-1`, …; 1–10 units each; about one in three is an assembly of one
/// or two sub-parts) and, for every part and sub-part, `suppliers_per_part` suppliers
/// (at least one) named `t{tier}-{part}-{k}`.
///
/// Tier-1 offers cost 5–50 per unit with lead times of 4–72 hours; tier-2 offers cost
/// 1–10 with 2–48 hours. Capacities are 1..=quantity each, and the last supplier's
/// capacity is raised if needed so every part's total capacity covers its quantity.
/// Failure probabilities are 0–0.2.
pub fn generate(seed: u64, parts: usize, suppliers_per_part: usize) -> (Bom, Vec<SupplierSpec>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let per_part = suppliers_per_part.max(1);
    let mut bom = Bom::default();
    let mut suppliers = Vec::new();
    for i in 0..parts {
        let quantity = rng.gen_range(1..=10u64);
        let mut part = Part::new(format!("part-{i}"), quantity);
        if rng.gen_ratio(1, 3) {
            let subs = rng.gen_range(1..=2usize);
            for j in 0..subs {
                let sub = Part::new(format!("part-{i}.{j}"), rng.gen_range(1..=3u64));
                // A tier-1 supplier of `quantity` assemblies needs quantity * per-unit.
                let needed = quantity.saturating_mul(sub.quantity);
                suppliers.extend(make_suppliers(&mut rng, 2, &sub.name, needed, per_part, (1, 10), (2, 48)));
                part.sub_parts.push(sub);
            }
        }
        suppliers.extend(make_suppliers(&mut rng, 1, &part.name, quantity, per_part, (5, 50), (4, 72)));
        bom.parts.push(part);
    }
    (bom, suppliers)
}

fn make_suppliers(
    rng: &mut StdRng,
    tier: u8,
    part: &str,
    quantity: u64,
    count: usize,
    price: (u64, u64),
    lead: (u32, u32),
) -> Vec<SupplierSpec> {
    let mut out: Vec<SupplierSpec> = (0..count)
        .map(|k| SupplierSpec {
            name: format!("t{tier}-{part}-{k}"),
            tier,
            offers: vec![Offer {
                part: part.to_string(),
                price_per_unit: rng.gen_range(price.0..=price.1),
                capacity: rng.gen_range(1..=quantity.max(1)),
                lead_time_hours: rng.gen_range(lead.0..=lead.1),
            }],
            failure_probability: (rng.gen_range(0.0..=0.2f64) * 100.0).round() / 100.0,
        })
        .collect();
    let total: u64 = out.iter().flat_map(|s| &s.offers).map(|o| o.capacity).fold(0, u64::saturating_add);
    if let Some(offer) = out.last_mut().and_then(|s| s.offers.first_mut()) {
        offer.capacity = offer.capacity.saturating_add(quantity.saturating_sub(total));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lead_time_adds_slowest_sub_part() {
        let mut frame = Part::new("frame", 2);
        frame.sub_parts = vec![Part::new("tube", 3), Part::new("weld", 1)];
        let offer =
            |part: &str, lead| Offer { part: part.into(), price_per_unit: 1, capacity: 10, lead_time_hours: lead };
        let spec =
            |name: &str, tier, offers| SupplierSpec { name: name.into(), tier, offers, failure_probability: 0.0 };
        let suppliers = vec![
            spec("a", 2, vec![offer("tube", 30)]),
            spec("b", 2, vec![offer("tube", 12), offer("weld", 20)]),
            spec("c", 1, vec![offer("frame", 5)]),
        ];
        // tube: fastest 12; weld: 20; slowest sub-part 20; plus own 5.
        assert_eq!(effective_lead_time(&frame, 5, &suppliers), Some(25));
        // No one makes "paint": the assembly cannot be built.
        frame.sub_parts.push(Part::new("paint", 1));
        assert_eq!(effective_lead_time(&frame, 5, &suppliers), None);
        assert_eq!(effective_lead_time(&Part::new("x", 1), u32::MAX, &suppliers), Some(u32::MAX));
    }

    #[test]
    fn deep_trees_are_refused_not_overflowed() {
        let mut part = Part::new("leaf", 1);
        for d in 0..100 {
            part = Part { name: format!("p{d}"), quantity: 1, sub_parts: vec![part] };
        }
        let suppliers: Vec<SupplierSpec> = (0..101)
            .map(|d| SupplierSpec {
                name: format!("s{d}"),
                tier: 1,
                offers: vec![Offer {
                    part: if d == 100 { "leaf".into() } else { format!("p{d}") },
                    price_per_unit: 1,
                    capacity: 1,
                    lead_time_hours: 1,
                }],
                failure_probability: 0.0,
            })
            .collect();
        assert_eq!(effective_lead_time(&part, 1, &suppliers), None);
    }

    #[test]
    fn demand_merges_duplicates() {
        let bom = Bom { parts: vec![Part::new("a", 2), Part::new("b", 1), Part::new("a", 3)] };
        let d: Vec<(String, u64)> =
            bom.demand().unwrap_or_default().into_iter().map(|(p, q)| (p.name.clone(), q)).collect();
        assert_eq!(d, vec![("a".to_string(), 5), ("b".to_string(), 1)]);
        let big = Bom { parts: vec![Part::new("a", u64::MAX), Part::new("a", 1)] };
        assert!(big.demand().is_none());
    }

    #[test]
    fn failure_probability_is_clamped() {
        let mut s = SupplierSpec { name: "s".into(), tier: 1, offers: vec![], failure_probability: f64::NAN };
        assert_eq!(s.clamped_failure_probability(), 0.0);
        s.failure_probability = 7.0;
        let mut rng = StdRng::seed_from_u64(0);
        assert!(s.fails(&mut rng));
        s.failure_probability = -1.0;
        assert!(!s.fails(&mut rng));
    }

    proptest! {
        #[test]
        fn generated_instances_are_feasible_and_reproducible(seed in any::<u64>(), parts in 0usize..6, per in 0usize..4) {
            let (bom, suppliers) = generate(seed, parts, per);
            prop_assert_eq!(&(bom.clone(), suppliers.clone()), &generate(seed, parts, per));
            prop_assert_eq!(bom.parts.len(), parts);
            for part in &bom.parts {
                let offers: Vec<&Offer> = suppliers.iter().filter_map(|s| s.offer(&part.name)).collect();
                prop_assert_eq!(offers.len(), per.max(1));
                let total: u64 = offers.iter().map(|o| o.capacity).sum();
                prop_assert!(total >= part.quantity);
                for o in offers {
                    prop_assert!(effective_lead_time(part, o.lead_time_hours, &suppliers).is_some());
                }
            }
            let json = serde_json::to_string(&bom).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Bom = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, bom);
        }
    }
}
