//! Each auction's messages are checked against its declared dialogue: a bid from the wrong
//! role, after the close, or in another auction's dialogue is refused with a typed error,
//! changes nothing, and its sender is told which dialogue and state it hit; nothing is
//! accepted after the close.

use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message};
use agent_protocols::auction::{dialogue_of, AUCTIONEER, BIDDER};
use agent_protocols::dialogue::{DialogueError, Dialogues, RefusalCause, Refused, Rules, Standing, Step, EXPIRED};
use agent_protocols::double_auction::{self, Clearinghouse, RoundOpen, Side, SignedOrder};
use agent_protocols::sealed_bid::{self, BidAnswer, CallForBids, Pricing, SignedBid};
use agent_protocols::settlement::Sales;
use agent_protocols::{dutch, english};
use parking_lot::Mutex;

/// Raises to the minimum up to `max`, takes a Dutch price at or below it, bids it sealed,
/// and buys one unit at it in a double auction.
struct UpTo(u128);

#[async_trait::async_trait]
impl english::Bidder for UpTo {
    async fn raise(&self, _item: &serde_json::Value, minimum: u128) -> Option<u128> {
        (minimum <= self.0).then_some(minimum)
    }
}

#[async_trait::async_trait]
impl dutch::Bidder for UpTo {
    async fn take(&self, _item: &serde_json::Value, price: u128) -> bool {
        price <= self.0
    }
}

#[async_trait::async_trait]
impl sealed_bid::Bidder for UpTo {
    async fn bid(&self, _item: serde_json::Value, _reserve: u128) -> Option<u128> {
        Some(self.0)
    }
}

#[async_trait::async_trait]
impl double_auction::Trader for UpTo {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        vec![(Side::Buy, self.0, 1)]
    }
}

/// One auctioneer of each kind in one agent, honest bidders, and a rogue that bids by hand
/// and records the refusals it is told.
struct Floor {
    bureau: Bureau,
    auctioneer: Address,
    english: english::Auctioneer,
    dutch: dutch::Auctioneer,
    sealed: sealed_bid::Auctioneer,
    house: Clearinghouse,
    honest: Address,
    rogue: Address,
    refusals: Arc<Mutex<Vec<Refused>>>,
}

const ROGUE: &str = "rogue bidder";

impl Floor {
    fn new() -> Floor {
        let bureau = Bureau::new().unwrap();
        let mut agent = Agent::builder("auctioneer").build().unwrap();
        let english = english::Auctioneer::serve(&mut agent, Sales::new());
        let dutch = dutch::Auctioneer::serve(&mut agent, Sales::new());
        let sealed = sealed_bid::Auctioneer::serve(&mut agent, Sales::new());
        let house = Clearinghouse::serve(&mut agent);
        let auctioneer = bureau.add(agent).unwrap();

        let mut honest = Agent::builder("honest bidder").seed("honest bidder").build().unwrap();
        let strategy = Arc::new(UpTo(100));
        let deliver_within = Duration::from_millis(200);
        let identity = || Identity::from_seed("honest bidder");
        english::serve(&mut honest, identity(), strategy.clone(), deliver_within);
        dutch::serve(&mut honest, identity(), strategy.clone(), deliver_within);
        sealed_bid::serve(&mut honest, identity(), strategy.clone(), deliver_within);
        double_auction::serve(&mut honest, identity(), strategy, Sales::new(), deliver_within);
        let honest = bureau.add(honest).unwrap();

        // The rogue hears everything an auctioneer says and answers nothing on its own.
        let mut rogue = Agent::builder(ROGUE).seed(ROGUE).build().unwrap();
        let refusals: Arc<Mutex<Vec<Refused>>> = Arc::default();
        let told = refusals.clone();
        rogue.on_message(move |_ctx: Context, _from: Address, refused: Refused| {
            told.lock().push(refused);
            std::future::ready(())
        });
        rogue.on_message(|_: Context, _: Address, _: english::Opening| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: english::Standing| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: english::Closed| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: dutch::Clock| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: dutch::Closed| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: CallForBids| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: sealed_bid::Closed| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: RoundOpen| std::future::ready(()));
        rogue.on_message(|_: Context, _: Address, _: double_auction::Cleared| std::future::ready(()));
        let rogue = bureau.add(rogue).unwrap();
        Floor { bureau, auctioneer, english, dutch, sealed, house, honest, rogue, refusals }
    }

    fn ctx(&self) -> Context {
        self.bureau.context(self.auctioneer).unwrap()
    }

    /// The rogue sends `message` to the auctioneer and waits (bounded) for the refusal it
    /// is told of, for dialogue `dialogue`.
    async fn refused<M: Message>(&self, message: M, dialogue: u128) -> Refused {
        self.refusals.lock().clear();
        self.bureau.context(self.rogue).unwrap().send(self.auctioneer, message).await.unwrap();
        for _ in 0..300 {
            if let Some(refused) = self.refusals.lock().iter().find(|r| r.dialogue == dialogue) {
                return refused.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no refusal told for dialogue {dialogue:032x}");
    }
}

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
    let refused = f.refused(message(auction), mine).await;
    assert!(is_late(&refused, &before.0), "{} after the close: {refused:?}", M::NAME);
    assert_eq!(state_of(dialogues, mine), Some(before), "a refusal changes nothing");

    let other = dialogue_of(elsewhere, &f.rogue);
    let refused = f.refused(message(elsewhere), other).await;
    assert!(is_unknown(&refused), "{} in another auction's dialogue: {refused:?}", M::NAME);
    assert!(dialogues.get(other).is_none(), "a bid opens no dialogue");
}

#[tokio::test]
async fn bids_after_the_close_or_in_another_auctions_dialogue_are_refused_in_each_auction() {
    let f = Floor::new();
    let bidders = [f.honest, f.rogue];
    let terms = english::Terms { reserve: 10, increment: 5, open_for: Duration::from_millis(300) };
    let english = f.english.run(&f.ctx(), &bidders, &"lot 1", terms).await.unwrap();
    assert_eq!(english.award.map(|a| (a.winner, a.price)), Some((f.honest, 10)), "{english:?}");
    let terms = dutch::Terms { start: 130, step: 10, floor: 50, tick_every: Duration::from_millis(40) };
    let dutch = f.dutch.run(&f.ctx(), &bidders, &"lot 2", terms).await.unwrap();
    assert_eq!(dutch.award.map(|a| (a.winner, a.price)), Some((f.honest, 100)), "{dutch:?}");
    let open_for = Duration::from_millis(300);
    let sealed = f.sealed.run(&f.ctx(), &bidders, &"lot 3", 20, open_for, Pricing::SecondPrice).await.unwrap();
    assert_eq!(sealed.award.map(|a| (a.winner, a.price)), Some((f.honest, 20)), "{sealed:?}");
    let round = f.house.run_round(&f.ctx(), &bidders, "kWh", open_for).await.unwrap();
    assert_eq!((round.orders.len(), round.clearing.as_ref()), (1, None), "one bid and no ask: {round:?}");
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
