//! A bidder keeps the auctions it is in as dialogues in its agent's storage: restarted in the
//! middle of an auction (same seed, same storage directory, its node stopped and started
//! again), it still knows the auction, bids on it within its limit, and pays when it wins;
//! a close told twice, or an award for an auction it never joined, is refused and moves no
//! money.
//!
//! The auctioneer runs in its own bureau, untouched by the bidder's restart; the two talk
//! over libp2p on loopback and settle on one ledger.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::UpTo;

use agent_core::ledger::{DealId, Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Message, Wallet};
use agent_protocols::auction::{dialogue_of, Award, BIDDER};
use agent_protocols::dialogue::{Dialogues, RefusalCause, Refused, Standing};
use agent_protocols::double_auction::{self, Clearinghouse, RoundOpen, Side};
use agent_protocols::english::{self, Opening, Raise};
use agent_protocols::sealed_bid::{self, Pricing, SignedBid};
use agent_protocols::settlement::{self, Sales, Settled};
use parking_lot::Mutex;

/// How long any one exchange over the network may take.
const STEP: Duration = Duration::from_secs(10);
const DELIVER_WITHIN: Duration = Duration::from_millis(800);
const BIDDER_SEED: &str = "restarted bidder";
const AUCTIONEER_SEED: &str = "restart auctioneer";
const SELLER_SEED: &str = "kWh seller";
const RIVAL_SEED: &str = "hand-driven rival";

/// Sells one unit at `min` or more in a double auction.
struct Sells(u128);

#[async_trait::async_trait]
impl double_auction::Trader for Sells {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        vec![(Side::Sell, self.0, 1)]
    }
}

/// Hands over a lot.
struct Lots;

#[async_trait::async_trait]
impl settlement::Seller for Lots {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "paid": price.to_string() }))
    }
}

/// The auctioneer's side: one auctioneer of each kind in one agent, which records the
/// refusals it is told; a hand-driven rival bidder; and a seller in the double auction.
struct House {
    bureau: Bureau,
    ledger: Arc<LocalLedger>,
    mint: Wallet,
    resolver: Arc<StaticResolver>,
    auctioneer: Address,
    english: english::Auctioneer,
    sealed: sealed_bid::Auctioneer,
    clearinghouse: Clearinghouse,
    refusals: Arc<Mutex<Vec<Refused>>>,
    rival: Address,
    openings: Arc<Mutex<Vec<String>>>,
    seller: Address,
}

impl House {
    async fn new() -> House {
        let mint = Identity::from_seed("bidder restart mint");
        let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
        let resolver = Arc::new(StaticResolver::new());

        let mut agent = Agent::builder("auctioneer").seed(AUCTIONEER_SEED).build().unwrap();
        let sales = Sales::new();
        let english = english::Auctioneer::serve(&mut agent, sales.clone());
        let sealed = sealed_bid::Auctioneer::serve(&mut agent, sales.clone());
        let clearinghouse = Clearinghouse::serve(&mut agent);
        settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
        let refusals: Arc<Mutex<Vec<Refused>>> = Arc::default();
        let told = refusals.clone();
        agent.on_message(move |_: Context, _: Address, refused: Refused| {
            told.lock().push(refused);
            std::future::ready(())
        });

        // The rival hears the auction open and bids only when the test makes it.
        let mut rival = Agent::builder(RIVAL_SEED).seed(RIVAL_SEED).build().unwrap();
        let openings: Arc<Mutex<Vec<String>>> = Arc::default();
        let heard = openings.clone();
        rival.on_message(move |_: Context, _: Address, opening: Opening| {
            heard.lock().push(opening.auction);
            std::future::ready(())
        });
        rival.on_message(|_: Context, _: Address, _: english::Standing| std::future::ready(()));
        rival.on_message(|_: Context, _: Address, _: english::Closed| std::future::ready(()));

        let mut seller = Agent::builder(SELLER_SEED).seed(SELLER_SEED).build().unwrap();
        let seller_sales = Sales::new();
        double_auction::serve(
            &mut seller,
            Identity::from_seed(SELLER_SEED),
            Arc::new(Sells(80)),
            seller_sales.clone(),
            DELIVER_WITHIN,
        );
        settlement::serve_sales(&mut seller, seller_sales, Arc::new(Lots));

        let (bureau, added) = node(&ledger, &resolver, None, vec![agent, rival, seller]).await;
        let mint = Wallet::new(mint, ledger.clone());
        House {
            bureau,
            ledger,
            mint,
            resolver,
            auctioneer: added[0],
            english,
            sealed,
            clearinghouse,
            refusals,
            rival: added[1],
            openings,
            seller: added[2],
        }
    }

