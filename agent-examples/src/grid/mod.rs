//! The energy-grid market: households with solar panels and consumption over a day of
//! 96 intervals of 15 minutes, a battery, and the grid operator. Every interval the
//! operator, as clearinghouse, runs a round of the library's double auction
//! ([`agent_protocols::double_auction`]): households and the battery send signed bids and
//! asks, the round clears at one uniform price, and every trade is paid on delivery
//! through escrow. The operator meters every household, supplies what the auction left
//! unmatched at its tariff, takes unmatched surplus at its feed-in price, and bills the
//! difference every few intervals, paid through the ledger too. Traders find the operator
//! in the almanac and join its auction.
//!
//! [`run`] runs a market on the simulation kit in one process, [`distributed::run`]
//! across OS processes over libp2p (`grid --distributed`); `cargo run -p
//! agent-examples --bin grid -- --help` shows the demo's options, and `docs/markets.md`
//! the scenario format.
//!
//! ```
//! use agent_examples::grid::{run, Options, Scenario};
//!
//! let scenario = Scenario::generate(1, 6);
//! let options = Options { intervals: 8, ..Options::default() };
//! let summary = agent_examples::market::simulated_runtime()?.block_on(run(&scenario, 1, &options))?;
//! assert!(summary.invariants.all_hold(), "{}", summary.invariants.table());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Units used throughout this module:
//!
//! * **energy** is an integer number of watt-hours (`u64`, Wh) *per interval*;
//! * **power** is an integer number of watts (`u64`, W) where integers are needed;
//! * **prices** are integers in **micro-tokens per watt-hour** (µT/Wh), which is the same
//!   number as milli-tokens per kWh: a tariff of `300` is 0.30 tokens per kWh. The value
//!   of `e` Wh at price `p` is `e * p` micro-tokens (see [`profile::Order::value`]).
//!
//! [`profile`] makes the per-household solar and consumption series, the battery policy
//! and the orders households send to the market; [`clear`] is a uniform-price double
//! auction for one interval; [`plot`] draws a day of clearing prices and traded energy.

pub mod distributed;
mod household;
mod market;
mod operator;
pub mod plot;
pub mod profile;
mod scenario;
mod summary;

pub use household::{books_protocol, BatteryAgent, BooksRequest, HouseholdAgent, HouseholdBooks};
pub use market::{run, run_books, MarketError, Options, MAX_INTERVALS};
pub use operator::{
    good_of, interval_of, protocol, IntervalRecord, Join, Operator, OrderLine, Payment, Statement, StatementAnswer,
    StatementRecord, Welcome, OPERATOR_ATTRIBUTE,
};
pub use scenario::{BatterySpec, HouseholdSpec, OperatorSpec, Scenario, ScenarioError, Terms, BUILT_IN, MICRO};
pub use summary::{
    check, clock, tokens, AccountRecord, BatteryLine, BatteryRecord, Books, HouseholdLine, HouseholdRecord,
    IntervalLine, OperatorLine, Summary,
};

use serde::{Deserialize, Serialize};

use profile::{Order, Side};

/// Number of intervals in a simulated day.
pub const INTERVALS_PER_DAY: usize = 96;

/// Length of one interval in minutes.
pub const INTERVAL_MINUTES: u32 = 15;

/// Default grid tariff: what a household pays the operator, in µT/Wh (0.30 tokens/kWh).
pub const DEFAULT_TARIFF: u64 = 300;

/// Default feed-in price: what the operator pays for exported energy, in µT/Wh
/// (0.08 tokens/kWh).
pub const DEFAULT_FEED_IN: u64 = 80;

/// Hour of the day (0.0 ..< 24.0) at the middle of `interval`.
///
/// Intervals past the end of a day wrap around (`interval % 96`), so a multi-day
/// simulation can count intervals from its start.
pub fn interval_mid_hour(interval: usize) -> f64 {
    let i = interval % INTERVALS_PER_DAY;
    // i < 96, exact in f64.
    (i as f64 + 0.5) * f64::from(INTERVAL_MINUTES) / 60.0
}

/// Hour of the day (0.0 ..< 24.0) at the start of `interval` (wrapping like
/// [`interval_mid_hour`]).
pub fn interval_start_hour(interval: usize) -> f64 {
    let i = interval % INTERVALS_PER_DAY;
    i as f64 * f64::from(INTERVAL_MINUTES) / 60.0
}

/// Result of clearing one interval's order book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clearing {
    /// Uniform clearing price in µT/Wh, or `None` when nothing traded.
    pub price: Option<u64>,
    /// Energy matched between buyers and sellers in Wh (saturating at `u64::MAX`).
    pub traded_wh: u64,
}

