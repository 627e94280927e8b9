//! Bids and orders over the wire that the bidder's own key signed, but whose signature does
//! not cover what was sent (the amount changed after signing, or the signature's bytes
//! flipped); a Dutch take at a price the clock has not called; a sell order naming no
//! wallet. Each counts for nothing: the auctioneer lists it with its typed reason, the
//! honest bidder wins as it would alone, and no money moves but its payment.
//!
//! The forger signs with the rogue's own key, as the rogue: the key and the sender agree,
//! so only the signature check (or the clock's, or the wallet's) stands in its way.

use std::time::Duration;

mod common;
use common::floor::{paid_once, Floor, FUNDS, ROGUE};

use agent_core::{Address, Identity};
use agent_protocols::auction::Award;
use agent_protocols::double_auction::{OrderError, Side, SignedOrder};
use agent_protocols::dutch;
use agent_protocols::english;
use agent_protocols::sealed_bid::{BidAnswer, BidError, Pricing, SignedBid};

fn rogue_key() -> Identity {
    Identity::from_seed(ROGUE)
}

/// The rogue's bid of 10 in `auction`, its amount raised to 1,000 after signing.
fn raised_after_signing(auction: &str) -> SignedBid {
    let mut bid = SignedBid::sign(&rogue_key(), auction, 10);
    bid.amount = 1_000;
    bid
}

/// The rogue's bid of `amount` in `auction`, one bit of its signature flipped.
fn flipped(auction: &str, amount: u128) -> SignedBid {
    let mut bid = SignedBid::sign(&rogue_key(), auction, amount);
    bid.signature[0] ^= 1;
    bid
}

/// Whether every refusal is the rogue's, for a bad signature, and there are `count`.
fn bad_signatures(refused: &[(Address, BidError)], rogue: Address, count: usize) -> bool {
    refused.len() == count && refused.iter().all(|(who, why)| *who == rogue && matches!(why, BidError::Signature(_)))
}

