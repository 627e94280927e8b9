//! The energy-grid market's scenario: households with solar panels and base loads, one
//! battery, and the grid operator with its tariff and feed-in price. Loaded from JSON
//! (`docs/markets.md` gives the format; `agent-examples/scenarios/grid.json` is the
//! built-in market) or generated from a seed.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use crate::market::ScenarioError;

use super::profile::{household_seed, Household, IntervalEnergy};
use super::{DEFAULT_FEED_IN, DEFAULT_TARIFF, INTERVALS_PER_DAY};

/// The built-in market, as shipped in `agent-examples/scenarios/grid.json`.
pub const BUILT_IN: &str = include_str!("../../scenarios/grid.json");

/// Micro-tokens in a token: money on the ledger is in micro-tokens (µT).
pub const MICRO: u64 = 1_000_000;

/// An energy market for a day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The seed of the day's weather and consumption noise (each household draws its own
    /// stream from it and its index).
    pub seed: u64,
    /// The grid operator, which also runs the auction.
    pub operator: OperatorSpec,
    /// The battery, if there is one.
    #[serde(default)]
    pub battery: Option<BatterySpec>,
    /// The households.
    pub households: Vec<HouseholdSpec>,
    /// The market's timing.
    #[serde(default)]
    pub terms: Terms,
}

/// The grid operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSpec {
    /// Its name (also its agent's name and key seed).
    pub name: String,
    /// What a household pays for energy from the grid, in µT/Wh.
    #[serde(default = "default_tariff")]
    pub tariff: u64,
    /// What the operator pays for energy fed into the grid, in µT/Wh (at most the tariff).
    #[serde(default = "default_feed_in")]
    pub feed_in: u64,
    /// What its wallet holds at the start, in µT (it pays feed-in credits from it).
    pub funds: u64,
}

fn default_tariff() -> u64 {
    DEFAULT_TARIFF
}

fn default_feed_in() -> u64 {
    DEFAULT_FEED_IN
}

/// The battery agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatterySpec {
    /// Its name (also its agent's name and key seed).
    pub name: String,
    /// Capacity, in Wh.
    pub capacity_wh: u64,
    /// Charge at the start, in Wh (at most the capacity).
    pub charge_wh: u64,
    /// The most it charges or discharges in one interval, in Wh.
    pub rate_wh: u64,
    /// What its wallet holds at the start, in µT.
    pub funds: u64,
}

/// A household.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdSpec {
    /// Its name (also its agent's name and key seed).
    pub name: String,
    /// Peak output of its solar panels, in kW (0 for none).
    pub panel_kw: f64,
    /// Its base electrical load, in kW.
    pub base_load_kw: f64,
    /// What its wallet holds at the start, in µT.
    pub funds: u64,
}

/// The market's timing, in milliseconds of market time, and its billing period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// How long each interval's auction round takes orders.
    pub open_ms: u64,
    /// How long a seller has to deliver once paid (the escrow runs out this long plus a
    /// second after it is locked).
    pub deliver_ms: u64,
    /// The operator bills each household every this many intervals (and at the end).
    pub bill_every: u32,
    /// How many times a statement, or its payment, is tried before it is given up.
    pub attempts: u32,
    /// The pause between attempts.
    pub retry_ms: u64,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms { open_ms: 2_000, deliver_ms: 10_000, bill_every: 16, attempts: 8, retry_ms: 30_000 }
    }
}

/// Market time in one interval, in ms (15 minutes).
const INTERVAL_MS: u64 = 15 * 60_000;

impl Terms {
    /// These terms for a market whose 15-minute interval lasts `ms_per_interval` ms of
    /// real time (`grid --distributed`): every timing shrinks with the interval, but none
    /// below what messages and payments over a real network need. A round takes orders for
    /// its scaled `open_ms`, but at least two fifths of the interval or a second, whichever
    /// is shorter (so it clears and its trades are told before the next one opens); a seller has its scaled
    /// `deliver_ms` but at least 2 s to deliver (statements are answered within the same
    /// time); attempts are at least 250 ms apart. `bill_every` and `attempts` count
    /// intervals and tries, and stay as they are. `ms_per_interval` is taken to be 1 to
    /// 900,000 (real time no slower than market time).
    pub fn real_time(&self, ms_per_interval: u64) -> Terms {
        let per_interval = ms_per_interval.clamp(1, INTERVAL_MS);
        // Saturating: unchecked terms cannot overflow.
        let scaled = |ms: u64| ms.saturating_mul(per_interval) / INTERVAL_MS;
        Terms {
            open_ms: scaled(self.open_ms).max((per_interval * 2 / 5).min(1_000)).max(1),
            deliver_ms: scaled(self.deliver_ms).max(2_000),
            bill_every: self.bill_every,
            attempts: self.attempts,
            retry_ms: scaled(self.retry_ms).max(250),
        }
    }
}