/// Clears one interval's orders in a uniform-price double auction.
///
/// Bids are taken from the highest limit down, asks from the lowest up (ties keep the
/// order of `orders`), and matched while the bid's limit is at least the ask's. The
/// price is the midpoint of the last matched bid and ask limits, so it lies between the
/// limits of the marginal pair and every matched order is satisfied by it. Orders of
/// zero energy are ignored. Energy left unmatched is, in the demo, bought from or sold
/// to the grid operator at the tariff or feed-in price.
pub fn clear(orders: &[Order]) -> Clearing {
    let mut bids: Vec<&Order> = orders.iter().filter(|o| o.side == Side::Buy && o.energy_wh > 0).collect();
    let mut asks: Vec<&Order> = orders.iter().filter(|o| o.side == Side::Sell && o.energy_wh > 0).collect();
    bids.sort_by_key(|o| std::cmp::Reverse(o.limit_price));
    asks.sort_by_key(|o| o.limit_price);

    let mut traded: u64 = 0;
    let mut marginal: Option<(u64, u64)> = None;
    let (mut bi, mut ai) = (0usize, 0usize);
    let mut bid_left = bids.first().map_or(0, |o| o.energy_wh);
    let mut ask_left = asks.first().map_or(0, |o| o.energy_wh);
    while let (Some(bid), Some(ask)) = (bids.get(bi), asks.get(ai)) {
        if bid.limit_price < ask.limit_price {
            break;
        }
        let q = bid_left.min(ask_left);
        traded = traded.saturating_add(q);
        marginal = Some((bid.limit_price, ask.limit_price));
        bid_left -= q;
        ask_left -= q;
        if bid_left == 0 {
            bi += 1;
            bid_left = bids.get(bi).map_or(0, |o| o.energy_wh);
        }
        if ask_left == 0 {
            ai += 1;
            ask_left = asks.get(ai).map_or(0, |o| o.energy_wh);
        }
    }
    // bid >= ask, so `bid - ask` cannot underflow and `ask + (bid - ask) / 2 <= bid`.
    let price = marginal.map(|(bid, ask)| ask + (bid - ask) / 2);
    Clearing { price, traded_wh: traded }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(side: Side, energy_wh: u64, limit_price: u64) -> Order {
        Order { side, energy_wh, limit_price }
    }

    #[test]
    fn hours_wrap_and_are_in_range() {
        assert_eq!(interval_start_hour(0), 0.0);
        assert_eq!(interval_start_hour(48), 12.0);
        assert_eq!(interval_start_hour(96), 0.0);
        assert!((interval_mid_hour(95) - 23.875).abs() < 1e-9);
    }

    #[test]
    fn clear_matches_crossing_orders() {
        let orders = [
            order(Side::Buy, 500, 300),
            order(Side::Buy, 300, 150),
            order(Side::Sell, 400, 100),
            order(Side::Sell, 400, 200),
        ];
        // Bid 300 x 500 meets ask 100 x 400 (400 Wh), then ask 200 (100 Wh);
        // the next bid (150) is below the ask (200): stop. Marginal pair (300, 200).
        let c = clear(&orders);
        assert_eq!(c.traded_wh, 500);
        assert_eq!(c.price, Some(250));
    }

    #[test]
    fn clear_without_cross_trades_nothing() {
        let c = clear(&[order(Side::Buy, 100, 90), order(Side::Sell, 100, 91)]);
        assert_eq!(c, Clearing { price: None, traded_wh: 0 });
        assert_eq!(clear(&[]), Clearing { price: None, traded_wh: 0 });
    }

    proptest! {
        #[test]
        fn clear_is_bounded_by_both_sides(
            raw in proptest::collection::vec((any::<bool>(), 0u64..10_000, 0u64..1_000), 0..40)
        ) {
            let orders: Vec<Order> = raw
                .iter()
                .map(|&(buy, e, p)| order(if buy { Side::Buy } else { Side::Sell }, e, p))
                .collect();
            let c = clear(&orders);
            let demand: u64 = orders.iter().filter(|o| o.side == Side::Buy).map(|o| o.energy_wh).sum();
            let supply: u64 = orders.iter().filter(|o| o.side == Side::Sell).map(|o| o.energy_wh).sum();
            prop_assert!(c.traded_wh <= demand.min(supply));
            prop_assert_eq!(c.price.is_some(), c.traded_wh > 0);
            if let Some(p) = c.price {
                let max_bid = orders.iter().filter(|o| o.side == Side::Buy && o.energy_wh > 0).map(|o| o.limit_price).max();
                let min_ask = orders.iter().filter(|o| o.side == Side::Sell && o.energy_wh > 0).map(|o| o.limit_price).min();
                prop_assert!(Some(p) <= max_bid);
                prop_assert!(Some(p) >= min_ask);
            }
        }
    }
}
