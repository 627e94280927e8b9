//! English and Dutch auctions over messages: signed bids, the close, forgers, and the winner
//! and price exactly as the auction's rule gives for the bids that counted; then the sale
//! paid through escrow keyed by the auction, with balances checked on the ledger.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{DealId, Ledger, LocalLedger, LocalLedgerConfig};
use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet};
use agent_protocols::auction::{self, Acceptance, Award, Bid};
use agent_protocols::dialogue::{RefusalCause, Refused};
use agent_protocols::sealed_bid::{self, BidError, Pricing};
use agent_protocols::settlement::{self, Sales, Settled, SettlementError};
use agent_protocols::{dutch, english};
use parking_lot::Mutex;

mod common;
use common::paid::settle;

const DELIVER_WITHIN: Duration = Duration::from_millis(500);

/// Raises to the minimum while it is within `max`; takes a Dutch price at or below `max`.
struct UpTo {
    max: u128,
    settled: Mutex<Vec<Result<Settled, String>>>,
}

impl UpTo {
    fn new(max: u128) -> Arc<UpTo> {
        Arc::new(UpTo { max, settled: Mutex::new(Vec::new()) })
    }
}

#[async_trait::async_trait]
impl english::Bidder for UpTo {
    async fn raise(&self, _item: &serde_json::Value, minimum: u128) -> Option<u128> {
        (minimum <= self.max).then_some(minimum)
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.settled.lock().push(settled.map_err(|e| e.to_string()));
    }
}

#[async_trait::async_trait]
impl dutch::Bidder for UpTo {
    async fn take(&self, _item: &serde_json::Value, price: u128) -> bool {
        price <= self.max
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.settled.lock().push(settled.map_err(|e| e.to_string()));
    }
}

#[async_trait::async_trait]
impl sealed_bid::Bidder for UpTo {
    async fn bid(&self, _item: serde_json::Value, reserve: u128) -> Option<u128> {
        (self.max >= reserve).then_some(self.max)
    }

    async fn settled(&self, _auction: &str, settled: Result<Settled, SettlementError>) {
        self.settled.lock().push(settled.map_err(|e| e.to_string()));
    }
}

/// Hands over a lot, or refuses when `out_of_stock`.
struct Lots {
    out_of_stock: bool,
}

#[async_trait::async_trait]
impl settlement::Seller for Lots {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        if self.out_of_stock {
            return Err("the lot was sold elsewhere".into());
        }
        Ok(serde_json::json!({ "lot": 7, "paid": price.to_string() }))
    }
}

struct Market {
    bureau: Bureau,
    ledger: Arc<LocalLedger>,
    mint: Wallet,
    sales: Sales,
    english: english::Auctioneer,
    dutch: dutch::Auctioneer,
    sealed: sealed_bid::Auctioneer,
    auctioneer: Address,
}

impl Market {
    fn new(out_of_stock: bool) -> Market {
        Market::selling(out_of_stock, Sales::new())
    }

    fn selling(out_of_stock: bool, sales: Sales) -> Market {
        Market::delivering(Arc::new(Lots { out_of_stock }), sales)
    }

    fn delivering<S: settlement::Seller>(seller: Arc<S>, sales: Sales) -> Market {
        let mint = Identity::from_seed("open auctions mint");
        let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
        let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();
        let mut agent = Agent::builder("auctioneer").build().unwrap();
        let english = english::Auctioneer::serve(&mut agent, sales.clone());
        let dutch = dutch::Auctioneer::serve(&mut agent, sales.clone());
        let sealed = sealed_bid::Auctioneer::serve(&mut agent, sales.clone());
        settlement::serve_sales(&mut agent, sales.clone(), seller);
        let auctioneer = bureau.add(agent).unwrap();
        Market { bureau, mint: Wallet::new(mint, ledger.clone()), ledger, sales, english, dutch, sealed, auctioneer }
    }

