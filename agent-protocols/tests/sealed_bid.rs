//! A sealed-bid auction over messages: signed bids, the deadline, a forger, and the
//! winner and price exactly as the auction's rule gives for the bids that count.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Context, Identity};
use agent_protocols::auction::Award;
use agent_protocols::dialogue::{DialogueError, RefusalCause};
use agent_protocols::sealed_bid::{self, BidAnswer, BidError, Bidder, CallForBids, Pricing, SignedBid};
use agent_protocols::settlement::{self, Sales};

mod common;
use common::floor::{Lots, FUNDS};
use common::paid::Paid;

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

/// Adds a bidder whose agent key is `seed`'s, signing its bids with `signer`'s key.
fn add(bureau: &Bureau, seed: &str, signer: &str, amount: Option<u128>, delay: Duration) -> Address {
    let mut agent = Agent::builder(seed).seed(seed).build().unwrap();
    sealed_bid::serve(
        &mut agent,
        Identity::from_seed(signer),
        Arc::new(Fixed { amount, delay }),
        Duration::from_secs(1),
    );
    bureau.add(agent).unwrap()
}

#[tokio::test]
async fn the_winner_and_price_follow_the_rule_for_the_bids_that_count() {
    let bureau = Bureau::new().unwrap();
    let now = Duration::ZERO;
    let low = add(&bureau, "bidder low", "bidder low", Some(50), now);
    let high = add(&bureau, "bidder high", "bidder high", Some(80), now);
    let mid = add(&bureau, "bidder mid", "bidder mid", Some(65), now);
    let passer = add(&bureau, "bidder pass", "bidder pass", None, now);
    let forger = add(&bureau, "bidder forger", "someone else", Some(500), now);
    let late = add(&bureau, "bidder late", "bidder late", Some(900), Duration::from_millis(800));
    let below = add(&bureau, "bidder below", "bidder below", Some(5), now);
    let mut auctioneer = Agent::builder("auctioneer").build().unwrap();
    let house = sealed_bid::Auctioneer::serve(&mut auctioneer, Sales::new());
    let auctioneer = bureau.add(auctioneer).unwrap();
    let ctx = bureau.context(auctioneer).unwrap();
    let bidders = [low, high, mid, passer, forger, late, below];

    let sealed =
        house.run(&ctx, &bidders, &"lot 7", 10, Duration::from_millis(300), Pricing::SecondPrice).await.unwrap();
    assert_eq!(sealed.award, Some(Award { winner: high, price: 65 }), "{sealed:?}");
    let mut counted: Vec<Address> = sealed.bids.iter().map(|b| b.bidder).collect();
    counted.sort();
    let mut expected = vec![low, high, mid, below];
    expected.sort();
    assert_eq!(counted, expected, "the forger and the late bidder do not count; the passer did not bid");
    assert!(
        matches!(sealed.refused.as_slice(), [(who, BidError::NotTheBidder { .. })] if *who == forger),
        "{:?}",
        sealed.refused
    );
    // The bids are evidence: each verifies on its own, and a changed amount does not.
    let auction = sealed.bids[0].auction.clone();
    for bid in &sealed.bids {
        bid.check(&auction, bid.bidder).unwrap();
    }
    let mut tampered = sealed.bids[0].clone();
    tampered.amount += 1;
    assert!(matches!(tampered.check(&auction, tampered.bidder), Err(BidError::Signature(_))));

    let first =
        house.run(&ctx, &[low, mid], &"lot 8", 10, Duration::from_millis(300), Pricing::FirstPrice).await.unwrap();
    assert_eq!(first.award, Some(Award { winner: mid, price: 65 }));
    bureau.shutdown().await.unwrap();
}

/// A bidder that answers a call twice, written by hand. The sealed-bid rule is one sealed
/// bid per bidder: the second answer is refused (its dialogue is `sealed`, no longer
/// `called`), it does not replace the first, and its sender is told so with a typed cause.
/// Had it replaced the first (70 by 500), the rogue would have won; with the first
/// standing, the honest bidder wins at the rogue's 70, and pays it once on the ledger: the
/// rogue's two bids move no money.
#[tokio::test]
async fn a_second_sealed_bid_is_refused_and_the_first_stands() {
    const TWICE: &str = "bidder twice";
    let p = Paid::new("sealed twice mint");
    let honest = add(&p.bureau, "bidder honest", "bidder honest", Some(100), Duration::ZERO);
    let mut rogue = Agent::builder(TWICE).seed(TWICE).build().unwrap();
    rogue.on_message(|ctx: Context, from: Address, call: CallForBids| async move {
        let me = Identity::from_seed(TWICE);
        for amount in [70, 500] {
            let sent = ctx.send(from, BidAnswer::Bid(SignedBid::sign(&me, &call.auction, amount))).await;
            assert!(sent.is_ok(), "{sent:?}");
        }
    });
    rogue.on_message(|_: Context, _: Address, _: sealed_bid::Closed| std::future::ready(()));
    let told = common::hear_refusals(&mut rogue);
    let rogue = p.bureau.add(rogue).unwrap();
    let mut auctioneer = Agent::builder("auctioneer").build().unwrap();
    let sales = Sales::new();
    let house = sealed_bid::Auctioneer::serve(&mut auctioneer, sales.clone());
    settlement::serve_sales(&mut auctioneer, sales, Arc::new(Lots));
    let auctioneer = p.bureau.add(auctioneer).unwrap();
    for bidder in [honest, rogue] {
        p.fund(bidder, FUNDS).await;
    }
    let ctx = p.bureau.context(auctioneer).unwrap();

    let sealed = house
        .run(&ctx, &[honest, rogue], &"lot 9", 10, Duration::from_millis(300), Pricing::SecondPrice)
        .await
        .unwrap();
    assert_eq!(sealed.award, Some(Award { winner: honest, price: 70 }), "{sealed:?}");
    let rogues: Vec<u128> = sealed.bids.iter().filter(|b| b.bidder == rogue).map(|b| b.amount).collect();
    assert_eq!(rogues, [70], "the first bid stands, alone");
    assert!(
        matches!(sealed.refused.as_slice(), [(who, BidError::Refused(DialogueError::OutOfOrder { .. }))] if *who == rogue),
        "{:?}",
        sealed.refused
    );
    let told = common::once_told(&told).await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!((told[0].cause, told[0].state()), (RefusalCause::OutOfOrder, Some("sealed")), "{told:?}");
    p.settles(&[(honest, FUNDS - 70), (rogue, FUNDS), (auctioneer, 70)]).await;
    p.bureau.shutdown().await.unwrap();
}
