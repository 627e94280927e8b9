//! The Dutch auction as it runs over messages, on random clocks and bidders: its winner and
//! price are exactly what the documented rule gives, computed here directly from the clock
//! and each bidder's limit and lag (not from what the auctioneer counted). Each bidder takes
//! at the first price the clock calls at or below its limit, a lag after the call; limits
//! are drawn from a few ticks' prices, so two bidders often take at the same tick, and the
//! rule that breaks such ties is arrival: the first take to arrive, at a tick the clock
//! reached, wins at that tick's price and stops the clock. No take above the floor: no sale.
//! Then the winner alone pays, exactly its price, on the ledger.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Identity};
use agent_protocols::auction::Award;
use agent_protocols::dutch;
use agent_protocols::settlement::{self, Sales, Settled, SettlementError};
use parking_lot::Mutex;
use proptest::prelude::*;

mod common;
use common::floor::{Lots, DELIVER_WITHIN, FUNDS};
use common::sim_paid::{paused, SimPaid};

/// Lags are whole multiples of this (distinct per bidder), and every lag ends well within
/// the shortest tick: a take never crosses into the next tick.
const LAG: Duration = Duration::from_millis(7);

/// Takes at or below `limit` (never if `None`), `lag` after the price is called.
struct Taker {
    limit: Option<u128>,
    lag: Duration,
    paid: Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl dutch::Bidder for Taker {
    async fn take(&self, _item: &serde_json::Value, price: u128) -> bool {
        if self.limit.is_none_or(|limit| price > limit) {
            return false;
        }
        tokio::time::sleep(self.lag).await;
        true
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.paid.lock().push(matches!(settled, Ok(Settled::Paid { .. })));
    }
}

/// The documented rule, applied directly: the clock calls `start - tick * step` (step at
/// least 1) from tick 0 while it is not below the floor (at least 1). Each bidder takes at the first
/// price called at or below its limit, `lag` into that tick; the first take to arrive (the
/// earliest tick, then the shortest lag) wins at its tick's price, and the clock stopped
/// there. Returns the award and how many ticks the clock called.
fn expected(terms: &dutch::Terms, bidders: &[(Address, Option<u128>, Duration)]) -> (Option<Award>, u64) {
    let step = terms.step.max(1);
    let called: Vec<u128> = (0..)
        .map_while(|tick: u128| terms.start.checked_sub(tick * step))
        .take_while(|p| *p >= terms.floor.max(1))
        .collect();
    let first = bidders
        .iter()
        .filter_map(|(who, limit, lag)| {
            let tick = called.iter().position(|price| limit.is_some_and(|limit| *price <= limit))?;
            Some((tick, *lag, *who))
        })
        .min();
    match first {
        Some((tick, _, winner)) => (Some(Award { winner, price: called[tick] }), tick as u64 + 1),
        None => (None, called.len() as u64),
    }
}

async fn run(terms: dutch::Terms, bidders: &[(Option<u64>, u32)]) -> Result<(), TestCaseError> {
    let p = SimPaid::new("dutch props mint");
    let mut placed = Vec::new();
    let mut takers = Vec::new();
    for (i, (target, lag)) in bidders.iter().enumerate() {
        // The price the clock would call at the target tick (if it got there).
        let limit = target.map(|tick| terms.start.saturating_sub(u128::from(tick) * terms.step.max(1)));
        let taker = Arc::new(Taker { limit, lag: LAG * *lag, paid: Mutex::default() });
        let name = format!("bidder {i}");
        let mut agent = Agent::builder(&name).seed(&name).build().unwrap();
        dutch::serve(&mut agent, Identity::from_seed(&name), taker.clone(), DELIVER_WITHIN);
        let address = p.add(agent);
        p.fund(address, FUNDS).await;
        placed.push((address, limit, taker.lag));
        takers.push(taker);
    }
    let mut agent = Agent::builder("auctioneer").seed("auctioneer").build().unwrap();
    let sales = Sales::new();
    let house = dutch::Auctioneer::serve(&mut agent, sales.clone());
    settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
    let auctioneer = p.add(agent);

    let addresses: Vec<Address> = placed.iter().map(|(address, _, _)| *address).collect();
    let descent = house.run(&p.context(auctioneer), &addresses, &"lot", terms).await.unwrap();
    let (award, ticks) = expected(&terms, &placed);
    prop_assert_eq!(descent.award, award, "{:?}", descent);
    prop_assert_eq!(descent.ticks, ticks, "the clock stopped at the take, or passed the floor");
    prop_assert_eq!(
        descent.takes.iter().map(|t| (t.bidder, t.amount)).collect::<Vec<_>>(),
        award.iter().map(|a| (a.winner, a.price)).collect::<Vec<_>>()
    );

    // The winner alone paid, exactly its price, to the auctioneer; no token made or lost.
    let mut balances: Vec<(Address, u128)> = addresses.iter().map(|a| (*a, FUNDS)).collect();
    balances.push((auctioneer, 0));
    if let Some(Award { winner, price }) = award {
        balances.iter_mut().filter(|(a, _)| *a == winner).for_each(|(_, b)| *b -= price);
        balances.last_mut().unwrap().1 = price;
    }
    p.settles(&balances).await.map_err(TestCaseError::fail)?;
    for (taker, address) in takers.iter().zip(&addresses) {
        let won = award.is_some_and(|a| a.winner == *address);
        prop_assert_eq!(taker.paid.lock().clone(), if won { vec![true] } else { vec![] });
    }
    p.shutdown().await;
    Ok(())
}

/// 1 to 5 bidders, each taking at the price of one of the first 3 ticks (or never), often
/// at the same tick as the bidder before it (a tie), with distinct lags: a shuffle of
/// `0..n` lag units.
fn bidders() -> impl Strategy<Value = Vec<(Option<u64>, u32)>> {
    (1usize..=5).prop_flat_map(|n| {
        let lags = Just((0..n as u32).collect::<Vec<u32>>()).prop_shuffle();
        let target = (prop::option::weighted(0.8, 0u64..3), any::<bool>());
        (prop::collection::vec(target, n), lags).prop_map(|(targets, lags)| {
            let mut bidders: Vec<(Option<u64>, u32)> = Vec::new();
            for ((target, copy), lag) in targets.into_iter().zip(lags) {
                let target = match bidders.last() {
                    Some((previous, _)) if copy => *previous,
                    _ => target,
                };
                bidders.push((target, lag));
            }
            bidders
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn a_dutch_auction_awards_the_first_take_to_arrive_at_a_called_price(
        bidders in bidders(),
        start in 0u128..150,
        step in 0u128..30,
        below in prop_oneof![9 => 0u128..150, 1 => Just(u128::MAX)],
        tick_ms in 50u64..150,
    ) {
        // The floor is mostly below the start (`MAX`: above it, and the clock calls nothing),
        // and may be 0, which the clock takes as 1: nothing is sold at 0 (the ledger cannot
        // lock nothing, so such a sale could never be paid).
        let floor = if below == u128::MAX { start + 1 } else { start - below.min(start) };
        let terms = dutch::Terms { start, step, floor, tick_every: Duration::from_millis(tick_ms) };
        paused(run(terms, &bidders))?;
    }
}