    /// A bidder with `funds`, whose agent key is `seed`'s and which signs with `signer`'s.
    async fn bidder(&self, seed: &str, signer: &str, strategy: Arc<UpTo>, funds: u128) -> Address {
        let mut agent = Agent::builder(seed).seed(seed).build().unwrap();
        english::serve(&mut agent, Identity::from_seed(signer), strategy.clone(), DELIVER_WITHIN);
        dutch::serve(&mut agent, Identity::from_seed(signer), strategy.clone(), DELIVER_WITHIN);
        sealed_bid::serve(&mut agent, Identity::from_seed(signer), strategy, DELIVER_WITHIN);
        let address = self.bureau.add(agent).unwrap();
        self.mint.mint(self.wallet(address), funds).await.unwrap();
        address
    }

    fn wallet(&self, agent: Address) -> Address {
        self.bureau.context(agent).unwrap().wallet().unwrap().address()
    }

    async fn balance(&self, agent: Address) -> u128 {
        self.ledger.balance(self.wallet(agent)).await.unwrap()
    }

    /// Waits (bounded) until `strategy` has heard how its payment ended.
    async fn settled(&self, strategy: &UpTo) -> Result<Settled, String> {
        for _ in 0..300 {
            if let Some(settled) = strategy.settled.lock().first() {
                return settled.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the winner never settled");
    }
}

#[tokio::test]
async fn english_the_highest_bidder_wins_as_the_rule_gives_and_pays_through_escrow() {
    let m = Market::new(false);
    let (low, high, mid) = (UpTo::new(100), UpTo::new(150), UpTo::new(120));
    let low_agent = m.bidder("english low", "english low", low.clone(), 1_000).await;
    let high_agent = m.bidder("english high", "english high", high.clone(), 1_000).await;
    let mid_agent = m.bidder("english mid", "english mid", mid.clone(), 1_000).await;
    let forger = m.bidder("english forger", "someone else", UpTo::new(10_000), 1_000).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = english::Terms { reserve: 50, increment: 10, open_for: Duration::from_millis(600) };

    let outcry = m.english.run(&ctx, &[low_agent, high_agent, mid_agent, forger], &"lot 7", terms).await.unwrap();

    // The award is the rule's, for the bids that counted, in arrival order.
    let counted: Vec<Bid> = outcry
        .bids
        .iter()
        .enumerate()
        .map(|(seq, b)| Bid { bidder: b.bidder, amount: b.amount, seq: seq as u64 })
        .collect();
    assert_eq!(outcry.award, auction::english(&counted, 50, 10));
    let Award { winner, price } = outcry.award.expect("a bid stood");
    assert_eq!(winner, high_agent, "{outcry:?}");
    assert!((120..=130).contains(&price), "the winner pays one increment over the last rival bid: {price}");
    assert!(outcry.bids.iter().all(|b| b.bidder != forger), "the forger's bids never count");
    assert!(outcry.refused.iter().all(|(who, why)| *who == forger && matches!(why, BidError::NotTheBidder { .. })));
    assert!(!outcry.refused.is_empty(), "the forger bid, and was refused");
    for bid in &outcry.bids {
        bid.check(&outcry.auction, bid.bidder).expect("each counted bid is evidence on its own");
    }

    // The winner paid the price through escrow keyed by the auction, once.
    let Ok(Settled::Paid { delivery, .. }) = m.settled(&high).await else { panic!("not paid") };
    assert_eq!(delivery["lot"], 7);
    assert_eq!(m.balance(high_agent).await, 1_000 - price);
    assert_eq!(m.balance(m.auctioneer).await, price);
    for loser in [low_agent, mid_agent, forger] {
        assert_eq!(m.balance(loser).await, 1_000, "losers pay nothing");
    }
    assert!(low.settled.lock().is_empty() && mid.settled.lock().is_empty());
    assert!(!m.sales.awaits(&auction::deal_of(&outcry.auction)), "the sale is delivered once");
    let deal = auction::deal_of(&outcry.auction);
    let history = m.ledger.history(m.wallet(high_agent), 10).await.unwrap();
    assert_eq!(history.iter().filter(|r| r.deal == Some(deal)).count(), 2, "one lock, one release: {history:?}");
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn english_with_no_bid_at_the_reserve_sells_nothing() {
    let m = Market::new(false);
    let a = m.bidder("english shy a", "english shy a", UpTo::new(40), 100).await;
    let b = m.bidder("english shy b", "english shy b", UpTo::new(49), 100).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = english::Terms { reserve: 50, increment: 5, open_for: Duration::from_millis(300) };
    let outcry = m.english.run(&ctx, &[a, b], &"lot 8", terms).await.unwrap();
    assert_eq!(outcry.award, None);
    assert!(outcry.bids.is_empty());
    assert_eq!((m.balance(a).await, m.balance(b).await), (100, 100));
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn dutch_the_first_to_take_wins_at_the_called_price_and_forgers_do_not_stop_the_clock() {
    let m = Market::new(false);
    let (eager, patient) = (UpTo::new(150), UpTo::new(130));
    let eager_agent = m.bidder("dutch eager", "dutch eager", eager.clone(), 1_000).await;
    let patient_agent = m.bidder("dutch patient", "dutch patient", patient.clone(), 1_000).await;
    let forger = m.bidder("dutch forger", "not me", UpTo::new(10_000), 1_000).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = dutch::Terms { start: 200, step: 10, floor: 50, tick_every: Duration::from_millis(60) };

    let descent = m.dutch.run(&ctx, &[eager_agent, patient_agent, forger], &"lot 9", terms).await.unwrap();

    assert_eq!(descent.award, Some(Award { winner: eager_agent, price: 150 }), "{descent:?}");
    assert_eq!(descent.ticks, 6, "the clock stopped at the take: 200, 190, 180, 170, 160, 150");
    let acceptances: Vec<Acceptance> = descent
        .takes
        .iter()
        .enumerate()
        .map(|(seq, t)| Acceptance { bidder: t.bidder, tick: 5, seq: seq as u64 })
        .collect();
    assert_eq!(descent.award, auction::dutch(&acceptances, 200, 10, 50));
    assert!(!descent.refused.is_empty(), "the forger took at 200 and was refused");
    assert!(descent.refused.iter().all(|(who, _)| *who == forger));

    assert!(matches!(m.settled(&eager).await, Ok(Settled::Paid { .. })));
    assert_eq!(m.balance(eager_agent).await, 850);
    assert_eq!(m.balance(m.auctioneer).await, 150);
    assert_eq!((m.balance(patient_agent).await, m.balance(forger).await), (1_000, 1_000));
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn dutch_untaken_down_to_the_floor_sells_nothing() {
    let m = Market::new(false);
    let a = m.bidder("dutch miser", "dutch miser", UpTo::new(10), 100).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = dutch::Terms { start: 100, step: 25, floor: 40, tick_every: Duration::from_millis(30) };
    let descent = m.dutch.run(&ctx, &[a], &"lot 10", terms).await.unwrap();
    assert_eq!((descent.award, descent.ticks), (None, 3), "100, 75 and 50 were called; 25 is below the floor");
    assert_eq!(m.balance(a).await, 100);
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_undelivered_sale_is_refunded_to_the_winner() {
    let m = Market::new(true);
    let winner = UpTo::new(500);
    let agent = m.bidder("refunded winner", "refunded winner", winner.clone(), 1_000).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = dutch::Terms { start: 300, step: 1, floor: 1, tick_every: Duration::from_millis(30) };
    let descent = m.dutch.run(&ctx, &[agent], &"lot 11", terms).await.unwrap();
    assert_eq!(descent.award, Some(Award { winner: agent, price: 300 }));
    let Ok(Settled::Refunding { reason, .. }) = m.settled(&winner).await else { panic!("not refused") };
    assert!(reason.contains("sold elsewhere"), "{reason}");
    assert_eq!(m.balance(m.auctioneer).await, 0);
    // Refunded by the auctioneer, the escrow's arbiter, once it has said it cannot deliver
    // (before the deadline; at it if the ledger cannot be reached); bounded wait.
    for _ in 0..100 {
        if m.balance(agent).await == 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.balance(agent).await, 1_000, "refunded");
    assert!(m.ledger.open_escrows(m.wallet(agent), 10).await.unwrap().is_empty());
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_payment_for_a_sale_not_awaited_or_short_is_refused_and_nothing_is_delivered() {
    let m = Market::new(false);
    let buyer = m.bidder("stray buyer", "stray buyer", UpTo::new(0), 1_000).await;
    let ctx = m.bureau.context(buyer).unwrap();
    let seller_wallet = m.wallet(m.auctioneer);
    let deal = auction::deal_of("no such auction");
    let settled = settlement::pay_on_delivery(&ctx, m.auctioneer, seller_wallet, 40, deal, DELIVER_WITHIN).await;
    let Ok(Settled::Refunding { reason, .. }) = settled else { panic!("{settled:?}") };
    assert!(reason.contains("no sale awaits"), "{reason}");

    // Awaited at 100, paid 40: refused, and still awaited.
    let deal = auction::deal_of("short");
    m.sales.expect(deal, buyer, 100);
    let settled = settlement::pay_on_delivery(&ctx, m.auctioneer, seller_wallet, 40, deal, DELIVER_WITHIN).await;
    let Ok(Settled::Refunding { reason, .. }) = settled else { panic!("{settled:?}") };
    assert!(reason.contains("holds 40 of the 100"), "{reason}");
    assert!(m.sales.awaits(&deal));
    // Both refused payments come back to the buyer: nothing stays locked.
    settle(&m.ledger, &[(m.wallet(buyer), 1_000), (m.wallet(m.auctioneer), 0)]).await;
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_payer_takes_back_what_it_left_locked() {
    let m = Market::new(false);
    let payer = m.bidder("forgetful payer", "forgetful payer", UpTo::new(0), 1_000).await;
    let ctx = m.bureau.context(payer).unwrap();
    let wallet = ctx.wallet().unwrap();
    let deadline = agent_core::envelope::unix_now_ms() + 300;
    for amount in [10, 20, 30] {
        wallet.lock(amount, m.wallet(m.auctioneer), deadline, wallet.address(), None).await.unwrap();
    }
    assert_eq!(m.balance(payer).await, 940);
    // As after a restart: a fresh wallet of the same key, which remembers nothing.
    let fresh = Wallet::new(Identity::from_seed("forgetful payer").derive("wallet"), m.ledger.clone());
    assert_eq!(fresh.address(), wallet.address());
    assert_eq!(settlement::refund_open_escrows(&ctx, &fresh).await.unwrap(), 3);
    for _ in 0..100 {
        if m.balance(payer).await == 1_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m.balance(payer).await, 1_000);
    assert_eq!(settlement::refund_open_escrows(&ctx, &fresh).await.unwrap(), 0);
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn sealed_second_price_the_winner_pays_the_runner_up_bid_through_escrow() {
    let m = Market::new(false);
    let (high, low) = (UpTo::new(300), UpTo::new(220));
    let high_agent = m.bidder("sealed high", "sealed high", high.clone(), 1_000).await;
    let low_agent = m.bidder("sealed low", "sealed low", low.clone(), 1_000).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let sealed = m
        .sealed
        .run(&ctx, &[high_agent, low_agent], &"lot 12", 100, Duration::from_millis(300), Pricing::SecondPrice)
        .await
        .unwrap();
    assert_eq!(sealed.award, Some(Award { winner: high_agent, price: 220 }));
    assert!(matches!(m.settled(&high).await, Ok(Settled::Paid { .. })));
    assert_eq!((m.balance(high_agent).await, m.balance(low_agent).await), (780, 1_000));
    assert_eq!(m.balance(m.auctioneer).await, 220);
    assert!(low.settled.lock().is_empty());
    m.bureau.shutdown().await.unwrap();
}

/// Bids `amount` (sealed) once `after` has passed since it was called.
struct Tardy {
    amount: u128,
    after: Duration,
}

#[async_trait::async_trait]
impl sealed_bid::Bidder for Tardy {
    async fn bid(&self, _item: serde_json::Value, _reserve: u128) -> Option<u128> {
        tokio::time::sleep(self.after).await;
        Some(self.amount)
    }
}

/// Delivers a lot only once a late bid has been refused: the winner's payment is then
/// still waiting for its delivery when the late bid comes.
struct AfterRefusal {
    refused: Arc<Mutex<Vec<Refused>>>,
}

#[async_trait::async_trait]
impl settlement::Seller for AfterRefusal {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        let waited = self.refused.lock().is_empty();
        for _ in 0..300 {
            if !self.refused.lock().is_empty() {
                return Ok(serde_json::json!({ "lot": 13, "paid": price.to_string(), "waited": waited }));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("no late bid came".into())
    }
}

#[tokio::test]
async fn a_sealed_bid_well_after_the_close_is_refused_as_late_while_the_award_is_paid_and_changes_nothing() {
    let refused: Arc<Mutex<Vec<Refused>>> = Arc::default();
    let m = Market::delivering(Arc::new(AfterRefusal { refused: refused.clone() }), Sales::new());
    let (high, low) = (UpTo::new(300), UpTo::new(220));
    let high_agent = m.bidder("sealed on time high", "sealed on time high", high.clone(), 1_000).await;
    let low_agent = m.bidder("sealed on time low", "sealed on time low", low.clone(), 1_000).await;
    // The late bidder bids far above the others, 150 ms after the close. It bids by hand, as
    // a bidder whose clock runs late would: a bidder served by `sealed_bid::serve` checks
    // its answer against its own dialogue and sends nothing after the deadline.
    let deadline = Duration::from_millis(300);
    let after = deadline + Duration::from_millis(150);
    let mut late = Agent::builder("sealed late").seed("sealed late").build().unwrap();
    late.on_message(move |ctx: agent_core::Context, from: Address, call: sealed_bid::CallForBids| async move {
        tokio::time::sleep(after).await;
        let bid = sealed_bid::SignedBid::sign(&Identity::from_seed("sealed late"), &call.auction, 10_000);
        ctx.send(from, sealed_bid::BidAnswer::Bid(bid)).await.expect("the late bid is delivered");
    });
    late.on_message(|_: agent_core::Context, _: Address, _: sealed_bid::Closed| std::future::ready(()));
    let told = refused.clone();
    late.on_message(move |_ctx: agent_core::Context, _from: Address, refused: Refused| {
        told.lock().push(refused);
        std::future::ready(())
    });
    let late_agent = m.bureau.add(late).unwrap();
    m.mint.mint(m.wallet(late_agent), 100_000).await.unwrap();
    // A served bidder whose strategy answers as late sends nothing.
    let mut tardy = Agent::builder("sealed tardy").seed("sealed tardy").build().unwrap();
    let strategy = Arc::new(Tardy { amount: 20_000, after });
    sealed_bid::serve(&mut tardy, Identity::from_seed("sealed tardy"), strategy, DELIVER_WITHIN);
    let tardy_agent = m.bureau.add(tardy).unwrap();

    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let bidders = [high_agent, low_agent, late_agent, tardy_agent];
    let sealed = m.sealed.run(&ctx, &bidders, &"lot 13", 100, deadline, Pricing::SecondPrice).await.unwrap();
    assert_eq!(sealed.award, Some(Award { winner: high_agent, price: 220 }), "{sealed:?}");
    assert!(sealed.bids.iter().all(|b| b.bidder != late_agent), "the late bid was not in when the auction closed");

    // The winner's payment waits for its delivery, which waits for the late bid's refusal:
    // the late bid came while the award was being paid, and was refused as late.
    let settled = m.settled(&high).await;
    let Ok(Settled::Paid { delivery, .. }) = settled else {
        panic!("the winner was not paid for: {settled:?} {:?}", refused.lock())
    };
    assert_eq!(delivery["waited"], true, "the delivery began before the late bid came: {delivery}");
    let refusal = refused.lock().first().cloned().expect("the late bidder was told");
    let dialogue = auction::dialogue_of(&sealed.auction, &late_agent);
    assert_eq!((refusal.dialogue, refusal.state()), (dialogue, Some("closed")), "{refusal:?}");
    assert_eq!(refusal.cause, RefusalCause::Late, "refused as late: {refusal:?}");
    let kept = m.sealed.dialogues().unwrap().get(dialogue).unwrap();
    assert_eq!(kept.state, "closed");
    assert!(kept.said.iter().all(|said| said.sender == auction::AUCTIONEER), "no bid of its counted: {kept:?}");
    let tardy = m.sealed.dialogues().unwrap().get(auction::dialogue_of(&sealed.auction, &tardy_agent)).unwrap();
    assert!(
        tardy.said.iter().all(|said| said.sender == auction::AUCTIONEER),
        "the tardy bidder sent nothing: {tardy:?}"
    );

    // Winner and price unchanged, on the ledger: the winner paid the runner-up's bid, once.
    assert_eq!(m.balance(high_agent).await, 1_000 - 220);
    assert_eq!(m.balance(m.auctioneer).await, 220);
    assert_eq!((m.balance(low_agent).await, m.balance(late_agent).await), (1_000, 100_000));
    assert!(!m.sales.awaits(&auction::deal_of(&sealed.auction)), "the sale was delivered once");
    m.bureau.shutdown().await.unwrap();
}

/// Each auction, and payment on delivery, is a published protocol: both sides speak it, so
/// they can be found in the almanac by its digest, and its manifest lists every message.
#[tokio::test]
async fn the_auctions_are_protocols_both_sides_speak() {
    let m = Market::new(false);
    let bidder = m.bidder("speaker", "speaker", UpTo::new(1), 1).await;
    let agents = m.bureau.agents();
    let speaks = |who: Address, protocol: &agent_core::Protocol| {
        agents.iter().find(|a| a.address == who).unwrap().protocols.contains(&protocol.digest())
    };
    for protocol in [english::protocol(), dutch::protocol(), sealed_bid::protocol(), settlement::protocol()] {
        assert!(speaks(m.auctioneer, &protocol), "the auctioneer speaks {}", protocol.manifest().to_json());
    }
    for protocol in [english::protocol(), dutch::protocol(), sealed_bid::protocol()] {
        assert!(speaks(bidder, &protocol), "the bidder speaks {}", protocol.manifest().to_json());
    }
    let manifest = english::protocol().manifest().to_json();
    for message in ["agora.auction.english.Opening", "agora.auction.english.Raise", "agora.auction.english.Closed"] {
        assert!(manifest.contains(message), "{manifest}");
    }
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_winner_that_never_pays_gets_nothing_and_its_sale_lapses_free_to_be_offered_again() {
    let m = Market::selling(false, Sales::with_payment_window(Duration::from_millis(800)));
    // It bids up to 150 with 10 to its name: its payment can never be locked.
    let broke = UpTo::new(150);
    let broke_agent = m.bidder("broke winner", "broke winner", broke.clone(), 10).await;
    let rival_agent = m.bidder("honest rival", "honest rival", UpTo::new(100), 1_000).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = english::Terms { reserve: 50, increment: 10, open_for: Duration::from_millis(400) };
    let outcry = m.english.run(&ctx, &[broke_agent, rival_agent], &"lot 9", terms).await.unwrap();
    let Award { winner, price } = outcry.award.expect("a bid stood");
    assert_eq!(winner, broke_agent, "{outcry:?}");
    let deal = auction::deal_of(&outcry.auction);

    let Err(why) = m.settled(&broke).await else { panic!("a winner with 10 paid {price}") };
    assert!(why.contains("lock"), "{why}");
    assert!(m.sales.awaits(&deal), "within its window the sale still waits for the winner");
    assert!(m.sales.lapsed().is_empty(), "nothing has lapsed yet");

    // The window closes (bounded wait): the sale lapses, and the seller gets the lot back.
    let mut lapsed = Vec::new();
    for _ in 0..40 {
        lapsed = m.sales.lapsed();
        if !lapsed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lapsed, vec![settlement::Lapsed { deal, buyer: broke_agent, price }]);
    assert!(!m.sales.awaits(&deal));
    assert!(m.sales.lapsed().is_empty(), "a lapsed sale is handed back once");

    // Funded too late, the winner's payment is refused: nothing delivered, nothing paid.
    m.mint.mint(m.wallet(broke_agent), 1_000).await.unwrap();
    let buyer = m.bureau.context(broke_agent).unwrap();
    let pay_to = m.wallet(m.auctioneer);
    let late = settlement::pay_on_delivery(&buyer, m.auctioneer, pay_to, price, deal, DELIVER_WITHIN).await.unwrap();
    assert!(matches!(late, Settled::Refunding { .. }), "{late:?}");
    // The seller was never paid, the loser paid nothing, and the late payment comes back.
    let parties = [(m.wallet(broke_agent), 1_010), (m.wallet(rival_agent), 1_000), (m.wallet(m.auctioneer), 0)];
    settle(&m.ledger, &parties).await;
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_payment_after_the_window_closed_is_refused_even_before_the_seller_sweeps() {
    let m = Market::selling(false, Sales::with_payment_window(Duration::from_millis(300)));
    let winner = UpTo::new(500);
    // Enough to pay, but it pays only after the window: the auction's own payment fails
    // (no funds), and a second attempt comes late.
    let agent = m.bidder("late payer", "late payer", winner.clone(), 1).await;
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let terms = dutch::Terms { start: 300, step: 1, floor: 1, tick_every: Duration::from_millis(30) };
    let descent = m.dutch.run(&ctx, &[agent], &"lot 12", terms).await.unwrap();
    assert_eq!(descent.award, Some(Award { winner: agent, price: 300 }));
    assert!(m.settled(&winner).await.is_err(), "no funds: no payment");
    let deal = auction::deal_of(&descent.auction);
    tokio::time::sleep(Duration::from_millis(400)).await;
    m.mint.mint(m.wallet(agent), 1_000).await.unwrap();
    let buyer = m.bureau.context(agent).unwrap();
    let pay_to = m.wallet(m.auctioneer);
    let Settled::Refunding { reason, .. } =
        settlement::pay_on_delivery(&buyer, m.auctioneer, pay_to, 300, deal, DELIVER_WITHIN).await.unwrap()
    else {
        panic!("delivered after the window closed")
    };
    assert!(reason.contains("window"), "{reason}");
    // The late payment comes back; the seller has nothing.
    settle(&m.ledger, &[(m.wallet(agent), 1_001), (m.wallet(m.auctioneer), 0)]).await;
    m.bureau.shutdown().await.unwrap();
}

/// Nothing is sold at 0, which the ledger could not pay: an English auction with a reserve
/// of 0 asks for 1 (a bidder that would pay nothing does not bid), and a sealed bid alone
/// over a reserve of 0 pays 1, through escrow, and is delivered.
#[tokio::test]
async fn an_auction_with_a_reserve_of_zero_sells_at_one_or_not_at_all() {
    let m = Market::new(false);
    let ctx = m.bureau.context(m.auctioneer).unwrap();
    let stingy = m.bidder("zero stingy", "zero stingy", UpTo::new(0), 100).await;
    let terms = english::Terms { reserve: 0, increment: 5, open_for: Duration::from_millis(300) };
    let outcry = m.english.run(&ctx, &[stingy], &"lot 20", terms).await.unwrap();
    assert_eq!((outcry.award, outcry.bids.len()), (None, 0), "{outcry:?}");
    assert_eq!(m.balance(stingy).await, 100);

    let keen = UpTo::new(30);
    let alone = m.bidder("zero keen", "zero keen", keen.clone(), 100).await;
    let deadline = Duration::from_millis(300);
    let sealed = m.sealed.run(&ctx, &[alone], &"lot 21", 0, deadline, Pricing::SecondPrice).await.unwrap();
    assert_eq!(sealed.award, Some(Award { winner: alone, price: 1 }), "the reserve, as 1: {sealed:?}");
    let settled = m.settled(&keen).await;
    assert!(matches!(settled, Ok(Settled::Paid { .. })), "{settled:?}");
    assert_eq!(m.balance(alone).await, 99);
    m.bureau.shutdown().await.unwrap();
}
