//! Wrong-role and misplaced auction messages between real agents in one bureau, settling on
//! a ledger: a bidder that sends what only an auctioneer may send (an opening, a price, a
//! close with an award), to the auctioneer or to another bidder; an auctioneer whose
//! opening reaches another auctioneer; a bid in a dialogue its sender does not have; a bid
//! after the close. Each is refused with the dialogue's typed error, its sender is told
//! which dialogue and state it hit, the dialogue is unchanged, the auction's outcome is the
//! honest one, and no money moves but the honest winner's payment.

use std::sync::Arc;
use std::time::Duration;

mod common;
use common::floor::{paid_once, Floor, DELIVER_WITHIN, ROGUE};
use common::UpTo;

use agent_core::{Agent, Bureau, Identity, Message};
use agent_protocols::auction::{dialogue_of, Award, BIDDER};
use agent_protocols::dialogue::{Dialogues, RefusalCause, Refused, Standing};
use agent_protocols::double_auction::{self, RoundOpen, SignedOrder};
use agent_protocols::sealed_bid::{self, BidAnswer, CallForBids, Pricing, SignedBid};
use agent_protocols::settlement::Sales;
use agent_protocols::{dutch, english};
use parking_lot::Mutex;

/// A refusal from the wrong role: the state the dialogue is in, and what may follow there.
fn out_of_order(refused: &Refused, state: &str, expected: &str) {
    assert_eq!(refused.standing, Standing::Open { state: state.into() }, "{refused:?}");
    assert!(refused.expected.iter().any(|e| e == expected), "expected {expected}: {refused:?}");
    assert_eq!(refused.cause, RefusalCause::OutOfOrder, "{refused:?}");
}

/// A refusal of a dialogue its sender does not have.
fn unknown(refused: &Refused) {
    assert_eq!((&refused.standing, refused.expected.len()), (&Standing::NoSuchDialogue, 0), "{refused:?}");
    assert_eq!(refused.cause, RefusalCause::UnknownDialogue, "{refused:?}");
}

