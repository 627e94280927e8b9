//! The sealed-bid auction as it runs over messages, on random bidders: its winner and price
//! are exactly what the rules give for the bids that arrived before the deadline, computed
//! here directly from the bidders' amounts and delays (not from what the auctioneer counted).
//! `tests/auction.rs` checks the rule functions themselves; this checks the auction that
//! calls them: which bids reach it, in time, with their signatures.

use std::sync::Arc;
use std::time::Duration;

use agent_core::sim::Sim;
use agent_core::{Address, Agent, Identity};
use agent_protocols::auction::Award;
use agent_protocols::sealed_bid::{self, Bidder, Pricing};
use agent_protocols::settlement::Sales;
use proptest::prelude::*;

const DEADLINE: Duration = Duration::from_millis(300);

struct Fixed {
    amount: Option<u128>,
    delay: Duration,
}

#[async_trait::async_trait]
impl Bidder for Fixed {
    async fn bid(&self, _item: serde_json::Value, _reserve: u128) -> Option<u128> {
        tokio::time::sleep(self.delay).await;
        self.amount
    }
}

/// One bidder: its amount (or no bid) and how long it thinks before answering, well before
/// or well after the deadline (a bid at the deadline itself would be a race, not a rule).
fn bidder() -> impl Strategy<Value = (Option<u128>, Duration)> {
    let delay = prop_oneof![0u64..150, 450u64..700].prop_map(Duration::from_millis);
    (prop::option::weighted(0.85, 0u128..300), delay)
}

/// The rules, applied directly: bids that arrived in time and reach the reserve count; the
/// highest wins (amounts are made distinct, so no tie arises); it pays its own bid
/// (first price) or the highest other counted bid, or the reserve if none (second price).
fn expected(bids: &[(Address, Option<u128>, Duration)], reserve: u128, pricing: Pricing) -> Option<Award> {
    // Nothing trades at 0 (the ledger cannot pay it): a reserve of 0 is one of 1.
    let reserve = reserve.max(1);
    let mut counted: Vec<(u128, Address)> = bids
        .iter()
        .filter(|(_, amount, delay)| *delay < DEADLINE && amount.is_some_and(|a| a >= reserve))
        .map(|(who, amount, _)| (amount.unwrap_or_default(), *who))
        .collect();
    counted.sort_unstable_by(|a, b| b.cmp(a));
    let (top, winner) = *counted.first()?;
    let price = match pricing {
        Pricing::FirstPrice => top,
        _ => counted.get(1).map_or(reserve, |(second, _)| *second),
    };
    Some(Award { winner, price })
}

async fn run(bidders: &[(Option<u128>, Duration)], reserve: u128, pricing: Pricing) -> (Option<Award>, Option<Award>) {
    let sim = Sim::new(1).without_trace();
    let floor = sim.add_host("floor").unwrap();
    let mut placed = Vec::new();
    for (i, (amount, delay)) in bidders.iter().enumerate() {
        // Distinct amounts: no tie to break by arrival.
        let amount = amount.map(|a| a * 8 + i as u128);
        let name = format!("bidder {i}");
        let mut agent = Agent::builder(&name).seed(&name).build().unwrap();
        sealed_bid::serve(&mut agent, Identity::from_seed(&name), Arc::new(Fixed { amount, delay: *delay }), DEADLINE);
        placed.push((floor.add(agent).unwrap(), amount, *delay));
    }
    let mut auctioneer = Agent::builder("auctioneer").seed("auctioneer").build().unwrap();
    let house = sealed_bid::Auctioneer::serve(&mut auctioneer, Sales::new());
    let auctioneer = floor.add(auctioneer).unwrap();
    let ctx = floor.context(auctioneer).unwrap();
    let addresses: Vec<Address> = placed.iter().map(|(who, _, _)| *who).collect();
    let sealed = house.run(&ctx, &addresses, &"lot", reserve, DEADLINE, pricing).await.unwrap();
    sim.shutdown().await;
    (sealed.award, expected(&placed, reserve, pricing))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_sealed_auction_awards_what_its_rules_give_for_the_bids_in_time(
        bidders in prop::collection::vec(bidder(), 0..6),
        reserve in 0u128..1_200,
        second_price in any::<bool>(),
    ) {
        let pricing = if second_price { Pricing::SecondPrice } else { Pricing::FirstPrice };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let (awarded, expected) = runtime.block_on(run(&bidders, reserve, pricing));
        prop_assert_eq!(awarded, expected, "bidders {:?}, reserve {}, {:?}", bidders, reserve, pricing);
    }
}