    fn ctx(&self) -> Context {
        self.bureau.context(self.auctioneer).unwrap()
    }

    async fn balance(&self, seed: &str) -> u128 {
        self.ledger.balance(wallet(seed)).await.unwrap()
    }

    /// The bidder's node, started (again) on `dir` with a fresh `strategy`.
    async fn bidder_node(&self, dir: &Path, strategy: Arc<UpTo>) -> (Bureau, Address) {
        let mut agent = Agent::builder(BIDDER_SEED).seed(BIDDER_SEED).build().unwrap();
        let identity = || Identity::from_seed(BIDDER_SEED);
        english::serve(&mut agent, identity(), strategy.clone(), DELIVER_WITHIN);
        sealed_bid::serve(&mut agent, identity(), strategy.clone(), DELIVER_WITHIN);
        double_auction::serve(&mut agent, identity(), strategy, Sales::new(), DELIVER_WITHIN);
        let (bureau, added) = node(&self.ledger, &self.resolver, Some(dir), vec![agent]).await;
        (bureau, added[0])
    }

    /// Waits (bounded) until the auctioneer's dialogue with `bidder` (in its one auction of
    /// a kind, under `dialogues`) has recorded `step`; returns the dialogue's id.
    async fn heard_from<'a>(&self, dialogues: impl Fn() -> Option<&'a Dialogues>, bidder: Address, step: &str) -> u128 {
        for _ in 0..500 {
            let dialogue = dialogues().and_then(|d| d.all().into_iter().find(|d| d.peer == bidder));
            if let Some(dialogue) = dialogue.filter(|d| d.said.iter().any(|s| s.message == step)) {
                return dialogue.id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the auctioneer never heard {step} from {bidder}");
    }

    /// Sends `message` from the auctioneer to `to` and waits (bounded) for the refusal it
    /// is told of, for dialogue `dialogue`.
    async fn refused<M: agent_core::Message>(&self, to: Address, message: M, dialogue: u128) -> Refused {
        self.refusals.lock().clear();
        self.ctx().send(to, message).await.unwrap();
        for _ in 0..500 {
            if let Some(refused) = self.refusals.lock().iter().find(|r| r.dialogue == dialogue) {
                return refused.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no refusal told for dialogue {dialogue:032x}");
    }
}

/// The wallet of the agent whose seed is `seed`.
fn wallet(seed: &str) -> Address {
    Identity::from_seed(seed).derive("wallet").address()
}

/// A bureau on `ledger` (with its storage in `dir`, if given), listening on loopback, its
/// agents routed through `resolver`.
async fn node(
    ledger: &Arc<LocalLedger>,
    resolver: &Arc<StaticResolver>,
    dir: Option<&Path>,
    agents: Vec<Agent>,
) -> (Bureau, Vec<Address>) {
    let mut config = Config::default().with_ledger(ledger.clone()).with_request_timeout(STEP);
    if let Some(dir) = dir {
        config = config.with_storage_dir(dir);
    }
    let bureau = Bureau::with_config(config).unwrap();
    let addresses: Vec<Address> = agents.into_iter().map(|agent| bureau.add(agent).unwrap()).collect();
    let network =
        NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver.clone()).with_delivery_timeout(STEP);
    let info = bureau.listen(network).await.unwrap();
    for address in &addresses {
        resolver.insert(*address, Endpoint { peer_id: info.peer_id, addrs: info.listen_addrs.clone() });
    }
    (bureau, addresses)
}

/// The bidder's own record of its dialogue `id` under `rules`, read from its storage.
fn bidder_state(bureau: &Bureau, bidder: Address, rules: agent_protocols::dialogue::Rules, id: u128) -> Option<String> {
    let storage = bureau.context(bidder).unwrap().storage().unwrap();
    Dialogues::load(rules, BIDDER, storage).unwrap().get(id).map(|d| d.state.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_english_bidder_restarted_mid_auction_bids_within_its_limit_and_pays_once_when_it_wins() {
    let house = House::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (node_b, bidder) = house.bidder_node(dir.path(), UpTo::new(150)).await;
    house.mint.mint(wallet(BIDDER_SEED), 1_000).await.unwrap();

    let terms = english::Terms { reserve: 50, increment: 10, open_for: Duration::from_secs(4) };
    let (english, ctx, rival) = (house.english.clone(), house.ctx(), house.rival);
    let run = tokio::spawn(async move { english.run(&ctx, &[bidder, rival], &"lot 1", terms).await.unwrap() });

    // The bidder raises to the reserve when the auction opens, then its node stops.
    let auction = loop_until(|| house.openings.lock().first().cloned()).await;
    let id = house.heard_from(|| house.english.dialogues(), bidder, Raise::NAME).await;
    assert_eq!(id, dialogue_of(&auction, &bidder));
    node_b.shutdown().await.unwrap();

    // Started again on the same storage, with a strategy that remembers nothing.
    let strategy = UpTo::new(150);
    let (node_b, again) = house.bidder_node(dir.path(), strategy.clone()).await;
    assert_eq!(again, bidder);
    assert_eq!(bidder_state(&node_b, bidder, english::rules(), id).as_deref(), Some("open"), "it knows the auction");

    // The rival leads at 140: the restarted bidder raises to 150, its limit, and no more.
    let rival_ctx = house.bureau.context(house.rival).unwrap();
    rival_ctx
        .send(house.auctioneer, Raise(SignedBid::sign(&Identity::from_seed(RIVAL_SEED), &auction, 140)))
        .await
        .unwrap();
    let outcry = tokio::time::timeout(STEP, run).await.unwrap().unwrap();
    assert_eq!(outcry.award, Some(Award { winner: bidder, price: 150 }), "{outcry:?}");
    let signed: Vec<u128> = outcry.bids.iter().filter(|b| b.bidder == bidder).map(|b| b.amount).collect();
    assert_eq!(signed, vec![50, 150], "the reserve before the restart, its limit after: {outcry:?}");

    // It pays the price, through escrow, once.
    assert!(matches!(strategy.paid().await, Ok(Settled::Paid { .. })), "{:?}", strategy.settled.lock());
    assert_eq!(house.balance(BIDDER_SEED).await, 1_000 - 150);
    assert_eq!(house.balance(AUCTIONEER_SEED).await, 150);
    assert_eq!(bidder_state(&node_b, bidder, english::rules(), id).as_deref(), Some("closed"));

    // The close told again, and an award for an auction it never joined: both refused,
    // neither pays.
    let pay_to = Some(wallet(AUCTIONEER_SEED));
    let award = Some(Award { winner: bidder, price: 150 });
    let again = english::Closed { auction: auction.clone(), award, pay_to };
    let refused = house.refused(bidder, again, id).await;
    assert_eq!(refused.state(), Some("closed"), "{refused:?}");
    let never = "an auction it never joined";
    let stray = english::Closed { auction: never.into(), award: Some(Award { winner: bidder, price: 10 }), pay_to };
    let refused = house.refused(bidder, stray, dialogue_of(never, &bidder)).await;
    assert_eq!(refused.standing, Standing::NoSuchDialogue, "{refused:?}");
    assert_eq!(refused.cause, RefusalCause::UnknownDialogue, "{refused:?}");
    assert_eq!(bidder_state(&node_b, bidder, english::rules(), dialogue_of(never, &bidder)), None, "nothing opened");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(strategy.settled.lock().len(), 1, "paid once");
    assert_eq!(house.balance(BIDDER_SEED).await, 1_000 - 150);
    assert_eq!(house.balance(AUCTIONEER_SEED).await, 150);
    node_b.shutdown().await.unwrap();
    house.bureau.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_bidder_restarted_before_the_close_pays_the_price_it_won_at() {
    let house = House::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (node_b, bidder) = house.bidder_node(dir.path(), UpTo::new(300)).await;
    house.mint.mint(wallet(BIDDER_SEED), 1_000).await.unwrap();

    let (sealed, ctx) = (house.sealed.clone(), house.ctx());
    let run = tokio::spawn(async move {
        sealed.run(&ctx, &[bidder], &"lot 2", 120, Duration::from_secs(3), Pricing::SecondPrice).await.unwrap()
    });
    // The bidder bids 300, then its node stops and starts again before the close.
    let id = house.heard_from(|| house.sealed.dialogues(), bidder, "Bid").await;
    node_b.shutdown().await.unwrap();
    let strategy = UpTo::new(300);
    let (node_b, _) = house.bidder_node(dir.path(), strategy.clone()).await;
    assert_eq!(bidder_state(&node_b, bidder, sealed_bid::rules(), id).as_deref(), Some("sealed"));

    // Alone, it wins at the reserve, and pays that.
    let sealed = tokio::time::timeout(STEP, run).await.unwrap().unwrap();
    assert_eq!(sealed.award, Some(Award { winner: bidder, price: 120 }), "{sealed:?}");
    assert!(matches!(strategy.paid().await, Ok(Settled::Paid { .. })), "{:?}", strategy.settled.lock());
    assert_eq!(house.balance(BIDDER_SEED).await, 1_000 - 120);
    assert_eq!(house.balance(AUCTIONEER_SEED).await, 120);
    assert!(!matches!(bidder_state(&node_b, bidder, sealed_bid::rules(), id).as_deref(), Some("sealed")));
    node_b.shutdown().await.unwrap();
    house.bureau.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trader_restarted_before_its_round_clears_pays_for_its_trade_within_its_order() {
    let house = House::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (node_b, buyer) = house.bidder_node(dir.path(), UpTo::new(100)).await;
    house.mint.mint(wallet(BIDDER_SEED), 1_000).await.unwrap();

    let (clearinghouse, ctx, seller) = (house.clearinghouse.clone(), house.ctx(), house.seller);
    let run = tokio::spawn(async move {
        clearinghouse.run_round(&ctx, &[buyer, seller], "kWh", Duration::from_secs(3)).await.unwrap()
    });
    let id = house.heard_from(|| house.clearinghouse.dialogues(), buyer, double_auction::SignedOrder::NAME).await;
    node_b.shutdown().await.unwrap();
    let strategy = UpTo::new(100);
    let (node_b, _) = house.bidder_node(dir.path(), strategy.clone()).await;
    assert_eq!(bidder_state(&node_b, buyer, double_auction::rules(), id).as_deref(), Some("open"));

    // Bid 100, ask 80: one unit at 90, paid by the restarted buyer.
    let round = tokio::time::timeout(STEP, run).await.unwrap().unwrap();
    assert_eq!(round.clearing.as_ref().map(|c| (c.price, c.volume())), Some((90, 1)), "{round:?}");
    assert!(matches!(strategy.paid().await, Ok(Settled::Paid { .. })), "{:?}", strategy.settled.lock());
    assert_eq!(house.balance(BIDDER_SEED).await, 1_000 - 90);
    assert_eq!(house.balance(SELLER_SEED).await, 90);
    assert_eq!(bidder_state(&node_b, buyer, double_auction::rules(), id).as_deref(), Some("cleared"));
    node_b.shutdown().await.unwrap();
    house.bureau.shutdown().await.unwrap();
}

/// Polls `found` (bounded) until it gives something.
async fn loop_until<T>(found: impl Fn() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(found) = found() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never found");
}

/// A bidder stopped with a price locked and unsettled (its payment's refund task ended with
/// its node) gets it back after a restart: serving any auction, it has its wallet's open
/// escrows refunded when due, without the user's code asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_bidder_gets_back_what_it_locked_and_no_one_released() {
    let house = House::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (node_b, bidder) = house.bidder_node(dir.path(), UpTo::new(300)).await;
    house.mint.mint(wallet(BIDDER_SEED), 1_000).await.unwrap();
    // A price locked for the seller, as a win's payment does, then the node stops.
    let bidders_wallet = node_b.context(bidder).unwrap().wallet().unwrap();
    let deadline_ms = agent_core::envelope::unix_now_ms() + 1_500;
    let seller = wallet(SELLER_SEED);
    bidders_wallet.lock(70, seller, deadline_ms, seller, Some(DealId::named("lot 9"))).await.unwrap();
    drop(bidders_wallet);
    node_b.shutdown().await.unwrap();
    assert_eq!(house.balance(BIDDER_SEED).await, 930);

    let (node_b, _) = house.bidder_node(dir.path(), UpTo::new(300)).await;
    // Refunded just after its deadline: waited for up to ten times as long.
    for _ in 0..150 {
        if house.balance(BIDDER_SEED).await == 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(house.balance(BIDDER_SEED).await, 1_000, "the locked price came back");
    assert_eq!(house.balance(SELLER_SEED).await, 0, "nothing went to the seller");
    node_b.shutdown().await.unwrap();
    house.bureau.shutdown().await.unwrap();
}
