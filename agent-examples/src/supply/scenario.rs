//! The supply chain's scenario: the manufacturer's bill of materials and funds, the
//! suppliers of each tier, and the market's timing. Loaded from JSON
//! (`agent-examples/scenarios/supply.json` is the built-in one; `docs/markets.md` gives the
//! format) or generated from a seed.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use crate::market::ScenarioError;

use super::bom::{Bom, Offer, Part, SupplierSpec};

/// The built-in market, as shipped in `agent-examples/scenarios/supply.json`.
pub const BUILT_IN: &str = include_str!("../../scenarios/supply.json");

/// A supply chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the manufacturer needs.
    pub bom: Bom,
    /// What the manufacturer's wallet holds at the start.
    pub manufacturer_funds: u64,
    /// The suppliers (tier 1 supply the manufacturer; tier 2 supply tier 1's assemblies).
    pub suppliers: Vec<SupplierSpec>,
    /// What each supplier's wallet holds at the start (to buy sub-parts).
    #[serde(default)]
    pub supplier_funds: u64,
    /// The market's timing.
    #[serde(default)]
    pub terms: Terms,
}

/// The market's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// How long a buyer waits for quotes, in ms.
    pub call_ms: u64,
    /// Rounds a buyer runs for one part before it gives up on the rest.
    pub rounds: u32,
    /// Hours a supplier may take beyond its quoted lead time before the order counts as
    /// failed.
    pub grace_hours: u32,
    /// How long an hour of market time lasts, in ms: an hour on the simulated clock, less
    /// across processes in real time (`--distributed` makes it 100 ms).
    #[serde(default = "real_hour_ms")]
    pub ms_per_hour: u64,
    /// When the market closes (Unix ms): no buyer starts a round after it. Set by the run
    /// from `--duration`, not read from the scenario.
    #[serde(skip)]
    pub closes_at_ms: Option<u64>,
}

fn real_hour_ms() -> u64 {
    3_600_000
}

impl Terms {
    /// `hours` of market time.
    pub fn hours(&self, hours: u64) -> std::time::Duration {
        std::time::Duration::from_millis(hours.saturating_mul(self.ms_per_hour))
    }

    /// Market hours in `ms` milliseconds.
    pub fn hours_in(&self, ms: u64) -> f64 {
        ms as f64 / self.ms_per_hour.max(1) as f64
    }
}

impl Default for Terms {
    fn default() -> Terms {
        Terms { call_ms: 2_000, rounds: 10, grace_hours: 2, ms_per_hour: real_hour_ms(), closes_at_ms: None }
    }
}

/// The most units, price per unit or funds a scenario may state: far from any overflow.
pub const MAX_AMOUNT: u64 = 1 << 40;

impl Scenario {
    /// The built-in supply chain.
    pub fn built_in() -> Result<Scenario, ScenarioError> {
        Scenario::from_json(BUILT_IN)
    }

