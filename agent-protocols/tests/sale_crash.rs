//! Paying for what an auction sold, across a crash (simulated hosts, paused time, balances
//! checked on the ledger). The seller's delivery and the winner's payment run as the
//! agents' work in hand: a crash in the middle of either ends it (the crashed agent's task
//! does nothing after), and the buyer ends with its money back or the goods paid for once,
//! never both lost and never paid twice. A seller that crashes once it has delivered, before
//! its release reached the ledger, is paid all the same when it restarts, even if its ledger
//! cannot be reached for a while then.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{DealId, Ledger, MemoryLedger, Operation};
use agent_core::sim::{FaultyLedger, Host, Outage, Outages, Sim};
use agent_core::{Address, Agent, Config, Context, Identity, Wallet};
use agent_protocols::auction::{self, Award};
use agent_protocols::double_auction::{self, Clearinghouse, RoundOpen, Side};
use agent_protocols::sealed_bid::{self, Pricing};
use agent_protocols::settlement::{self, Sales, Settled};
use agent_protocols::{dutch, english};
use parking_lot::Mutex;

mod common;

use common::crash::{wallet_of, SECOND};
use common::in_flight::InFlight;
use common::stalled::Stalled;
use common::UpTo;

const FUNDS: u128 = 1_000;
/// The most the bidder bids.
const MAX: u128 = 100;
/// The time the seller has to deliver: the buyer's escrow is refundable a second after.
const DELIVER_WITHIN: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

/// Hands over a lot once `takes` has passed, counting the deliveries it started and ended;
/// stalls `stalls`, if any, as a delivery ends.
struct Lots {
    takes: Duration,
    started: Mutex<u32>,
    delivered: Mutex<u32>,
    stalls: Option<Arc<Stalled>>,
}

impl Lots {
    fn new(takes: Duration) -> Arc<Lots> {
        Arc::new(Lots { takes, started: Mutex::new(0), delivered: Mutex::new(0), stalls: None })
    }

    /// Lots whose delivery, as it ends, stalls `ledger`: the seller's release of the escrow
    /// that paid for it stays on its way.
    fn stalling(takes: Duration, ledger: &Arc<Stalled>) -> Arc<Lots> {
        Arc::new(Lots { takes, started: Mutex::new(0), delivered: Mutex::new(0), stalls: Some(ledger.clone()) })
    }
}

#[async_trait::async_trait]
impl settlement::Seller for Lots {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        *self.started.lock() += 1;
        tokio::time::sleep(self.takes).await;
        *self.delivered.lock() += 1;
        if let Some(ledger) = &self.stalls {
            ledger.stall();
        }
        Ok(serde_json::json!({ "paid": price.to_string() }))
    }
}

/// Which auction sells the lot.
#[derive(Debug, Clone, Copy)]
enum Kind {
    English,
    Sealed,
    Dutch,
}

/// The auction house (one auctioneer of each kind, delivering with `lots`, and a double
/// auction's clearinghouse), on its host.
struct House {
    address: Address,
    english: english::Auctioneer,
    sealed: sealed_bid::Auctioneer,
    dutch: dutch::Auctioneer,
    clearinghouse: Clearinghouse,
    sales: Sales,
}

fn add_house(host: &Host, lots: &Arc<Lots>) -> House {
    let mut agent = Agent::builder("house").seed("house").build().unwrap();
    let sales = Sales::new();
    let english = english::Auctioneer::serve(&mut agent, sales.clone());
    let sealed = sealed_bid::Auctioneer::serve(&mut agent, sales.clone());
    let dutch = dutch::Auctioneer::serve(&mut agent, sales.clone());
    let clearinghouse = Clearinghouse::serve(&mut agent);
    settlement::serve_sales(&mut agent, sales.clone(), lots.clone());
    House { address: host.add(agent).unwrap(), english, sealed, dutch, clearinghouse, sales }
}

/// Sells one unit at 80 or more in a double auction.
struct Sells;

#[async_trait::async_trait]
impl double_auction::Trader for Sells {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        vec![(Side::Sell, 80, 1)]
    }
}

