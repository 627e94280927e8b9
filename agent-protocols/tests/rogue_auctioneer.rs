//! A bidder never pays more than it signed, whatever the auctioneer claims: an auctioneer
//! driven by hand closes each kind of auction awarding the bidder a price above its signed
//! bid (or a sale it never signed for), and has its sales ready to take the money. The
//! bidder pays nothing for it; the same auctioneer closing an auction at the signed price is
//! paid that price, once. Balances are read from the ledger.

use std::sync::Arc;
use std::time::Duration;

mod common;
use common::UpTo;

use agent_core::ledger::{DealId, Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Agent, Bureau, Config, Context, Identity, Wallet};
use agent_protocols::auction::{deal_of, dialogue_of, Award, BIDDER};
use agent_protocols::dialogue::{Dialogues, Rules};
use agent_protocols::double_auction::{self, Cleared, RoundOpen, SignedOrder, Trade};
use agent_protocols::sealed_bid::{self, BidAnswer, CallForBids};
use agent_protocols::settlement::{self, Sales, Settled};
use agent_protocols::{dutch, english};
use parking_lot::Mutex;

const DELIVER_WITHIN: Duration = Duration::from_millis(800);
const FUNDS: u128 = 1_000;
/// The most the bidder's strategy signs, in every kind of auction.
const LIMIT: u128 = 100;
const BIDDER_SEED: &str = "overcharged bidder";

struct Lots;

#[async_trait::async_trait]
impl settlement::Seller for Lots {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "paid": price.to_string() }))
    }
}

/// A rogue auctioneer whose sales take any payment it claims, and a bidder of every kind
/// bidding up to [`LIMIT`], on one ledger.
struct Market {
    bureau: Bureau,
    ledger: Arc<LocalLedger>,
    rogue: Address,
    sales: Sales,
    /// What the rogue received signed, by auction: (auction, amount).
    signed: Arc<Mutex<Vec<(String, u128)>>>,
    bidder: Address,
    strategy: Arc<UpTo>,
}

impl Market {
    async fn new() -> Market {
        let mint = Identity::from_seed("rogue auctioneer mint");
        let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
        let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();

        let mut rogue = Agent::builder("rogue auctioneer").seed("rogue auctioneer").build().unwrap();
        let sales = Sales::new();
        settlement::serve_sales(&mut rogue, sales.clone(), Arc::new(Lots));
        let signed: Arc<Mutex<Vec<(String, u128)>>> = Arc::default();
        let heard = signed.clone();
        rogue.on_message(move |_: Context, _: Address, english::Raise(bid)| {
            heard.lock().push((bid.auction, bid.amount));
            std::future::ready(())
        });
        let heard = signed.clone();
        rogue.on_message(move |_: Context, _: Address, dutch::Take(bid)| {
            heard.lock().push((bid.auction, bid.amount));
            std::future::ready(())
        });
        let heard = signed.clone();
        rogue.on_message(move |_: Context, _: Address, answer: BidAnswer| {
            if let BidAnswer::Bid(bid) = answer {
                heard.lock().push((bid.auction, bid.amount));
            }
            std::future::ready(())
        });
        let heard = signed.clone();
        rogue.on_message(move |_: Context, _: Address, order: SignedOrder| {
            heard.lock().push((order.round, order.price));
            std::future::ready(())
        });
        let rogue = bureau.add(rogue).unwrap();

        let mut bidder = Agent::builder(BIDDER_SEED).seed(BIDDER_SEED).build().unwrap();
        let strategy = UpTo::new(LIMIT);
        let identity = || Identity::from_seed(BIDDER_SEED);
        english::serve(&mut bidder, identity(), strategy.clone(), DELIVER_WITHIN);
        dutch::serve(&mut bidder, identity(), strategy.clone(), DELIVER_WITHIN);
        sealed_bid::serve(&mut bidder, identity(), strategy.clone(), DELIVER_WITHIN);
        double_auction::serve(&mut bidder, identity(), strategy.clone(), Sales::new(), DELIVER_WITHIN);
        let bidder = bureau.add(bidder).unwrap();

        let market = Market { bureau, ledger, rogue, sales, signed, bidder, strategy };
        let mint = Wallet::new(mint, market.ledger.clone());
        mint.mint(market.wallet(bidder), FUNDS).await.unwrap();
        market
    }