impl Scenario {
    /// The built-in market.
    pub fn built_in() -> Result<Scenario, ScenarioError> {
        Scenario::from_json(BUILT_IN)
    }

    /// A market read from a JSON file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        crate::market::scenario::load(path, Scenario::validate)
    }

    /// A market from JSON text, checked.
    pub fn from_json(text: &str) -> Result<Scenario, ScenarioError> {
        crate::market::scenario::from_json(text, Scenario::validate)
    }

    /// Checks what JSON cannot: unique names, sensible panels, loads and prices, and
    /// amounts that cannot overflow.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |what: String| Err(ScenarioError::Inconsistent(what));
        let mut names = std::collections::BTreeSet::new();
        let battery = self.battery.iter().map(|b| b.name.as_str());
        for name in [self.operator.name.as_str()].into_iter().chain(battery) {
            if !names.insert(name) {
                return bad(format!("two agents are called {name:?}"));
            }
        }
        let op = &self.operator;
        if op.tariff == 0 || op.tariff > 1_000_000 {
            return bad(format!("the tariff must be 1 to 1000000 µT/Wh, not {}", op.tariff));
        }
        if op.feed_in > op.tariff {
            return bad(format!("the feed-in price {} is above the tariff {}", op.feed_in, op.tariff));
        }
        for h in &self.households {
            if !names.insert(h.name.as_str()) {
                return bad(format!("two agents are called {:?}", h.name));
            }
            for (what, kw) in [("panel_kw", h.panel_kw), ("base_load_kw", h.base_load_kw)] {
                if !kw.is_finite() || !(0.0..=1_000.0).contains(&kw) {
                    return bad(format!("household {}: {what} must be 0 to 1000 kW, not {kw}", h.name));
                }
            }
        }
        if let Some(b) = &self.battery {
            if b.charge_wh > b.capacity_wh {
                return bad(format!("battery {} holds more than its capacity", b.name));
            }
            if b.capacity_wh > 1_000_000_000 || b.rate_wh > 1_000_000_000 {
                return bad(format!("battery {} is larger than 1 GWh", b.name));
            }
        }
        let t = &self.terms;
        if t.attempts == 0 || t.attempts > 100 || t.bill_every == 0 || t.open_ms == 0 {
            return bad("terms.attempts must be 1 to 100, terms.bill_every and terms.open_ms at least 1".into());
        }
        if t.deliver_ms < 1_000 {
            return bad(
                "terms.deliver_ms must be at least 1000: a seller delivers against an escrow open a second longer"
                    .into(),
            );
        }
        if t.open_ms >= 15 * 60_000 / 2 || t.deliver_ms > 15 * 60_000 || t.retry_ms > 3_600_000 {
            return bad(
                "terms: open_ms must be under 7.5 minutes, deliver_ms at most 15 minutes, retry_ms at most an hour"
                    .into(),
            );
        }
        Ok(())
    }

    /// A market of `households` households (about four in five with panels) and a battery
    /// of 2 kWh per ten households, drawn from `seed`.
    pub fn generate(seed: u64, households: usize) -> Scenario {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let specs = super::profile::households(households, &mut rng)
            .into_iter()
            .enumerate()
            .map(|(i, h)| HouseholdSpec {
                name: format!("house-{i:04}"),
                panel_kw: h.panel_kw,
                base_load_kw: h.base_load_kw,
                funds: 50 * MICRO + rng.gen_range(0..=50) * MICRO,
            })
            .collect();
        let capacity_wh = (households as u64).div_ceil(10).max(1) * 2_000;
        Scenario {
            seed,
            operator: OperatorSpec {
                name: "grid-operator".into(),
                tariff: DEFAULT_TARIFF,
                feed_in: DEFAULT_FEED_IN,
                funds: 10 * MICRO * (households as u64).max(1),
            },
            battery: Some(BatterySpec {
                name: "battery".into(),
                capacity_wh,
                charge_wh: capacity_wh / 2,
                rate_wh: capacity_wh / 4,
                funds: 10 * MICRO * (households as u64).max(1),
            }),
            households: specs,
            terms: Terms::default(),
        }
    }

    /// Each household's solar production and consumption in the first `intervals`
    /// intervals, drawn from the scenario's seed (the same every time).
    pub fn profiles(&self, intervals: usize) -> Vec<Vec<IntervalEnergy>> {
        self.households
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(household_seed(self.seed, index as u64));
                let household =
                    Household { name: spec.name.clone(), panel_kw: spec.panel_kw, base_load_kw: spec.base_load_kw };
                (0..intervals).map(|i| household.interval(i % (INTERVALS_PER_DAY * 366), &mut rng)).collect()
            })
            .collect()
    }

    /// Money minted at the start, in µT.
    pub fn minted(&self) -> u128 {
        let households: u128 = self.households.iter().map(|h| u128::from(h.funds)).sum();
        households + u128::from(self.operator.funds) + self.battery.as_ref().map_or(0, |b| u128::from(b.funds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_market_is_valid_and_generated_ones_repeat_from_their_seed() {
        let built_in = Scenario::built_in().unwrap();
        assert!(!built_in.households.is_empty() && built_in.battery.is_some());
        assert_eq!(Scenario::generate(3, 50), Scenario::generate(3, 50));
        assert_ne!(Scenario::generate(3, 50), Scenario::generate(4, 50));
        Scenario::generate(3, 50).validate().unwrap();
        let real = Terms::default().real_time(1_000);
        assert_eq!(real, Terms { open_ms: 400, deliver_ms: 2_000, bill_every: 16, attempts: 8, retry_ms: 250 });
        let slow = Terms::default().real_time(900_000);
        assert_eq!(slow, Terms::default());
        let scenario = Scenario { terms: Terms::default().real_time(250), ..Scenario::generate(3, 5) };
        scenario.validate().unwrap();
        let day = Scenario::generate(3, 5).profiles(96);
        assert_eq!(day, Scenario::generate(3, 5).profiles(96));
        assert_eq!(day.len(), 5);
        assert!(day.iter().all(|d| d.len() == 96));
    }

    #[test]
    fn a_bad_scenario_is_a_clear_error_not_a_panic() {
        let op = r#""operator": {"name": "op", "funds": 1}"#;
        for (text, says) in [
            ("{", "not valid"),
            (&format!(r#"{{"seed": 1, {op}, "households": [], "extra": 1}}"#) as &str, "unknown field"),
            (
                &format!(
                    r#"{{"seed": 1, {op}, "households": [{{"name":"op","panel_kw":1,"base_load_kw":1,"funds":1}}]}}"#
                ),
                "two agents",
            ),
            (
                &format!(
                    r#"{{"seed": 1, {op}, "households": [{{"name":"a","panel_kw":-1,"base_load_kw":1,"funds":1}}]}}"#
                ),
                "panel_kw must be",
            ),
            (
                r#"{"seed": 1, "operator": {"name": "op", "funds": 1, "tariff": 10, "feed_in": 20}, "households": []}"#,
                "above the tariff",
            ),
            (
                &format!(
                    r#"{{"seed": 1, {op}, "battery": {{"name":"b","capacity_wh":1,"charge_wh":2,"rate_wh":1,"funds":0}}, "households": []}}"#
                ),
                "more than its capacity",
            ),
            (
                &format!(
                    r#"{{"seed": 1, {op}, "households": [], "terms": {{"open_ms": 1, "deliver_ms": 0, "bill_every": 1, "attempts": 1, "retry_ms": 0}}}}"#
                ),
                "deliver_ms must be at least 1000",
            ),
        ] {
            let error = Scenario::from_json(text).unwrap_err();
            let message = agent_core::error::chain(&error);
            assert!(message.contains(says), "{message}");
        }
    }
}
