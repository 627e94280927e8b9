//! The DeFi arbitrage market: constant-product pools (`x*y=k` with a fee, Uniswap v2's
//! integer formula) held by market-maker agents, traders whose swaps move prices, and
//! arbitrageurs that find profitable cycles across pools (negative cycles of -log rates),
//! size the integer input that maximises profit after fees, predict the profit, trade
//! the swaps through the ledgers (one per token) against escrow, and report the
//! realised profit.
//!
//! ```
//! use agent_examples::defi::{run, Options, Scenario};
//!
//! let mut scenario = Scenario::built_in()?;
//! scenario.terms.trading_ms = 10_000;
//! scenario.terms.calm_ms = 10_000;
//! let summary = agent_examples::market::simulated_runtime()?
//!     .block_on(run(&scenario, 1, &Options::default()))?;
//! assert!(summary.invariants.all_hold(), "{}", summary.invariants.table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod amm;
pub mod arbitrage;
mod arbitrageur;
pub mod distributed;
mod maker;
mod market;
mod scenario;
pub mod spread;
mod summary;
mod trader;

pub use arbitrageur::Arbitrage;
pub use maker::{BooksRequest, MakerBooks, Reserves};
pub use market::{run, MarketError, Options};
pub use scenario::{ArbitrageurSpec, PoolSpec, Scenario, ScenarioError, Terms, TraderSpec, BUILT_IN};
pub use summary::Summary;
pub use trader::TraderLog;
