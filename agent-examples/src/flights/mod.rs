//! The flight market: airlines with flights and pricing policies, travellers with routes,
//! group sizes and budgets. Travellers find airlines through the almanac by route, run
//! contract-net (proposals hold seats until a deadline), accept the cheapest proposal
//! within budget, pay through escrow keyed by the dialogue, and get a booking reference;
//! rejected and expired holds are released.
//!
//! [`run`] runs a market on the simulation kit in one process; `cargo run -p
//! agent-examples --bin flights -- --help` shows the demo's options, and `docs/markets.md`
//! the scenario format.
//!
//! ```
//! use agent_examples::flights::{run, Options, Scenario};
//!
//! let scenario = Scenario::generate(1, 20, 4, 3);
//! let summary = agent_examples::market::simulated_runtime()?
//!     .block_on(run(&scenario, 1, &Options::default()))?;
//! assert!(summary.invariants.all_hold(), "{}", summary.invariants.table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod airline;
pub mod distributed;
mod market;
mod scenario;
mod summary;
mod traveller;

pub use airline::{Airline, Booking, Flight, Offer, Ticket, Trip};
pub use market::{run, BooksRequest, MarketError, Options};
pub use scenario::{AirlineSpec, FlightSpec, Pricing, Scenario, ScenarioError, Terms, TravellerSpec, BUILT_IN};
pub use summary::{check, AirlineLine, Books, FlightLine, Summary};
pub use traveller::{route_attribute, shop, Booked, Shopping};
