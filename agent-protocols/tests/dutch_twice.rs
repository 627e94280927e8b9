//! Dutch takes that do not count: a bidder that takes twice, written by hand, and two
//! bidders whose takes cross, one naming an earlier (higher) price than the other. The rule
//! is that the first take to reach the auctioneer stops the clock and is the award: a
//! bidder's second take is refused by its dialogue and its sender told with a typed cause,
//! and another bidder's take that reaches the auctioneer after the first, even one naming an
//! earlier tick, is refused (`BidError::ClockStopped`) and does not count. The winner pays
//! once on the ledger, and every balance and the supply are checked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Identity};
use agent_protocols::auction::{self, Award};
use agent_protocols::dialogue::{DialogueError, RefusalCause};
use agent_protocols::dutch::{self, Clock, Take};
use agent_protocols::sealed_bid::{BidError, SignedBid};
use agent_protocols::settlement::{self, Sales, Settled, SettlementError};
use parking_lot::Mutex;
use tokio::sync::Notify;

mod common;
use common::floor::{Lots, DELIVER_WITHIN, FUNDS};
use common::paid::Paid;

/// A Dutch auctioneer that delivers what it sells, in `p`'s bureau.
fn auctioneer(p: &Paid) -> (Address, dutch::Auctioneer) {
    let mut agent = Agent::builder("auctioneer").build().unwrap();
    let sales = Sales::new();
    let house = dutch::Auctioneer::serve(&mut agent, sales.clone());
    settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
    (p.bureau.add(agent).unwrap(), house)
}

#[tokio::test]
async fn a_second_dutch_take_is_refused_and_the_first_is_the_award_paid_once() {
    const TWICE: &str = "takes twice";
    let p = Paid::new("dutch twice mint");
    let taken = Arc::new(AtomicBool::new(false));
    let paid: Arc<Mutex<Vec<bool>>> = Arc::default();
    let mut rogue = Agent::builder(TWICE).seed(TWICE).build().unwrap();
    rogue.on_message(move |ctx: Context, from: Address, clock: Clock| {
        let taken = taken.clone();
        async move {
            if clock.price > 150 || taken.swap(true, Ordering::SeqCst) {
                return;
            }
            let me = Identity::from_seed(TWICE);
            for _ in 0..2 {
                let sent = ctx.send(from, Take(SignedBid::sign(&me, &clock.auction, clock.price))).await;
                assert!(sent.is_ok(), "{sent:?}");
            }
        }
    });
    // It pays for what it won as an honest bidder does: once, on delivery.
    let payments = paid.clone();
    rogue.on_message(move |ctx: Context, from: Address, closed: dutch::Closed| {
        let payments = payments.clone();
        async move {
            let (Some(award), Some(pay_to)) = (closed.award, closed.pay_to) else { return };
            if award.winner != ctx.address() {
                return;
            }
            let deal = auction::deal_of(&closed.auction);
            tokio::spawn(async move {
                let settled = settlement::pay_on_delivery(&ctx, from, pay_to, award.price, deal, DELIVER_WITHIN).await;
                payments.lock().push(matches!(settled, Ok(Settled::Paid { .. })));
            });
        }
    });
    let told = common::hear_refusals(&mut rogue);
    let rogue = p.bureau.add(rogue).unwrap();
    let (auctioneer, house) = auctioneer(&p);
    p.fund(rogue, FUNDS).await;
    let ctx = p.bureau.context(auctioneer).unwrap();

    let terms = dutch::Terms { start: 200, step: 10, floor: 50, tick_every: Duration::from_millis(60) };
    let descent = house.run(&ctx, &[rogue], &"lot 3", terms).await.unwrap();
    assert_eq!(descent.award, Some(Award { winner: rogue, price: 150 }), "{descent:?}");
    assert_eq!(descent.takes.len(), 1, "the first take alone counts: {descent:?}");
    let one_take = |e: &DialogueError| {
        matches!(e, DialogueError::OutOfOrder { state, .. } if state == "taken")
            || matches!(e, DialogueError::Closed { .. })
    };
    assert!(
        matches!(descent.refused.as_slice(), [(who, BidError::Refused(e))] if *who == rogue && one_take(e))
            || descent.refused.is_empty(),
        "{:?}",
        descent.refused
    );
    let told = common::once_told(&told).await;
    assert_eq!(told.len(), 1, "{told:?}");
    let refused = (told[0].cause, told[0].state());
    assert!(
        matches!(refused, (RefusalCause::OutOfOrder, Some("taken")) | (RefusalCause::Closed, Some("closed"))),
        "{told:?}"
    );
    // Two takes, one sale, paid once.
    p.settles(&[(rogue, FUNDS - 150), (auctioneer, 150)]).await;
    paid_once(&paid).await;
    p.bureau.shutdown().await.unwrap();
}

