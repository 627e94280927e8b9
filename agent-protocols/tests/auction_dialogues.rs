//! Each auction's messages are checked against its declared dialogue: a bid from the wrong
//! role, after the close, or in another auction's dialogue is refused with a typed error,
//! changes nothing, and its sender is told which dialogue and state it hit; nothing is
//! accepted after the close, and no money moves but the honest winners' payments (balances
//! and supply checked on the ledger).

use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Config, Identity, Message};
use agent_protocols::auction::{dialogue_of, AUCTIONEER, BIDDER};
use agent_protocols::dialogue::{DialogueError, Dialogues, RefusalCause, Refused, Rules, Standing, Step, EXPIRED};
use agent_protocols::double_auction::{self, RoundOpen, Side, SignedOrder};
use agent_protocols::sealed_bid::{self, BidAnswer, CallForBids, Pricing, SignedBid};
use agent_protocols::settlement::{Sales, Settled};
use agent_protocols::{dutch, english};

mod common;
use common::floor::{Floor, FUNDS, ROGUE};

fn bid(auction: &str, amount: u128) -> SignedBid {
    SignedBid::sign(&Identity::from_seed(ROGUE), auction, amount)
}

fn order(round: &str) -> SignedOrder {
    SignedOrder::sign(&Identity::from_seed(ROGUE), round, Side::Buy, 1_000, 5, None)
}

/// A refusal told as late: the dialogue and the state it was in, and the deadline.
fn is_late(refused: &Refused, state: &str) -> bool {
    refused.state() == Some(state) && refused.cause == RefusalCause::Late && refused.deadline_ms.is_some()
}

/// A refusal of a dialogue its sender does not have here.
fn is_unknown(refused: &Refused) -> bool {
    refused.standing == Standing::NoSuchDialogue && refused.cause == RefusalCause::UnknownDialogue
}

/// The dialogue's state and how many messages counted in it.
fn state_of(dialogues: &Dialogues, id: u128) -> Option<(String, usize)> {
    dialogues.get(id).map(|d| (d.state.into(), d.said.len()))
}

/// `message` (made for the auction it names) for `auction`, which has closed, is refused as
/// late; for `elsewhere`, an auction of another kind the rogue is in, as a dialogue it does
/// not have here. Neither changes or opens a dialogue.
async fn refused_after_the_close_and_elsewhere<M: Message>(
    f: &Floor,
    dialogues: &Dialogues,
    auction: &str,
    elsewhere: &str,
    message: impl Fn(&str) -> M,
) {
    let mine = dialogue_of(auction, &f.rogue);
    let before = state_of(dialogues, mine).expect("the rogue was invited");
    assert!(dialogues.rules().is_terminal(&before.0), "{before:?}");
    let refused = f.refused(f.auctioneer, message(auction), mine, dialogues).await;
    assert!(is_late(&refused, &before.0), "{} after the close: {refused:?}", M::NAME);

    let other = dialogue_of(elsewhere, &f.rogue);
    let refused = f.refused(f.auctioneer, message(elsewhere), other, dialogues).await;
    assert!(is_unknown(&refused), "{} in another auction's dialogue: {refused:?}", M::NAME);
    assert!(dialogues.get(other).is_none(), "a bid opens no dialogue");
}