    /// A supply chain read from a JSON file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        crate::market::scenario::load(path, Scenario::validate)
    }

    /// A supply chain from JSON text, checked.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        crate::market::scenario::from_json(text, Scenario::validate)
    }

    /// Checks what JSON cannot: unique names, one level of sub-parts, amounts in range.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |what: String| Err(ScenarioError::Inconsistent(what));
        let mut names = std::collections::BTreeSet::new();
        for part in &self.bom.parts {
            if !names.insert(part.name.as_str()) {
                return bad(format!("part {} is listed twice", part.name));
            }
            if part.quantity == 0 || part.quantity > MAX_AMOUNT {
                return bad(format!("part {} needs a quantity between 1 and 2^40", part.name));
            }
            for sub in &part.sub_parts {
                if !sub.sub_parts.is_empty() {
                    return bad(format!("sub-part {} has sub-parts: one level is supported", sub.name));
                }
                if sub.quantity == 0 || sub.quantity > 1_000 {
                    return bad(format!("sub-part {} needs 1 to 1000 per assembly", sub.name));
                }
            }
        }
        let mut suppliers = std::collections::BTreeSet::new();
        for supplier in &self.suppliers {
            if !suppliers.insert(supplier.name.as_str()) || supplier.name == MANUFACTURER {
                return bad(format!("two agents are called {:?}", supplier.name));
            }
            if supplier.offers.iter().any(|o| o.price_per_unit > MAX_AMOUNT || o.capacity > MAX_AMOUNT) {
                return bad(format!("supplier {} states an amount above 2^40", supplier.name));
            }
        }
        if self.manufacturer_funds > MAX_AMOUNT || self.supplier_funds > MAX_AMOUNT {
            return bad("funds above 2^40".into());
        }
        if self.terms.rounds == 0 {
            return bad("terms.rounds must be at least 1".into());
        }
        if self.terms.ms_per_hour == 0 || self.terms.ms_per_hour > real_hour_ms() {
            return bad("terms.ms_per_hour must be between 1 and 3600000".into());
        }
        Ok(())
    }

    /// The part called `name`, top-level or sub-part.
    pub fn part(&self, name: &str) -> Option<&Part> {
        self.bom.parts.iter().flat_map(|p| std::iter::once(p).chain(&p.sub_parts)).find(|p| p.name == name)
    }

    /// A supply chain of `parts` top-level parts (about a third of them assemblies of one
    /// or two sub-parts), each part and sub-part offered by `suppliers_per_part`
    /// suppliers with capacity for twice what is needed in all, failing with probability
    /// up to `max_failure`; drawn from `seed`.
    pub fn generate(seed: u64, parts: usize, suppliers_per_part: usize, max_failure: f64) -> Scenario {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let per_part = suppliers_per_part.max(1);
        let mut bom = Bom::default();
        let mut suppliers = Vec::new();
        let mut offer =
            |rng: &mut rand::rngs::StdRng, tier: u8, part: &str, needed: u64, price: (u64, u64), lead: (u32, u32)| {
                for k in 0..per_part {
                    // Every supplier can make at least a share, and all of them together twice
                    // the need, so a failed order can usually be placed elsewhere.
                    let capacity = (2 * needed).div_ceil(per_part as u64).max(1) + rng.gen_range(0..=needed / 2);
                    suppliers.push(SupplierSpec {
                        name: format!("t{tier}-{part}-{k}"),
                        tier,
                        offers: vec![Offer {
                            part: part.to_owned(),
                            price_per_unit: rng.gen_range(price.0..=price.1),
                            capacity,
                            lead_time_hours: rng.gen_range(lead.0..=lead.1),
                        }],
                        failure_probability: (rng.gen_range(0.0..=max_failure.clamp(0.0, 1.0)) * 100.0).round() / 100.0,
                    });
                }
            };
        for i in 0..parts {
            let quantity = rng.gen_range(2..=20u64);
            let mut part = Part::new(format!("part-{i}"), quantity);
            if rng.gen_ratio(1, 3) {
                for j in 0..rng.gen_range(1..=2usize) {
                    let sub = Part::new(format!("part-{i}.{j}"), rng.gen_range(1..=3u64));
                    offer(&mut rng, 2, &sub.name, 2 * quantity * sub.quantity, (1, 10), (2, 48));
                    part.sub_parts.push(sub);
                }
            }
            offer(&mut rng, 1, &part.name, quantity, (20, 80), (4, 72));
            bom.parts.push(part);
        }
        let manufacturer_funds = bom.parts.iter().map(|p| p.quantity * 80 * 3).sum::<u64>() + 10_000;
        Scenario { bom, manufacturer_funds, suppliers, supplier_funds: 20_000, terms: Terms::default() }
    }
}

/// The manufacturer's agent name.
pub const MANUFACTURER: &str = "manufacturer";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_chain_is_valid_and_generated_ones_repeat_from_their_seed() {
        Scenario::built_in().unwrap();
        assert_eq!(Scenario::generate(3, 4, 3, 0.2), Scenario::generate(3, 4, 3, 0.2));
        assert_ne!(Scenario::generate(3, 4, 3, 0.2), Scenario::generate(4, 4, 3, 0.2));
        Scenario::generate(3, 30, 4, 0.2).validate().unwrap();
        let error = Scenario::from_json(r#"{"bom": {"parts": []}, "manufacturer_funds": 1, "suppliers": [], "x": 1}"#);
        assert!(error.unwrap_err().to_string().contains("unknown field"));
    }
}
