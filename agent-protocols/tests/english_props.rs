//! The English auction as it runs over messages, on random scripts of raises: its winner and
//! price are exactly what the documented rules give for the raises that arrived before the
//! close, in arrival order, computed here directly from the script (not from what the
//! auctioneer counted). Amounts are drawn from a few values, so equal raises from different
//! bidders are common: the rule that breaks such ties is the increment (an equal raise never
//! beats the standing bid, so the earlier stands). `tests/auction.rs` checks the rule
//! function itself; this checks the auction that calls it: which raises reach it, in time,
//! in order, and that the winner alone pays, exactly its price, on the ledger.
//!
//! The bidders are written by hand, as scripts: a served bidder checks its own dialogue and
//! sends nothing after the close, so only a hand-written one gets a late raise to the
//! auctioneer, which must refuse it, tell its sender, and count nothing of it.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Identity};
use agent_protocols::auction::{self, Award};
use agent_protocols::dialogue::{RefusalCause, Refused};
use agent_protocols::english::{self, Closed, Opening, Raise, Standing};
use agent_protocols::sealed_bid::SignedBid;
use agent_protocols::settlement::{self, Sales, Settled};
use parking_lot::Mutex;
use proptest::prelude::*;

mod common;
use common::floor::{Lots, DELIVER_WITHIN, FUNDS};
use common::sim_paid::{paused, SimPaid};

/// The time between one raise of the script and the next: raise `k` is sent `(k + 1) *
/// GAP` after the opening, and the auction closes half a gap after the last raise in time,
/// so no raise is sent at the close itself (that would be a race, not a rule).
const GAP: Duration = Duration::from_millis(40);
const BIDDERS: usize = 4;

/// A script: which bidder raises how much, one raise per gap, in order.
type Script = Vec<(usize, u128)>;

/// A bidder that sends its `raises` (each the raise's place `k` in the script, and its
/// amount) at their times after the opening, signed with its key, whatever its own clock
/// says of the close; pays for what it wins on delivery, as a served bidder does. Returns
/// it, and the refusals it is told.
fn scripted(name: &str, raises: Vec<(usize, u128)>, paid: Arc<Mutex<Vec<bool>>>) -> (Agent, Arc<Mutex<Vec<Refused>>>) {
    let mut agent = Agent::builder(name).seed(name).build().unwrap();
    let identity = Arc::new(Identity::from_seed(name));
    agent.on_message(move |ctx: Context, from: Address, opening: Opening| {
        let (raises, identity) = (raises.clone(), identity.clone());
        async move {
            let opened = tokio::time::Instant::now();
            // Its own task: the agent goes on hearing standing bids and the close meanwhile.
            tokio::spawn(async move {
                for (k, amount) in raises {
                    tokio::time::sleep_until(opened + GAP * (k as u32 + 1)).await;
                    let raise = Raise(SignedBid::sign(&identity, &opening.auction, amount));
                    ctx.send(from, raise).await.expect("the raise is delivered");
                }
            });
        }
    });
    agent.on_message(|_: Context, _: Address, _: Standing| std::future::ready(()));
    agent.on_message(move |ctx: Context, from: Address, closed: Closed| {
        let paid = paid.clone();
        async move {
            let (Some(award), Some(pay_to)) = (closed.award, closed.pay_to) else { return };
            if award.winner != ctx.address() {
                return;
            }
            let deal = auction::deal_of(&closed.auction);
            tokio::spawn(async move {
                let settled = settlement::pay_on_delivery(&ctx, from, pay_to, award.price, deal, DELIVER_WITHIN).await;
                paid.lock().push(matches!(settled, Ok(Settled::Paid { .. })));
            });
        }
    });
    let told = common::hear_refusals(&mut agent);
    (agent, told)
}

/// The documented rules, applied directly to the raises in time, in arrival order: the
/// first counts if it reaches the reserve; each later one if it also beats the standing bid
/// by the increment (at least 1). The last one counted wins and pays its amount.
fn expected(in_time: &[(Address, u128)], reserve: u128, increment: u128) -> Option<Award> {
    // Nothing trades at 0 (the ledger cannot pay it): a reserve of 0 is one of 1.
    let reserve = reserve.max(1);
    let mut standing: Option<Award> = None;
    for &(bidder, amount) in in_time {
        let needed = standing.map_or(reserve, |s| reserve.max(s.price + increment.max(1)));
        if amount >= needed {
            standing = Some(Award { winner: bidder, price: amount });
        }
    }
    standing
}