#[tokio::test]
async fn english_a_bidders_close_price_or_opening_is_refused_and_the_honest_winner_alone_pays() {
    let f = Floor::new().await;
    let (english, ctx, bidders) = (f.english.clone(), f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let terms = english::Terms { reserve: 10, increment: 5, open_for: Duration::from_millis(800) };
    let run = tokio::spawn(async move { english.run(&ctx, &bidders, &"lot 1", terms).await.unwrap() });
    let auction = f.rogue_ears.opened().await;
    let dialogues = f.english.dialogues().unwrap();
    let mine = dialogue_of(&auction, &f.rogue);
    let raise = format!("{} from bidder", english::Raise::NAME);
    let rogue_wallet = Some(f.wallet(f.rogue));

    // To the auctioneer: a close awarding the rogue, a price, an opening of the auction.
    let award = Some(Award { winner: f.rogue, price: 1 });
    let close = english::Closed { auction: auction.clone(), award, pay_to: rogue_wallet };
    out_of_order(&f.refused(f.auctioneer, close, mine, dialogues).await, "open", &raise);
    let standing = english::Standing { auction: auction.clone(), leader: f.rogue, amount: 1, minimum: 2 };
    out_of_order(&f.refused(f.auctioneer, standing, mine, dialogues).await, "open", &raise);
    let reopen = english::Opening {
        auction: auction.clone(),
        item: serde_json::json!("lot 1"),
        reserve: 0,
        increment: 1,
        closes_at_ms: u64::MAX,
    };
    out_of_order(&f.refused(f.auctioneer, reopen, mine, dialogues).await, "open", &raise);

    // To the honest bidder: a close awarding it at 100, to be paid to the rogue. It is not
    // the rogue's auction to close: the honest bidder refuses it and pays nothing.
    let honest_dialogue = dialogue_of(&auction, &f.honest);
    let storage = f.ctx(f.honest).storage().unwrap();
    let honest_side = || Dialogues::load(english::rules(), BIDDER, storage.clone()).unwrap().get(honest_dialogue);
    for _ in 0..300 {
        if honest_side().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(honest_side().map(|d| d.state).as_deref(), Some("open"), "the honest bidder is in the auction");
    let award = Some(Award { winner: f.honest, price: 100 });
    let fake = english::Closed { auction: auction.clone(), award, pay_to: rogue_wallet };
    let refused = f.refused_in(f.honest, fake, honest_dialogue, honest_side).await;
    assert_eq!(refused.standing, Standing::NoSuchDialogue, "told nothing of another's dialogue: {refused:?}");
    assert_eq!(refused.cause, RefusalCause::NotAParty, "{refused:?}");

    // A raise for an auction the rogue is not in.
    let elsewhere = "an auction run elsewhere";
    let stray = english::Raise(SignedBid::sign(&Identity::from_seed(ROGUE), elsewhere, 50));
    unknown(&f.refused(f.auctioneer, stray, dialogue_of(elsewhere, &f.rogue), dialogues).await);

    // Another auctioneer's opening reaches this auctioneer: refused, and that auction gets
    // no bid from it.
    let (other_english, other_ctx, invited) = (f.other_english.clone(), f.ctx(f.other), [f.auctioneer]);
    let terms = english::Terms { reserve: 1, increment: 1, open_for: Duration::from_millis(300) };
    let other_outcry = other_english.run(&other_ctx, &invited, &"lot 2", terms).await.unwrap();
    let refused = f.other_ears.refusal(dialogue_of(&other_outcry.auction, &f.other)).await;
    unknown(&refused);
    assert_eq!((other_outcry.award, other_outcry.bids.len()), (None, 0), "{other_outcry:?}");

    // The honest outcome: the honest bidder alone bid, and won at the reserve.
    let outcry = run.await.unwrap();
    assert_eq!(outcry.award, Some(Award { winner: f.honest, price: 10 }), "{outcry:?}");
    assert!(outcry.bids.iter().all(|b| b.bidder == f.honest), "{outcry:?}");

    // After the close, a raise is refused as late, and changes nothing.
    let late = english::Raise(SignedBid::sign(&Identity::from_seed(ROGUE), &auction, 1_000));
    let refused = f.refused(f.auctioneer, late, mine, dialogues).await;
    assert_eq!(refused.standing, Standing::Closed { state: "closed".into() }, "{refused:?}");
    assert!(refused.deadline_ms.is_some(), "the close time that passed: {refused:?}");
    assert_eq!(refused.cause, RefusalCause::Late, "{refused:?}");

    // On the ledger: the honest winner paid its price once; no one else paid or was paid.
    paid_once(&f, 10).await;
    f.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn dutch_sealed_and_double_auctions_refuse_an_auctioneers_messages_from_a_bidder() {
    let f = Floor::new().await;
    let bidders = [f.honest, f.rogue];
    let rogue_wallet = Some(f.wallet(f.rogue));
    let award = Some(Award { winner: f.rogue, price: 1 });

    // Dutch: while the clock runs, the rogue calls a price and closes the auction.
    let (dutch, ctx) = (f.dutch.clone(), f.ctx(f.auctioneer));
    let terms = dutch::Terms { start: 200, step: 10, floor: 50, tick_every: Duration::from_millis(100) };
    let run = tokio::spawn(async move { dutch.run(&ctx, &bidders, &"lot 3", terms).await.unwrap() });
    let auction = f.rogue_ears.opened().await;
    let (dialogues, mine) = (f.dutch.dialogues().unwrap(), dialogue_of(&auction, &f.rogue));
    let take = format!("{} from bidder", dutch::Take::NAME);
    let clock = dutch::Clock { auction: auction.clone(), item: serde_json::json!("lot 3"), tick: 19, price: 1 };
    out_of_order(&f.refused(f.auctioneer, clock, mine, dialogues).await, "calling", &take);
    let close = dutch::Closed { auction: auction.clone(), award, pay_to: rogue_wallet };
    out_of_order(&f.refused(f.auctioneer, close, mine, dialogues).await, "calling", &take);
    let descent = run.await.unwrap();
    assert_eq!(descent.award, Some(Award { winner: f.honest, price: 100 }), "{descent:?}");
    f.rogue_ears.auctions.lock().clear();

    // Sealed: while the call stands, the rogue calls for bids and closes the auction.
    let (sealed, ctx) = (f.sealed.clone(), f.ctx(f.auctioneer));
    let run = tokio::spawn(async move {
        sealed.run(&ctx, &bidders, &"lot 4", 20, Duration::from_millis(500), Pricing::SecondPrice).await.unwrap()
    });
    let auction = f.rogue_ears.opened().await;
    let (dialogues, mine) = (f.sealed.dialogues().unwrap(), dialogue_of(&auction, &f.rogue));
    let call = CallForBids { auction: auction.clone(), item: serde_json::json!("lot 4"), reserve: 0, deadline_ms: 0 };
    out_of_order(&f.refused(f.auctioneer, call, mine, dialogues).await, "called", "Bid from bidder");
    let close = sealed_bid::Closed { auction: auction.clone(), award, pay_to: rogue_wallet };
    out_of_order(&f.refused(f.auctioneer, close, mine, dialogues).await, "called", "Pass from bidder");
    // A sealed bid for the Dutch auction, which has closed: no such dialogue among the
    // sealed-bid auctions.
    let dutch_auction = descent.auction.clone();
    let misplaced = BidAnswer::Bid(SignedBid::sign(&Identity::from_seed(ROGUE), &dutch_auction, 1_000));
    unknown(&f.refused(f.auctioneer, misplaced, dialogue_of(&dutch_auction, &f.rogue), dialogues).await);
    let outcome = run.await.unwrap();
    // Second price with one bid: the reserve.
    assert_eq!(outcome.award, Some(Award { winner: f.honest, price: 20 }), "{outcome:?}");
    f.rogue_ears.auctions.lock().clear();

    // Double auction: while the round is open, the rogue opens it and clears it.
    let (house, ctx) = (f.house.clone(), f.ctx(f.auctioneer));
    let run =
        tokio::spawn(async move { house.run_round(&ctx, &bidders, "kWh", Duration::from_millis(500)).await.unwrap() });
    let round = f.rogue_ears.opened().await;
    let (dialogues, mine) = (f.house.dialogues().unwrap(), dialogue_of(&round, &f.rogue));
    let order = format!("{} from bidder", SignedOrder::NAME);
    let open = RoundOpen { round: round.clone(), good: "kWh".into(), closes_at_ms: u64::MAX };
    out_of_order(&f.refused(f.auctioneer, open, mine, dialogues).await, "open", &order);
    let cleared = double_auction::Cleared { round: round.clone(), price: Some(1), trades: Vec::new() };
    out_of_order(&f.refused(f.auctioneer, cleared, mine, dialogues).await, "open", &order);
    let outcome = run.await.unwrap();
    assert_eq!(
        (outcome.orders.len(), outcome.clearing.as_ref()),
        (1, None),
        "the honest bid alone, no ask: {outcome:?}"
    );

    // On the ledger: the honest bidder paid its two wins (100 and 20), and nothing else moved.
    paid_once(&f, 120).await;
    f.bureau.shutdown().await.unwrap();
}

/// Both sides handle the auctioneer's messages (the bidder to act on them, the auctioneer to
/// refuse them), so one agent cannot be both of one auction kind: it is refused when added,
/// not left to misroute.
#[tokio::test]
async fn an_agent_cannot_both_run_and_bid_in_one_kind_of_auction() {
    let bureau = Bureau::new().unwrap();
    let mut both = Agent::builder("both").seed("both").build().unwrap();
    english::Auctioneer::serve(&mut both, Sales::new());
    let strategy = Arc::new(UpTo { max: 1, settled: Mutex::default() });
    english::serve(&mut both, Identity::from_seed("both"), strategy.clone(), DELIVER_WITHIN);
    let added = bureau.add(both);
    assert!(matches!(added, Err(agent_core::BureauError::HandlerConflict { .. })), "{added:?}");

    // Of different kinds, it may.
    let mut mixed = Agent::builder("mixed").seed("mixed").build().unwrap();
    english::Auctioneer::serve(&mut mixed, Sales::new());
    dutch::serve(&mut mixed, Identity::from_seed("mixed"), strategy, DELIVER_WITHIN);
    bureau.add(mixed).unwrap();
    bureau.shutdown().await.unwrap();
}