/// Each auction runs with the honest bidder winning (in the double auction, buying from an
/// honest seller), the rogue in each and silent; then the rogue bids in each after its close
/// and in another's dialogue. Every award and the trade is paid once, and the rogue's bids
/// move no money: every balance and the supply are checked on the ledger.
#[tokio::test]
async fn bids_after_the_close_or_in_another_auctions_dialogue_are_refused_in_each_auction() {
    let f = Floor::new().await;
    let seller = f.seller(60).await;
    let (ctx, bidders) = (f.ctx(f.auctioneer), [f.honest, f.rogue]);
    let terms = english::Terms { reserve: 10, increment: 5, open_for: Duration::from_millis(300) };
    let english = f.english.run(&ctx, &bidders, &"lot 1", terms).await.unwrap();
    assert_eq!(english.award.map(|a| (a.winner, a.price)), Some((f.honest, 10)), "{english:?}");
    let terms = dutch::Terms { start: 130, step: 10, floor: 50, tick_every: Duration::from_millis(40) };
    let dutch = f.dutch.run(&ctx, &bidders, &"lot 2", terms).await.unwrap();
    assert_eq!(dutch.award.map(|a| (a.winner, a.price)), Some((f.honest, 100)), "{dutch:?}");
    let open_for = Duration::from_millis(300);
    let sealed = f.sealed.run(&ctx, &bidders, &"lot 3", 20, open_for, Pricing::SecondPrice).await.unwrap();
    assert_eq!(sealed.award.map(|a| (a.winner, a.price)), Some((f.honest, 20)), "{sealed:?}");
    let round = f.house.run_round(&ctx, &[f.honest, f.rogue, seller], "kWh", open_for).await.unwrap();
    // One bid (100) and one ask (60): one unit at the midpoint, 80.
    let traded = round.trades.iter().map(|t| (t.buyer, t.seller, t.quantity, t.price)).collect::<Vec<_>>();
    assert_eq!(traded, [(f.honest, seller, 1, 80)], "{round:?}");
    for outcome in [english.refused.len(), dutch.refused.len(), sealed.refused.len(), round.refused.len()] {
        assert_eq!(outcome, 0, "the rogue said nothing while the auctions ran");
    }

    let raise = |auction: &str| english::Raise(bid(auction, 1_000));
    refused_after_the_close_and_elsewhere(&f, f.english.dialogues().unwrap(), &english.auction, &dutch.auction, raise)
        .await;
    let take = |auction: &str| dutch::Take(bid(auction, 130));
    refused_after_the_close_and_elsewhere(&f, f.dutch.dialogues().unwrap(), &dutch.auction, &sealed.auction, take)
        .await;
    let answer = |auction: &str| BidAnswer::Bid(bid(auction, 1_000));
    refused_after_the_close_and_elsewhere(&f, f.sealed.dialogues().unwrap(), &sealed.auction, &round.round, answer)
        .await;
    refused_after_the_close_and_elsewhere(&f, f.house.dialogues().unwrap(), &round.round, &english.auction, order)
        .await;

    // Each award and the trade paid once; the rogue's late bids moved nothing.
    let won = 10 + 100 + 20;
    f.settles(&[
        (f.auctioneer, FUNDS + won),
        (f.honest, FUNDS - won - 80),
        (seller, FUNDS + 80),
        (f.rogue, FUNDS),
        (f.other, FUNDS),
    ])
    .await;
    for _ in 0..300 {
        if f.strategy.settled.lock().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let settled = f.strategy.settled.lock().clone();
    assert_eq!(settled.len(), 4, "three awards and a trade: {settled:?}");
    assert!(settled.iter().all(|s| matches!(s, Ok(Settled::Paid { .. }))), "{settled:?}");
    f.bureau.shutdown().await.unwrap();
}

/// Each auction's declared rules, with its opening step, its bidder's bid step and its close.
fn auctions() -> [(Rules, &'static str, &'static str, &'static str); 4] {
    [
        (english::rules(), english::Opening::NAME, english::Raise::NAME, english::Closed::NAME),
        (dutch::rules(), dutch::Clock::NAME, dutch::Take::NAME, dutch::Closed::NAME),
        (sealed_bid::rules(), CallForBids::NAME, "Bid", sealed_bid::Closed::NAME),
        (double_auction::rules(), RoundOpen::NAME, SignedOrder::NAME, double_auction::Cleared::NAME),
    ]
}

#[tokio::test]
async fn a_bid_or_a_close_from_the_wrong_role_is_refused_by_each_auctions_rules_and_changes_nothing() {
    let bureau = Bureau::new().unwrap();
    let auctioneer = bureau.add(Agent::builder("auctioneer").seed("auctioneer").build().unwrap()).unwrap();
    let bidder = bureau.add(Agent::builder("bidder").seed("bidder").build().unwrap()).unwrap();
    let storage = |who: Address| bureau.context(who).unwrap().storage().unwrap();
    let now = 1_790_000_000_000;
    for (rules, opening, bid, close) in auctions() {
        let name = rules.name().to_owned();
        let id = dialogue_of(&name, &bidder);

        // The bidder's side: the auctioneer opens, then bids in its own auction.
        let mine = Dialogues::load(rules.clone(), BIDDER, storage(bidder)).unwrap();
        mine.incoming_named(opening, id, auctioneer, now).unwrap();
        let before = state_of(&mine, id);
        let shill = mine.incoming_named(bid, id, auctioneer, now + 1);
        assert!(
            matches!(&shill, Err(DialogueError::OutOfOrder { sender, expected, .. })
                if sender == AUCTIONEER && !expected.is_empty()),
            "{name}: a bid from the auctioneer: {shill:?}"
        );
        assert!(shill.unwrap_err().refusal().unwrap().state().is_some(), "{name}: the peer is told the state");
        assert_eq!(state_of(&mine, id), before, "{name}: a refusal changes nothing");

        // The auctioneer's side: the bidder closes the auction, or the auctioneer bids.
        let house = Dialogues::load(rules, AUCTIONEER, storage(auctioneer)).unwrap();
        house.open_with(opening, id, bidder, BIDDER, now, Step::default().until(now + 1_000)).unwrap();
        let before = state_of(&house, id);
        let closed_by_bidder = house.incoming_named(close, id, bidder, now + 1);
        assert!(
            matches!(&closed_by_bidder, Err(DialogueError::OutOfOrder { sender, .. }) if sender == BIDDER),
            "{name}: a close from a bidder: {closed_by_bidder:?}"
        );
        let own_bid = house.outgoing_named(bid, id, now + 1);
        assert!(
            matches!(&own_bid, Err(DialogueError::OutOfOrder { sender, .. }) if sender == AUCTIONEER),
            "{name}: a bid from the auctioneer: {own_bid:?}"
        );
        assert_eq!(state_of(&house, id), before, "{name}: refusals change nothing");

        // A bid in time is taken; after the deadline it is late; after the close, nothing.
        let open = state_of(&house, id).unwrap().0;
        house.incoming_named(bid, id, bidder, now + 2).unwrap();
        let state_after_bid = state_of(&house, id).unwrap().0;
        let late = house.incoming_named(bid, id, bidder, now + 1_001);
        if state_after_bid == open {
            assert!(matches!(late, Err(DialogueError::Late { .. })), "{name}: another bid, late: {late:?}");
        } else {
            assert!(matches!(late, Err(DialogueError::OutOfOrder { .. })), "{name}: one bid only: {late:?}");
        }
        house.outgoing_named(close, id, now + 1_002).unwrap();
        let after = house.incoming_named(bid, id, bidder, now + 1_003);
        assert!(matches!(after, Err(DialogueError::Closed { .. })), "{name}: {after:?}");
    }
    bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_auction_cut_off_by_a_stop_expires_when_its_auctioneer_starts_again_and_old_ones_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config::default().with_storage_dir(dir.path());
    let auctioneer = || Agent::builder("auctioneer").seed("auctioneer").build().unwrap();
    let bidder = Identity::from_seed(ROGUE).address();
    let now = agent_core::envelope::unix_now_ms();
    let hour = 3_600_000;
    // Stopped an hour ago in the middle of an auction, and a day and an hour ago in another.
    let (cut_off, old) = (dialogue_of("cut off", &bidder), dialogue_of("old", &bidder));
    {
        let bureau = Bureau::with_config(config()).unwrap();
        let address = bureau.add(auctioneer()).unwrap();
        let storage = bureau.context(address).unwrap().storage().unwrap();
        let dialogues = Dialogues::load(english::rules(), AUCTIONEER, storage.clone()).unwrap();
        let opening = english::Opening::NAME;
        dialogues
            .open_with(opening, cut_off, bidder, BIDDER, now - hour, Step::default().until(now - hour + 1_000))
            .unwrap();
        dialogues
            .open_with(opening, old, bidder, BIDDER, now - 25 * hour, Step::default().until(now - 25 * hour + 1_000))
            .unwrap();
        storage.flush().await.unwrap();
        bureau.shutdown().await.unwrap();
    }
    let bureau = Bureau::with_config(config()).unwrap();
    let mut agent = auctioneer();
    let english = english::Auctioneer::serve(&mut agent, Sales::new());
    bureau.add(agent).unwrap();
    // The auctioneer sweeps its dialogues when it starts (bounded wait).
    let state = || english.dialogues().and_then(|d| d.get(cut_off)).map(|d| d.state);
    for _ in 0..200 {
        if state().as_deref() == Some(EXPIRED) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state().as_deref(), Some(EXPIRED), "an auction that never closed expires");
    assert!(english.dialogues().unwrap().get(old).is_none(), "a dialogue older than a day is forgotten");
    bureau.shutdown().await.unwrap();
}
