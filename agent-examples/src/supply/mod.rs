//! The supply chain: a manufacturer procures the parts of a bill of materials from tiers
//! of suppliers with capacities, lead times and prices, by contract-net with deadlines;
//! tier-1 suppliers of assemblies buy their sub-parts from tier 2 the same way; suppliers
//! fail at random (seeded) and their orders are placed again with the others. Payment is
//! by escrow, released on delivery.
//!
//! ```
//! use agent_examples::supply::{run, Options, Scenario};
//!
//! let scenario = Scenario::built_in()?;
//! let summary = agent_examples::market::simulated_runtime()?
//!     .block_on(run(&scenario, 1, &Options::default()))?;
//! assert!(summary.invariants.all_hold(), "{}", summary.invariants.table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bom;
pub mod distributed;
mod market;
pub mod optimum;
mod procure;
mod scenario;
mod summary;
mod supplier;

pub use market::{run, MarketError, Options};
pub use procure::{part_attribute, procure, Delivery, Order, PartOrder, Prefer, Procurement, Quote};
pub use scenario::{Scenario, ScenarioError, Terms, BUILT_IN, MANUFACTURER};
pub use summary::{Optimum, Summary};
pub use supplier::{BooksRequest, Capacity, Supplier, SupplierBooks};