async fn run(script: &Script, in_time: usize, reserve: u128, increment: u128) -> Result<(), TestCaseError> {
    let p = SimPaid::new("english props mint");
    let paid: Arc<Mutex<Vec<bool>>> = Arc::default();
    let mut bidders = Vec::new();
    for i in 0..BIDDERS {
        let own: Vec<(usize, u128)> =
            script.iter().enumerate().filter(|(_, (who, _))| *who == i).map(|(k, (_, amount))| (k, *amount)).collect();
        let (agent, told) = scripted(&format!("bidder {i}"), own, paid.clone());
        let address = p.add(agent);
        p.fund(address, FUNDS).await;
        bidders.push((address, told));
    }
    let mut agent = Agent::builder("auctioneer").seed("auctioneer").build().unwrap();
    let sales = Sales::new();
    let house = english::Auctioneer::serve(&mut agent, sales.clone());
    settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
    let auctioneer = p.add(agent);

    let addresses: Vec<Address> = bidders.iter().map(|(address, _)| *address).collect();
    let open_for = GAP * in_time as u32 + GAP / 2;
    let terms = english::Terms { reserve, increment, open_for };
    let outcry = house.run(&p.context(auctioneer), &addresses, &"lot", terms).await.unwrap();

    let arrived: Vec<(Address, u128)> =
        script[..in_time].iter().map(|(who, amount)| (addresses[*who], *amount)).collect();
    let counted: Vec<(Address, u128)> = outcry.bids.iter().map(|b| (b.bidder, b.amount)).collect();
    prop_assert_eq!(&counted, &arrived, "the raises in time, in arrival order, and no late one");
    prop_assert!(outcry.refused.is_empty(), "{:?}", outcry.refused);
    let award = expected(&arrived, reserve, increment);
    prop_assert_eq!(outcry.award, award);

    // The winner alone paid, exactly its price, to the auctioneer; no token made or lost.
    let mut balances: Vec<(Address, u128)> = addresses.iter().map(|a| (*a, FUNDS)).collect();
    balances.push((auctioneer, 0));
    if let Some(Award { winner, price }) = award {
        balances.iter_mut().filter(|(a, _)| *a == winner).for_each(|(_, b)| *b -= price);
        balances.last_mut().unwrap().1 = price;
    }
    p.settles(&balances).await.map_err(TestCaseError::fail)?;
    prop_assert_eq!(paid.lock().clone(), if award.is_some() { vec![true] } else { vec![] });

    // Every late raise was refused as late, and its sender told (bounded wait: the last
    // raise is sent a few gaps after the close).
    for (i, (_, told)) in bidders.iter().enumerate() {
        let late = script[in_time..].iter().filter(|(who, _)| *who == i).count();
        for _ in 0..100 {
            if told.lock().len() >= late {
                break;
            }
            tokio::time::sleep(GAP).await;
        }
        let causes: Vec<RefusalCause> = told.lock().iter().map(|r| r.cause).collect();
        prop_assert_eq!(causes, vec![RefusalCause::Late; late], "bidder {}", i);
    }
    p.shutdown().await;
    Ok(())
}

/// A script of up to 10 raises by 4 bidders, from 12 amounts 5 apart, where a raise is often a
/// copy of the one before by another bidder (a tie); and how many of its raises come
/// before the close (the rest come after).
fn script() -> impl Strategy<Value = (Script, usize)> {
    // `None`: the previous raise's amount, by the next bidder.
    let raise = (0..BIDDERS, prop::option::weighted(0.6, (1u128..=12).prop_map(|a| a * 5)));
    prop::collection::vec(raise, 0..=10).prop_flat_map(|raises| {
        let mut script: Script = Vec::new();
        for (who, amount) in raises {
            let raise = match (amount, script.last()) {
                (Some(amount), _) => (who, amount),
                (None, Some(&(previous, amount))) => ((previous + 1) % BIDDERS, amount),
                (None, None) => (who, 5),
            };
            script.push(raise);
        }
        // At least a third in time: the rules need raises to apply to.
        let len = script.len();
        (Just(script), len / 3..=len)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn an_english_auction_awards_what_its_rules_give_for_the_raises_in_time(
        (script, in_time) in script(),
        reserve in 0u128..40,
        increment in 0u128..20,
    ) {
        paused(run(&script, in_time, reserve, increment))?;
    }
}