/// A trader selling a unit in double auctions, delivering with `lots`; its sales.
fn add_seller(host: &Host, lots: &Arc<Lots>) -> (Address, Sales) {
    let mut agent = Agent::builder("trader").seed("trader").build().unwrap();
    let sales = Sales::new();
    double_auction::serve(&mut agent, Identity::from_seed("trader"), Arc::new(Sells), sales.clone(), DELIVER_WITHIN);
    settlement::serve_sales(&mut agent, sales.clone(), lots.clone());
    (host.add(agent).unwrap(), sales)
}

/// The bidder (the same key, so the same storage, at each restart), bidding in every kind
/// of auction, and buying in double auctions, with `strategy`.
fn add_bidder(host: &Host, strategy: &Arc<UpTo>) -> Address {
    let mut agent = Agent::builder("bidder").seed("bidder").build().unwrap();
    let identity = || Identity::from_seed("bidder");
    english::serve(&mut agent, identity(), strategy.clone(), DELIVER_WITHIN);
    sealed_bid::serve(&mut agent, identity(), strategy.clone(), DELIVER_WITHIN);
    dutch::serve(&mut agent, identity(), strategy.clone(), DELIVER_WITHIN);
    double_auction::serve(&mut agent, identity(), strategy.clone(), Sales::new(), DELIVER_WITHIN);
    host.add(agent).unwrap()
}

struct Floor {
    sim: Sim,
    /// The house's host.
    hall: Host,
    /// The bidder's host, on a ledger slowed by the outages given.
    desk: Host,
    ledger: Arc<MemoryLedger>,
    house: House,
    bidder: Address,
}

/// The house on host "hall", delivering with `lots`; the bidder, holding [`FUNDS`], on host
/// "desk", whose ledger misbehaves during `outages`.
async fn floor(seed: u64, lots: &Arc<Lots>, strategy: &Arc<UpTo>, outages: Outages) -> Floor {
    let (sim, ledger) = sim_and_ledger(seed);
    let faulty = Arc::new(FaultyLedger::new(&sim, ledger.clone(), outages));
    floor_on(sim, &ledger, ledger.clone(), faulty, lots, strategy).await
}

const MINT: &str = "sale crash mint";

/// A simulation of seed `seed`, and a ledger on its clock.
fn sim_and_ledger(seed: u64) -> (Sim, Arc<MemoryLedger>) {
    let sim = Sim::new(seed);
    let ledger = Arc::new(MemoryLedger::new(Some(Identity::from_seed(MINT).address()), sim.clock()));
    (sim, ledger)
}

/// [`floor`] on `ledger`, which the hall reaches through `hall_ledger` and the desk through
/// `desk_ledger`.
async fn floor_on(
    sim: Sim,
    ledger: &Arc<MemoryLedger>,
    hall_ledger: Arc<dyn Ledger>,
    desk_ledger: Arc<dyn Ledger>,
    lots: &Arc<Lots>,
    strategy: &Arc<UpTo>,
) -> Floor {
    let hall = sim.add_host_with("hall", Config::default().with_ledger(hall_ledger)).unwrap();
    let desk = sim.add_host_with("desk", Config::default().with_ledger(desk_ledger)).unwrap();
    let house = add_house(&hall, lots);
    let bidder = add_bidder(&desk, strategy);
    Wallet::new(Identity::from_seed(MINT), ledger.clone()).mint(wallet_of("bidder"), FUNDS).await.unwrap();
    Floor { sim, hall, desk, ledger: ledger.clone(), house, bidder }
}

impl Floor {
    fn house_ctx(&self) -> Context {
        self.hall.context(self.house.address).unwrap()
    }

    /// Sells a lot to the bidder by a `kind` auction; the auction and its price.
    async fn sell(&self, kind: Kind) -> (String, u128) {
        let (ctx, bidders) = (self.house_ctx(), [self.bidder]);
        let (auction, award) = match kind {
            Kind::English => {
                let terms = english::Terms { reserve: 50, increment: 10, open_for: 2 * SECOND };
                let outcry = self.house.english.run(&ctx, &bidders, &"lot", terms).await.unwrap();
                (outcry.auction, outcry.award)
            }
            Kind::Sealed => {
                let sealed = self.house.sealed.run(&ctx, &bidders, &"lot", 50, 2 * SECOND, Pricing::FirstPrice);
                let sealed = sealed.await.unwrap();
                (sealed.auction, sealed.award)
            }
            Kind::Dutch => {
                let terms = dutch::Terms { start: 120, step: 10, floor: 50, tick_every: SECOND };
                let descent = self.house.dutch.run(&ctx, &bidders, &"lot", terms).await.unwrap();
                (descent.auction, descent.award)
            }
        };
        let Some(Award { winner, price }) = award else { panic!("{kind:?}: unsold") };
        assert_eq!(winner, self.bidder, "{kind:?}");
        (auction, price)
    }