/// What a [`Taker`] does once it has decided to take, before its take is sent: lets another
/// taker go on, or waits until it may.
enum Cue {
    Open(Arc<Notify>),
    Await(Arc<Notify>),
}

/// Takes at `at` or below, once its cues are done; records how its payments ended.
struct Taker {
    at: u128,
    cues: Vec<Cue>,
    paid: Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl dutch::Bidder for Taker {
    async fn take(&self, _item: &serde_json::Value, price: u128) -> bool {
        if price > self.at {
            return false;
        }
        for cue in &self.cues {
            match cue {
                Cue::Open(gate) => gate.notify_one(),
                Cue::Await(gate) => gate.notified().await,
            }
        }
        true
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.paid.lock().push(matches!(settled, Ok(Settled::Paid { .. })));
    }
}

/// The clock of the crossing takes: 200 at tick 0, 170 at tick 3, 150 at tick 5. A tick is
/// long beside the takes, which are sent one right after the other early in tick 5.
const CLOCK: dutch::Terms = dutch::Terms { start: 200, step: 10, floor: 50, tick_every: Duration::from_millis(150) };

/// Two takes reach the auctioneer one right after the other in tick 5, before it closes
/// the auction: one naming tick 3's 170 (decided at tick 3, sent when `high`'s cues let it),
/// one naming tick 5's 150. `first_is_high` says whose take is sent, and arrives, first:
/// that one is the award, and the other is refused as coming after the clock stopped.
/// On the test's one-thread runtime the second is sent before the auctioneer's agent runs
/// again, so both are on the auction's line when the first stops the clock; that the second
/// is refused as `ClockStopped`, not by its closed dialogue, shows it was. Only the winner
/// pays.
async fn crossing_takes(first_is_high: bool) {
    let p = Paid::new("dutch crossing mint");
    let (one, two) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (high_cues, low_cues) = if first_is_high {
        // At tick 5, `low` lets `high` send its take and waits until it has.
        (vec![Cue::Await(one.clone()), Cue::Open(two.clone())], vec![Cue::Open(one), Cue::Await(two)])
    } else {
        // `high` decided at tick 3, and sends once `low` has sent its take at tick 5.
        (vec![Cue::Await(one.clone())], vec![Cue::Open(one)])
    };
    let high = Arc::new(Taker { at: 170, cues: high_cues, paid: Mutex::default() });
    let low = Arc::new(Taker { at: 150, cues: low_cues, paid: Mutex::default() });
    let add = |name: &str, taker: Arc<Taker>| {
        let mut agent = Agent::builder(name).seed(name).build().unwrap();
        dutch::serve(&mut agent, Identity::from_seed(name), taker, DELIVER_WITHIN);
        p.bureau.add(agent).unwrap()
    };
    let (high_bidder, low_bidder) = (add("takes at 170", high.clone()), add("takes at 150", low.clone()));
    let (auctioneer, house) = auctioneer(&p);
    for bidder in [high_bidder, low_bidder] {
        p.fund(bidder, FUNDS).await;
    }

    let ctx = p.bureau.context(auctioneer).unwrap();
    let descent = house.run(&ctx, &[high_bidder, low_bidder], &"lot 4", CLOCK).await.unwrap();
    let (winner, price, loser) =
        if first_is_high { (high_bidder, 170, low_bidder) } else { (low_bidder, 150, high_bidder) };
    assert_eq!(descent.award, Some(Award { winner, price }), "the first take to arrive: {descent:?}");
    assert_eq!(descent.ticks, 6, "the clock called ticks 0 to 5: {descent:?}");
    assert!(matches!(descent.takes.as_slice(), [take] if take.bidder == winner), "{descent:?}");
    assert_eq!(descent.refused, vec![(loser, BidError::ClockStopped)], "reached the auction, after the first");

    let (winner_paid, loser_paid) = if first_is_high { (&high.paid, &low.paid) } else { (&low.paid, &high.paid) };
    p.settles(&[(winner, FUNDS - price), (loser, FUNDS), (auctioneer, price)]).await;
    paid_once(winner_paid).await;
    assert!(loser_paid.lock().is_empty(), "the loser paid nothing");
    p.bureau.shutdown().await.unwrap();
}

/// The bug this guards against: the take naming the earlier tick came second, and won.
#[tokio::test]
async fn a_take_naming_an_earlier_tick_that_arrives_after_the_first_take_does_not_count() {
    crossing_takes(false).await;
}

#[tokio::test]
async fn a_take_naming_an_earlier_tick_that_arrives_first_wins_at_its_price() {
    crossing_takes(true).await;
}

/// Waits (at most 5 s) for the buyer's payment to end, then checks it ended paid, once. The
/// balances settle when the seller releases the escrow; the buyer learns of it a moment
/// later, from the seller's answer.
async fn paid_once(paid: &Mutex<Vec<bool>>) {
    common::cnp::wait_for(|| !paid.lock().is_empty()).await;
    assert_eq!(*paid.lock(), [true]);
}