#[tokio::test]
async fn english_raises_the_rogue_signed_but_not_as_sent_do_not_stand() {
    let f = Floor::new().await;
    let (english, ctx, bidders) = (f.english.clone(), f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let terms = english::Terms { reserve: 10, increment: 5, open_for: Duration::from_millis(600) };
    let run = tokio::spawn(async move { english.run(&ctx, &bidders, &"lot 1", terms).await.unwrap() });
    let auction = f.rogue_ears.opened().await;
    let rogue = f.ctx(f.rogue);
    rogue.send(f.auctioneer, english::Raise(raised_after_signing(&auction))).await.unwrap();
    rogue.send(f.auctioneer, english::Raise(flipped(&auction, 500))).await.unwrap();

    let outcry = run.await.unwrap();
    assert!(bad_signatures(&outcry.refused, f.rogue, 2), "{outcry:?}");
    assert!(outcry.bids.iter().all(|b| b.bidder == f.honest), "{outcry:?}");
    assert_eq!(outcry.award, Some(Award { winner: f.honest, price: 10 }), "{outcry:?}");
    paid_once(&f, 10).await;
    f.bureau.shutdown().await.unwrap();
}

/// The terms of the Dutch auctions here: the honest bidder (up to 100) takes at tick 10.
fn clock() -> dutch::Terms {
    dutch::Terms { start: 200, step: 10, floor: 50, tick_every: Duration::from_millis(60) }
}

#[tokio::test]
async fn dutch_a_take_the_rogue_signed_but_not_as_sent_does_not_stop_the_clock() {
    let f = Floor::new().await;
    let (dutch, ctx, bidders) = (f.dutch.clone(), f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let run = tokio::spawn(async move { dutch.run(&ctx, &bidders, &"lot 2", clock()).await.unwrap() });
    let auction = f.rogue_ears.opened().await;
    f.ctx(f.rogue).send(f.auctioneer, dutch::Take(flipped(&auction, 200))).await.unwrap();

    let descent = run.await.unwrap();
    assert!(bad_signatures(&descent.refused, f.rogue, 1), "{descent:?}");
    assert_eq!(descent.award, Some(Award { winner: f.honest, price: 100 }), "{descent:?}");
    assert_eq!(descent.ticks, 11, "the clock ran on to the honest take at 100");
    paid_once(&f, 100).await;
    f.bureau.shutdown().await.unwrap();
}

/// Validly signed, at 60: a price the clock calls at tick 14, sent at tick 0. Taken as sent,
/// it would stop the clock then and win at 60, below every price called.
#[tokio::test]
async fn dutch_a_take_at_a_price_not_yet_called_is_refused_and_does_not_win() {
    let f = Floor::new().await;
    let (dutch, ctx, bidders) = (f.dutch.clone(), f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let run = tokio::spawn(async move { dutch.run(&ctx, &bidders, &"lot 3", clock()).await.unwrap() });
    let auction = f.rogue_ears.opened().await;
    f.ctx(f.rogue).send(f.auctioneer, dutch::Take(SignedBid::sign(&rogue_key(), &auction, 60))).await.unwrap();

    let descent = run.await.unwrap();
    assert_eq!(descent.refused, vec![(f.rogue, BidError::NotCalled(60))], "{descent:?}");
    assert_eq!(descent.award, Some(Award { winner: f.honest, price: 100 }), "{descent:?}");
    assert!(descent.takes.iter().all(|t| t.bidder == f.honest), "{descent:?}");
    paid_once(&f, 100).await;
    f.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn sealed_a_bid_the_rogue_signed_but_not_as_sent_does_not_count() {
    let f = Floor::new().await;
    let (sealed, ctx, bidders) = (f.sealed.clone(), f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let run = tokio::spawn(async move {
        sealed.run(&ctx, &bidders, &"lot 4", 20, Duration::from_millis(400), Pricing::SecondPrice).await.unwrap()
    });
    let auction = f.rogue_ears.opened().await;
    f.ctx(f.rogue).send(f.auctioneer, BidAnswer::Bid(raised_after_signing(&auction))).await.unwrap();

    let sealed = run.await.unwrap();
    assert!(bad_signatures(&sealed.refused, f.rogue, 1), "{sealed:?}");
    // Second price with one bid that counts: the reserve.
    assert_eq!(sealed.award, Some(Award { winner: f.honest, price: 20 }), "{sealed:?}");
    assert!(sealed.bids.iter().all(|b| b.bidder == f.honest), "{sealed:?}");
    paid_once(&f, 20).await;
    f.bureau.shutdown().await.unwrap();
}

/// Runs a round in which the honest trader buys 1 unit at up to 100 and the rogue sends
/// `order(round)`; checks it is refused for `why`, nothing clears, and no money moves.
async fn a_lone_rogue_ask_is_refused(order: impl FnOnce(&str, Address) -> SignedOrder, why: fn(&OrderError) -> bool) {
    let f = Floor::new().await;
    let (house, ctx, traders) = (f.house.clone(), f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let run =
        tokio::spawn(async move { house.run_round(&ctx, &traders, "kWh", Duration::from_millis(400)).await.unwrap() });
    let round = f.rogue_ears.opened().await;
    f.ctx(f.rogue).send(f.auctioneer, order(&round, f.wallet(f.rogue))).await.unwrap();

    let outcome = run.await.unwrap();
    assert!(matches!(outcome.refused.as_slice(), [(who, e)] if *who == f.rogue && why(e)), "{outcome:?}");
    assert!(outcome.orders.iter().all(|o| o.trader == f.honest), "{outcome:?}");
    assert_eq!((outcome.clearing, outcome.trades.len()), (None, 0), "the honest bid alone, no ask");
    // Had it traded, the buyer's payment would start once told: give it the time to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(f.strategy.settled.lock().is_empty(), "{:?}", f.strategy.settled.lock());
    for agent in [f.honest, f.rogue, f.auctioneer] {
        assert_eq!(f.balance(agent).await, FUNDS);
    }
    f.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn double_an_ask_the_rogue_signed_but_not_as_sent_does_not_trade() {
    // Signed at 1,000 (no buyer would meet it), sent at 1.
    let order = |round: &str, wallet: Address| {
        let mut order = SignedOrder::sign(&rogue_key(), round, Side::Sell, 1_000, 1, Some(wallet));
        order.price = 1;
        order
    };
    a_lone_rogue_ask_is_refused(order, |e| matches!(e, OrderError::Signature(_))).await;
}

/// As a trader whose agent has no ledger sends a sell order: validly signed, naming no
/// wallet. Counted, its buyer would be told to pay the trader's agent address, which is not
/// its wallet.
#[tokio::test]
async fn double_an_ask_naming_no_wallet_is_refused_and_does_not_trade() {
    let order = |round: &str, _: Address| SignedOrder::sign(&rogue_key(), round, Side::Sell, 1, 1, None);
    a_lone_rogue_ask_is_refused(order, |e| matches!(e, OrderError::NoWallet)).await;
}