    async fn balances(&self) -> [u128; 2] {
        [
            self.ledger.balance(wallet_of("bidder")).await.unwrap(),
            self.ledger.balance(wallet_of("house")).await.unwrap(),
        ]
    }

    /// Waits (at most 2 s) until the bidder and the house hold `bidder` and `house`, then
    /// checks they hold the whole supply: nothing locked in escrow, made or lost.
    async fn settles(&self, bidder: u128, house: u128) {
        for _ in 0..100 {
            if self.balances().await == [bidder, house] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(self.balances().await, [bidder, house], "the bidder's and the house's balances");
        assert_eq!(self.ledger.audit_total(), self.ledger.supply(), "accounts and escrows add up to the supply");
        assert_eq!(bidder + house, self.ledger.supply(), "nothing stays locked in escrow");
    }

    /// How many times the bidder's wallet locked, and how many of its escrows were refunded.
    async fn locks_and_refunds(&self) -> (usize, usize) {
        let (locks, _, refunds) = self.settlements().await;
        (locks, refunds)
    }

    /// How many times the bidder's wallet locked, and how many of its escrows were released
    /// and refunded.
    async fn settlements(&self) -> (usize, usize, usize) {
        let history = self.ledger.history(wallet_of("bidder"), 100).await.unwrap();
        let count = |is: fn(&Operation) -> bool| history.iter().filter(|r| is(&r.tx.operation)).count();
        let locks = count(|op| matches!(op, Operation::Lock { .. }));
        let releases = count(|op| matches!(op, Operation::Release { .. }));
        (locks, releases, count(|op| matches!(op, Operation::Refund { .. })))
    }
}

/// The house crashes while it delivers a lot the bidder paid for (a delivery that takes an
/// hour), and restarts at once. The crashed delivery ends with the crash: nothing is
/// delivered, and the house does not release the escrow. The bidder's payment ends without
/// a delivery, and its escrow comes back to it at its deadline, once.
#[tokio::test(start_paused = true)]
async fn a_seller_that_crashed_while_delivering_leaves_the_buyer_its_money() {
    for (seed, kind) in [(61, Kind::English), (62, Kind::Sealed), (63, Kind::Dutch)] {
        let (lots, strategy) = (Lots::new(3600 * SECOND), UpTo::new(MAX));
        let f = floor(seed, &lots, &strategy, Outages::none()).await;
        let (_, price) = f.sell(kind).await;
        assert!(f.sim.wait_until(5 * SECOND, POLL, || *lots.started.lock() == 1).await, "{kind:?}: never paid");
        assert_eq!(f.balances().await, [FUNDS - price, 0], "{kind:?}: the price is locked");
        f.sim.crash(&f.hall);
        f.sim.restart(&f.hall).unwrap();
        let restarted = Lots::new(SECOND);
        add_house(&f.hall, &restarted);

        let settled = tokio::time::timeout(30 * SECOND, strategy.paid()).await.expect("the payment ends");
        assert!(matches!(settled, Ok(Settled::Refunding { .. })), "{kind:?}: {settled:?}");
        // Refunded at the escrow's deadline (the house, its arbiter, is gone): by then.
        tokio::time::sleep(DELIVER_WITHIN + settlement::REFUND_GRACE).await;
        f.settles(FUNDS, 0).await;
        // Past every deadline: nothing more moves.
        tokio::time::sleep(3600 * SECOND).await;
        f.settles(FUNDS, 0).await;
        assert_eq!(f.locks_and_refunds().await, (1, 1), "{kind:?}: locked once, refunded once");
        assert_eq!(*lots.delivered.lock(), 0, "{kind:?}: the crashed delivery went on after the crash");
        assert_eq!(*restarted.started.lock(), 0, "{kind:?}: delivered again");
        assert_eq!(Arc::strong_count(&lots), 1, "{kind:?}: a task of the crashed house still runs");
        f.sim.shutdown().await;
    }
}

/// The house delivers a lot the bidder paid for (in an English, a sealed-bid and a Dutch
/// auction) and crashes before its release of the escrow reaches the ledger (the ledger
/// stalls as the delivery ends); it restarts at once. The restarted house releases the
/// escrow it delivered against, before its deadline: the bidder has the goods, paid once,
/// and nothing is refunded, not even past the deadline.
#[tokio::test(start_paused = true)]
async fn a_seller_that_crashed_after_delivering_is_paid_once() {
    for (seed, kind) in [(68, Kind::English), (69, Kind::Sealed), (70, Kind::Dutch)] {
        crash_after_delivering(seed, kind, 0).await;
    }
}

/// The same, the hall's ledger refusing the restarted house's first four releases (it
/// cannot be reached for about 1.5 s after the restart, well before the escrow's
/// deadline): the house tries again until the ledger takes one, and is paid once.
#[tokio::test(start_paused = true)]
async fn a_seller_restarted_while_its_ledger_is_down_is_paid_once_it_is_back() {
    for (seed, kind) in [(73, Kind::English), (74, Kind::Sealed), (75, Kind::Dutch)] {
        crash_after_delivering(seed, kind, 4).await;
    }
}

/// Sells a lot by a `kind` auction to the bidder; the house crashes once it has delivered,
/// before its release reaches the ledger, and restarts at once, its ledger refusing the
/// first `refused` submissions after the restart. Checks the house is paid once, and its
/// record of the delivery gone.
async fn crash_after_delivering(seed: u64, kind: Kind, refused: u32) {
    let (sim, ledger) = sim_and_ledger(seed);
    let stalled = Stalled::new(ledger.clone());
    let (lots, strategy) = (Lots::stalling(2 * SECOND, &stalled), UpTo::new(MAX));
    let f = floor_on(sim, &ledger, stalled.clone(), ledger.clone(), &lots, &strategy).await;
    let (_, price) = f.sell(kind).await;
    assert!(f.sim.wait_until(10 * SECOND, POLL, || *lots.delivered.lock() == 1).await, "{kind:?}: never delivered");
    tokio::time::sleep(POLL).await;
    assert_eq!(f.balances().await, [FUNDS - price, 0], "{kind:?}: the release is still on its way");
    f.sim.crash(&f.hall);
    stalled.fail_submissions(refused);
    stalled.resume();
    f.sim.restart(&f.hall).unwrap();
    let restarted = Lots::new(SECOND);
    add_house(&f.hall, &restarted);

    f.settles(FUNDS - price, price).await;
    assert_eq!(stalled.submissions_still_to_fail(), 0, "{kind:?}: the ledger refused fewer releases than asked");
    // Past the escrow's deadline, and every sweep of overdue escrows: nothing more moves.
    tokio::time::sleep(3600 * SECOND).await;
    f.settles(FUNDS - price, price).await;
    assert_eq!(f.settlements().await, (1, 1, 0), "{kind:?}: locked once, released once, never refunded");
    let left = f.house_ctx().storage().unwrap().keys_starting_with("agora.settlement.delivered/").unwrap();
    assert!(left.is_empty(), "{kind:?}: the delivery's record outlived its release: {left:?}");
    assert_eq!(*restarted.started.lock(), 0, "{kind:?}: delivered again");
    assert_eq!(Arc::strong_count(&lots), 1, "{kind:?}: a task of the crashed house still runs");
    f.sim.shutdown().await;
}

/// A delivery record the restarted house cannot read (not one it wrote) is left in place,
/// not removed, and nothing is released for it.
#[tokio::test(start_paused = true)]
async fn an_unreadable_delivery_record_is_left_in_place() {
    let (lots, strategy) = (Lots::new(SECOND), UpTo::new(MAX));
    let f = floor(76, &lots, &strategy, Outages::none()).await;
    let key = "agora.settlement.delivered/not-a-record";
    let storage = f.house_ctx().storage().unwrap();
    storage.set_json(key, b"not a delivery".to_vec()).unwrap();
    // Beside it, a readable record of an escrow the ledger does not know: the restart reads
    // it, finds the escrow settled, and forgets it (so the scan did run).
    let unknown = agent_core::ledger::EscrowId([7; 32]);
    let readable = serde_json::json!({ "escrow": unknown, "deadline_ms": u64::MAX });
    storage.set(&format!("agora.settlement.delivered/{}", hex::encode(unknown.0)), &readable).unwrap();
    storage.flush().await.unwrap();
    f.sim.crash(&f.hall);
    f.sim.restart(&f.hall).unwrap();
    add_house(&f.hall, &Lots::new(SECOND));

    tokio::time::sleep(10 * SECOND).await;
    let left = f.house_ctx().storage().unwrap().keys_starting_with("agora.settlement.delivered/").unwrap();
    assert_eq!(left, [key], "the unreadable record is kept, the settled one forgotten");
    f.settles(FUNDS, 0).await;
    f.sim.shutdown().await;
}

/// The bidder wins (in an English, a sealed-bid and a Dutch auction), and crashes while
/// locking the price (the ledger takes an hour to answer it): the lock in flight ends with
/// the crash, and the restarted bidder pays nothing for it. Nothing is locked, the crashed
/// bidder's `settled` is never called, and the house still awaits the payment.
#[tokio::test(start_paused = true)]
async fn a_bidder_that_crashed_while_its_payment_was_in_flight_pays_nothing() {
    for (seed, kind) in [(64, Kind::English), (71, Kind::Sealed), (72, Kind::Dutch)] {
        let slow = Outages::none().add(Duration::ZERO, 4 * 3600 * SECOND, Outage::Slow(3600 * SECOND));
        let (lots, strategy) = (Lots::new(SECOND), UpTo::new(MAX));
        let f = floor(seed, &lots, &strategy, slow).await;
        let (auction, _) = f.sell(kind).await;
        tokio::time::sleep(SECOND).await;
        f.sim.crash(&f.desk);
        f.sim.restart(&f.desk).unwrap();
        let restarted = UpTo::new(MAX);
        add_bidder(&f.desk, &restarted);

        // Long past when the slow lock would have been answered.
        tokio::time::sleep(3 * 3600 * SECOND).await;
        f.settles(FUNDS, 0).await;
        assert_eq!(f.locks_and_refunds().await, (0, 0), "{kind:?}: nothing locked");
        let (crashed, again) = (strategy.settled.lock().clone(), restarted.settled.lock().clone());
        assert!(crashed.is_empty(), "{kind:?}: the crashed bidder's payment went on: {crashed:?}");
        assert!(again.is_empty(), "{kind:?}: the restarted bidder paid: {again:?}");
        assert_eq!(*lots.started.lock(), 0, "{kind:?}: delivered unpaid");
        assert!(f.house.sales.awaits(&auction::deal_of(&auction)), "{kind:?}: the sale no longer awaits its payment");
        assert_eq!(Arc::strong_count(&strategy), 1, "{kind:?}: a task of the crashed bidder still runs");
        f.sim.shutdown().await;
    }
}

/// The bidder pays (the price locked, the payment sent) and crashes while the house
/// delivers. The house delivers and releases the escrow: the buyer has the goods, paid
/// once; the restarted bidder's refund of the escrows it left open finds it settled.
#[tokio::test(start_paused = true)]
async fn a_bidder_that_crashed_while_awaiting_delivery_pays_once() {
    let (lots, strategy) = (Lots::new(3 * SECOND), UpTo::new(MAX));
    let f = floor(65, &lots, &strategy, Outages::none()).await;
    let (_, price) = f.sell(Kind::Sealed).await;
    assert!(f.sim.wait_until(5 * SECOND, POLL, || *lots.started.lock() == 1).await, "never paid");
    f.sim.crash(&f.desk);
    f.sim.restart(&f.desk).unwrap();
    let restarted = UpTo::new(MAX);
    add_bidder(&f.desk, &restarted);

    assert!(f.sim.wait_until(5 * SECOND, POLL, || *lots.delivered.lock() == 1).await, "never delivered");
    f.settles(FUNDS - price, price).await;
    // Past the escrow's deadline: the released escrow is not refunded.
    tokio::time::sleep(60 * SECOND).await;
    f.settles(FUNDS - price, price).await;
    assert_eq!(f.locks_and_refunds().await, (1, 0), "locked once, never refunded");
    assert!(strategy.settled.lock().is_empty(), "the crashed bidder's payment went on: {:?}", strategy.settled.lock());
    assert_eq!(Arc::strong_count(&strategy), 1, "a task of the crashed bidder still runs");
    f.sim.shutdown().await;
}

/// The same for a trader that bought in a double auction: crashed while locking the price
/// (the ledger takes an hour to answer), it pays nothing after the crash nor once
/// restarted, and the selling trader still awaits the payment.
#[tokio::test(start_paused = true)]
async fn a_trader_that_crashed_while_its_payment_was_in_flight_pays_nothing() {
    let slow = Outages::none().add(Duration::ZERO, 4 * 3600 * SECOND, Outage::Slow(3600 * SECOND));
    let (lots, strategy) = (Lots::new(SECOND), UpTo::new(MAX));
    let f = floor(66, &lots, &strategy, slow).await;
    let (seller, sales) = add_seller(&f.hall, &lots);
    let round = f.house.clearinghouse.run_round(&f.house_ctx(), &[f.bidder, seller], "kWh", 2 * SECOND).await.unwrap();
    let [trade] = round.trades.as_slice() else { panic!("one trade: {round:?}") };
    assert_eq!((trade.buyer, trade.seller), (f.bidder, seller));
    tokio::time::sleep(SECOND).await;
    f.sim.crash(&f.desk);
    f.sim.restart(&f.desk).unwrap();
    let restarted = UpTo::new(MAX);
    add_bidder(&f.desk, &restarted);

    tokio::time::sleep(3 * 3600 * SECOND).await;
    f.settles(FUNDS, 0).await;
    assert_eq!(f.ledger.balance(wallet_of("trader")).await.unwrap(), 0);
    assert_eq!(f.locks_and_refunds().await, (0, 0), "nothing locked");
    assert!(strategy.settled.lock().is_empty(), "the crashed trader's payment went on: {:?}", strategy.settled.lock());
    assert!(restarted.settled.lock().is_empty(), "the restarted trader paid: {:?}", restarted.settled.lock());
    assert_eq!(*lots.started.lock(), 0, "delivered unpaid");
    assert!(sales.awaits(&trade.deal), "the sale still awaits its payment");
    assert_eq!(Arc::strong_count(&strategy), 1, "a task of the crashed trader still runs");
    f.sim.shutdown().await;
}

/// The bidder wins, sends its lock to a ledger that takes 3 s to apply it, and crashes;
/// restarted at once, it finds no escrow open. The lock lands after that, paying for a
/// sale no one will deliver (the payment was never sent): the restarted bidder refunds it
/// once it is due, though it locked it in a life before, and nothing stays locked.
#[tokio::test(start_paused = true)]
async fn a_lock_that_lands_after_the_bidder_restarted_is_refunded() {
    let (sim, ledger) = sim_and_ledger(67);
    let late = Arc::new(InFlight::new(&sim, ledger.clone(), (SECOND, 60 * SECOND), 3 * SECOND));
    let (lots, strategy) = (Lots::new(SECOND), UpTo::new(MAX));
    let f = floor_on(sim, &ledger, ledger.clone(), late, &lots, &strategy).await;
    let (_, price) = f.sell(Kind::English).await;
    tokio::time::sleep(SECOND).await;
    assert_eq!(f.balances().await, [FUNDS, 0], "the lock is still on its way");
    f.sim.crash(&f.desk);
    f.sim.restart(&f.desk).unwrap();
    let restarted = UpTo::new(MAX);
    add_bidder(&f.desk, &restarted);
    tokio::time::sleep(5 * SECOND).await;
    assert_eq!(f.balances().await, [FUNDS - price, 0], "the lock landed after the restart");

    tokio::time::sleep(3600 * SECOND).await;
    f.settles(FUNDS, 0).await;
    assert_eq!(f.locks_and_refunds().await, (1, 1), "locked once, refunded once");
    assert!(strategy.settled.lock().is_empty(), "the crashed bidder's payment went on");
    assert_eq!(*lots.started.lock(), 0, "delivered unpaid");
    f.sim.shutdown().await;
}