    fn ctx(&self, agent: Address) -> Context {
        self.bureau.context(agent).unwrap()
    }

    fn wallet(&self, agent: Address) -> Address {
        self.ctx(agent).wallet().unwrap().address()
    }

    async fn balance(&self, agent: Address) -> u128 {
        self.ledger.balance(self.wallet(agent)).await.unwrap()
    }

    /// The rogue sends `message` to the bidder.
    async fn send<M: agent_core::Message>(&self, message: M) {
        self.ctx(self.rogue).send(self.bidder, message).await.unwrap();
    }

    /// Waits (bounded) for the amount the bidder signed in `auction`.
    async fn signed_in(&self, auction: &str) -> u128 {
        for _ in 0..300 {
            if let Some((_, amount)) = self.signed.lock().iter().find(|(a, _)| a == auction) {
                return *amount;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the bidder signed nothing in {auction}");
    }

    /// Waits (bounded) until the bidder's dialogue in `auction` under `rules` is in `state`.
    async fn bidder_in(&self, rules: fn() -> Rules, auction: &str, state: &str) {
        let storage = self.ctx(self.bidder).storage().unwrap();
        let id = dialogue_of(auction, &self.bidder);
        for _ in 0..300 {
            let dialogue = Dialogues::load(rules(), BIDDER, storage.clone()).unwrap().get(id);
            if dialogue.is_some_and(|d| d.state == state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the bidder's dialogue in {auction} never reached {state}");
    }

    /// The rogue's sales await `price` from the bidder for `deal`: a payment, if the bidder
    /// made one, would be released to the rogue on delivery.
    fn expect(&self, deal: DealId, price: u128) {
        self.sales.expect(deal, self.bidder, price);
    }

    /// The award of `price` to the bidder, paid to the rogue.
    fn award(&self, price: u128) -> (Option<Award>, Option<Address>) {
        (Some(Award { winner: self.bidder, price }), Some(self.wallet(self.rogue)))
    }

    /// After the overcharge and an honest close at `paid`: the bidder paid `paid` once, and
    /// nothing for the overcharge.
    async fn paid_only(&self, paid: u128) {
        assert!(matches!(self.strategy.paid().await, Ok(Settled::Paid { .. })), "{:?}", self.strategy.settled.lock());
        // Time for a payment of the overcharge, had one started, to settle too.
        tokio::time::sleep(DELIVER_WITHIN).await;
        let settled = self.strategy.settled.lock().clone();
        assert_eq!(settled.len(), 1, "one payment: {settled:?}");
        assert_eq!(self.balance(self.bidder).await, FUNDS - paid, "the bidder paid what it signed, once");
        assert_eq!(self.balance(self.rogue).await, paid, "the auctioneer got that, and no more");
    }
}

fn far() -> u64 {
    agent_core::envelope::unix_now_ms() + 60_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_english_close_above_the_signed_raise_is_not_paid() {
    let m = Market::new().await;
    let opening = |auction: &str| english::Opening {
        auction: auction.into(),
        item: serde_json::json!("lot"),
        reserve: 40,
        increment: 10,
        closes_at_ms: far(),
    };
    let closed = |auction: &str, price| {
        let (award, pay_to) = m.award(price);
        english::Closed { auction: auction.into(), award, pay_to }
    };

    // The bidder raises to the reserve, 40; the rogue closes at 90 (within the bidder's
    // limit, never signed).
    let over = "english overcharged";
    m.send(opening(over)).await;
    assert_eq!(m.signed_in(over).await, 40);
    m.expect(deal_of(over), 90);
    m.send(closed(over, 90)).await;
    m.bidder_in(english::rules, over, "closed").await;

    let fair = "english at the signed raise";
    m.send(opening(fair)).await;
    assert_eq!(m.signed_in(fair).await, 40);
    m.expect(deal_of(fair), 40);
    m.send(closed(fair, 40)).await;
    m.paid_only(40).await;
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dutch_award_the_bidder_never_took_is_not_paid() {
    let m = Market::new().await;
    let clock =
        |auction: &str, price| dutch::Clock { auction: auction.into(), item: serde_json::json!("lot"), tick: 0, price };
    let closed = |auction: &str, price| {
        let (award, pay_to) = m.award(price);
        dutch::Closed { auction: auction.into(), award, pay_to }
    };

    // The clock calls 150, above the bidder's limit: it takes nothing. The rogue awards it
    // the item at 60 anyway.
    let never = "dutch never taken";
    m.send(clock(never, LIMIT + 50)).await;
    m.bidder_in(dutch::rules, never, "calling").await;
    m.expect(deal_of(never), 60);
    m.send(closed(never, 60)).await;
    m.bidder_in(dutch::rules, never, "closed").await;

    let fair = "dutch taken at 60";
    m.send(clock(fair, 60)).await;
    assert_eq!(m.signed_in(fair).await, 60);
    m.expect(deal_of(fair), 60);
    m.send(closed(fair, 60)).await;
    m.paid_only(60).await;
    assert!(m.signed.lock().iter().all(|(auction, _)| auction != never), "nothing signed in {never}");
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_close_above_the_sealed_bid_is_not_paid() {
    let m = Market::new().await;
    let call = |auction: &str| CallForBids {
        auction: auction.into(),
        item: serde_json::json!("lot"),
        reserve: 10,
        deadline_ms: far(),
    };
    let closed = |auction: &str, price| {
        let (award, pay_to) = m.award(price);
        sealed_bid::Closed { auction: auction.into(), award, pay_to }
    };

    let over = "sealed overcharged";
    m.send(call(over)).await;
    assert_eq!(m.signed_in(over).await, LIMIT);
    m.expect(deal_of(over), LIMIT + 20);
    m.send(closed(over, LIMIT + 20)).await;
    m.bidder_in(sealed_bid::rules, over, "closed").await;

    let fair = "sealed at a second price";
    m.send(call(fair)).await;
    assert_eq!(m.signed_in(fair).await, LIMIT);
    m.expect(deal_of(fair), 70);
    m.send(closed(fair, 70)).await;
    m.paid_only(70).await;
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_auction_trade_above_the_buy_order_is_not_paid() {
    let m = Market::new().await;
    let open = |round: &str| RoundOpen { round: round.into(), good: "kWh".into(), closes_at_ms: far() };
    let cleared = |round: &str, price| {
        let trade = Trade {
            deal: double_auction::deal_of(round, 0),
            buyer: m.bidder,
            seller: m.rogue,
            pay_to: m.wallet(m.rogue),
            quantity: 1,
            price,
        };
        (trade.deal, Cleared { round: round.into(), price: Some(price), trades: vec![trade] })
    };

    // The bidder buys one unit at up to 100; the rogue clears it at 150.
    let over = "double overcharged";
    m.send(open(over)).await;
    assert_eq!(m.signed_in(over).await, LIMIT);
    let (deal, message) = cleared(over, LIMIT + 50);
    m.expect(deal, LIMIT + 50);
    m.send(message).await;
    m.bidder_in(double_auction::rules, over, "cleared").await;

    let fair = "double at 90";
    m.send(open(fair)).await;
    assert_eq!(m.signed_in(fair).await, LIMIT);
    let (deal, message) = cleared(fair, 90);
    m.expect(deal, 90);
    m.send(message).await;
    m.paid_only(90).await;
    m.bureau.shutdown().await.unwrap();
}
