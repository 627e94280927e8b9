//! A Dutch bidder that takes twice, written by hand. The rule is one take per bidder, the
//! first ending the clock: the second is refused (from the `taken` dialogue, or the closed
//! one if the close came first), its sender is told with a typed cause, and it does not
//! count: the first take alone is the award.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Identity};
use agent_protocols::auction::Award;
use agent_protocols::dialogue::{DialogueError, RefusalCause};
use agent_protocols::dutch::{self, Clock, Take};
use agent_protocols::sealed_bid::{BidError, SignedBid};
use agent_protocols::settlement::Sales;

mod common;

#[tokio::test]
async fn a_second_dutch_take_is_refused_and_the_first_is_the_award() {
    const TWICE: &str = "takes twice";
    let bureau = Bureau::new().unwrap();
    let taken = Arc::new(AtomicBool::new(false));
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
    rogue.on_message(|_ctx: Context, _from: Address, _closed: dutch::Closed| async {});
    let told = common::hear_refusals(&mut rogue);
    let rogue = bureau.add(rogue).unwrap();
    let mut auctioneer = Agent::builder("auctioneer").build().unwrap();
    let house = dutch::Auctioneer::serve(&mut auctioneer, Sales::new());
    let auctioneer = bureau.add(auctioneer).unwrap();
    let ctx = bureau.context(auctioneer).unwrap();

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
    bureau.shutdown().await.unwrap();
}
