//! The flight market's scenario: airlines with flights and pricing policies, travellers
//! with routes, group sizes, budgets and funds. Loaded from JSON (`docs/markets.md` gives
//! the format; `agent-examples/scenarios/flights.json` is the built-in market) or
//! generated from a seed.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub use crate::market::ScenarioError;

/// The built-in market, as shipped in `agent-examples/scenarios/flights.json`.
pub const BUILT_IN: &str = include_str!("../../scenarios/flights.json");

/// A flight market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The airlines.
    pub airlines: Vec<AirlineSpec>,
    /// The travellers, in the order `--sequential` serves them.
    pub travellers: Vec<TravellerSpec>,
    /// The market's timing.
    #[serde(default)]
    pub terms: Terms,
}

/// An airline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AirlineSpec {
    /// Its name (also its agent's name and key seed).
    pub name: String,
    /// How it prices a seat.
    #[serde(default)]
    pub pricing: Pricing,
    /// Its flights.
    pub flights: Vec<FlightSpec>,
}

/// How an airline prices seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pricing {
    /// Every seat at the flight's base price.
    #[default]
    Fixed,
    /// The base price plus `percent_at_full`% of it times the share of seats already sold
    /// or held: seats get dearer as the flight fills.
    LoadFactor {
        /// The mark-up on the last seat, in percent of the base price.
        percent_at_full: u32,
    },
}

/// A flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
#[serde(deny_unknown_fields)]
pub struct FlightSpec {
    /// Its number ("SK100"), unique in the market.
    pub id: String,
    /// Its route ("BER-LIS").
    pub route: String,
    /// Seats for sale.
    pub seats: u32,
    /// Base price of a seat, in cents.
    pub price: u64,
}

/// A traveller: a group of `seats` people flying `route` together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TravellerSpec {
    /// Its name (also its agent's name and key seed).
    pub name: String,
    /// The route.
    pub route: String,
    /// Seats, all on one flight or none.
    pub seats: u32,
    /// The most it pays for all seats, in cents.
    pub budget: u64,
    /// What its wallet holds at the start, in cents.
    pub funds: u64,
}

/// The market's timing, in milliseconds of market time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// How long a traveller waits for proposals.
    pub call_ms: u64,
    /// How long an airline holds the seats it proposes.
    pub hold_ms: u64,
    /// How long an awarded airline has to issue the booking. The escrow paying for it runs
    /// out this long (plus a second of grace) after it is locked, so the traveller can
    /// release it through a ledger outage shorter than this; after a longer one, the money
    /// goes back to the traveller and the booking is unpaid (an invariant reports it).
    pub perform_ms: u64,
    /// How many times a traveller shops before giving up, when a round fails for want of
    /// answers or of the ledger.
    pub attempts: u32,
    /// The pause between attempts.
    pub retry_ms: u64,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms { call_ms: 2_000, hold_ms: 10_000, perform_ms: 30_000, attempts: 3, retry_ms: 20_000 }
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

    /// Checks what JSON cannot: unique names and flight numbers, non-empty groups, and
    /// amounts that cannot overflow the ledger.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut names = std::collections::BTreeSet::new();
        let mut flights = std::collections::BTreeSet::new();
        let bad = |what: String| Err(ScenarioError::Inconsistent(what));
        for airline in &self.airlines {
            if !names.insert(airline.name.as_str()) {
                return bad(format!("two agents are called {:?}", airline.name));
            }
            for flight in &airline.flights {
                if !flights.insert(flight.id.as_str()) {
                    return bad(format!("two flights are numbered {:?}", flight.id));
                }
                if flight.price > u64::from(u32::MAX) {
                    return bad(format!("flight {} costs more than {} cents a seat", flight.id, u32::MAX));
                }
            }
        }
        for traveller in &self.travellers {
            if !names.insert(traveller.name.as_str()) {
                return bad(format!("two agents are called {:?}", traveller.name));
            }
            if traveller.seats == 0 {
                return bad(format!("traveller {} wants no seat", traveller.name));
            }
        }
        if self.terms.attempts == 0 {
            return bad("terms.attempts must be at least 1".into());
        }
        Ok(())
    }

    /// A market of `travellers` travellers and `airlines` airlines on `routes` routes,
    /// drawn from `seed`. Some travellers' budgets are too small for any flight, and some
    /// routes fill up, so not everyone books.
    pub fn generate(seed: u64, travellers: usize, airlines: usize, routes: usize) -> Scenario {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        const CITIES: [&str; 12] = ["BER", "LIS", "NYC", "CDG", "MAD", "ROM", "VIE", "OSL", "ATH", "DUB", "WAW", "PRG"];
        let mut all_routes = Vec::new();
        for a in CITIES {
            for b in CITIES {
                if a != b {
                    all_routes.push(format!("{a}-{b}"));
                }
            }
        }
        all_routes.shuffle(&mut rng);
        all_routes.truncate(routes.clamp(1, CITIES.len() * (CITIES.len() - 1)));
        let airline_specs: Vec<AirlineSpec> = (0..airlines)
            .map(|i| {
                let code: String = format!("A{i:03}");
                let pricing = match rng.gen_bool(0.5) {
                    true => Pricing::Fixed,
                    false => Pricing::LoadFactor { percent_at_full: rng.gen_range(20..=100) },
                };
                let flights = (0..rng.gen_range(1..=3))
                    .map(|f| FlightSpec {
                        id: format!("{code}{f}"),
                        route: all_routes[rng.gen_range(0..all_routes.len())].clone(),
                        seats: rng.gen_range(4..=40),
                        price: rng.gen_range(40..=400) * 100,
                    })
                    .collect();
                AirlineSpec { name: format!("airline-{i:03}"), pricing, flights }
            })
            .collect();
        let traveller_specs = (0..travellers)
            .map(|i| {
                let seats = rng.gen_range(1..=4);
                let budget = u64::from(seats) * rng.gen_range(30..=450) * 100;
                TravellerSpec {
                    name: format!("traveller-{i:04}"),
                    route: all_routes[rng.gen_range(0..all_routes.len())].clone(),
                    seats,
                    budget,
                    funds: budget + rng.gen_range(0..=50_000),
                }
            })
            .collect();
        Scenario { airlines: airline_specs, travellers: traveller_specs, terms: Terms::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_market_is_valid_and_generated_ones_repeat_from_their_seed() {
        let built_in = Scenario::built_in().unwrap();
        assert!(!built_in.airlines.is_empty() && !built_in.travellers.is_empty());
        assert_eq!(Scenario::generate(3, 50, 10, 8), Scenario::generate(3, 50, 10, 8));
        assert_ne!(Scenario::generate(3, 50, 10, 8), Scenario::generate(4, 50, 10, 8));
        Scenario::generate(3, 50, 10, 8).validate().unwrap();
    }

    #[test]
    fn a_bad_scenario_is_a_clear_error_not_a_panic() {
        for (text, says) in [
            ("{", "not valid"),
            (r#"{"airlines": [], "travellers": [], "extra": 1}"#, "unknown field"),
            (
                r#"{"airlines": [], "travellers": [{"name":"a","route":"X-Y","seats":0,"budget":1,"funds":1}]}"#,
                "wants no seat",
            ),
            (
                r#"{"airlines": [{"name":"a","flights":[]}], "travellers": [{"name":"a","route":"X-Y","seats":1,"budget":1,"funds":1}]}"#,
                "two agents",
            ),
        ] {
            let error = Scenario::from_json(text).unwrap_err();
            let message = agent_core::error::chain(&error);
            assert!(message.contains(says), "{message}");
        }
    }
}
