//! Payment on delivery through escrow: the seller is the escrow's arbiter and releases it
//! once it has delivered (its inform-done); without that by the deadline the escrow goes
//! back to the buyer by the ledger's rule, refunded by either side. No path leaves money
//! locked or pays it twice: balances are checked on the ledger.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{DealId, EscrowId, Ledger, LedgerError, LocalLedger, LocalLedgerConfig, Operation};
use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet, WalletError};
use agent_protocols::settlement::{self, Delivery, Payment, Sales, Settled, REFUND_GRACE};

const FUNDS: u128 = 1_000;
const PRICE: u128 = 300;
const DELIVER_WITHIN: Duration = Duration::from_millis(400);

/// What the seller does when paid.
#[derive(Clone, Copy)]
enum Behaviour {
    Deliver,
    Refuse,
    /// Delivers after this long.
    DeliverAfter(Duration),
}

struct Shop {
    behaviour: Behaviour,
    delivered: AtomicUsize,
}

#[async_trait::async_trait]
impl settlement::Seller for Shop {
    async fn deliver(&self, _buyer: Address, _deal: DealId, _price: u128) -> Result<serde_json::Value, String> {
        match self.behaviour {
            Behaviour::Refuse => return Err("out of stock".into()),
            Behaviour::DeliverAfter(after) => tokio::time::sleep(after).await,
            Behaviour::Deliver => {}
        }
        self.delivered.fetch_add(1, Ordering::SeqCst);
        Ok(serde_json::json!("the goods"))
    }
}

struct Market {
    bureau: Bureau,
    ledger: Arc<LocalLedger>,
    sales: Sales,
    shop: Arc<Shop>,
    seller: Address,
    buyer: Address,
}

impl Market {
    async fn new(behaviour: Behaviour) -> Market {
        let mint = Identity::from_seed("payment escrow mint");
        let ledger = Arc::new(LocalLedger::open(LocalLedgerConfig::default().with_authority(mint.address())).unwrap());
        let bureau = Bureau::with_config(Config::default().with_ledger(ledger.clone())).unwrap();
        let (sales, shop) = (Sales::new(), Arc::new(Shop { behaviour, delivered: AtomicUsize::new(0) }));
        let mut seller = Agent::builder("seller").seed("seller").build().unwrap();
        settlement::serve_sales(&mut seller, sales.clone(), shop.clone());
        let seller = bureau.add(seller).unwrap();
        let buyer = bureau.add(Agent::builder("buyer").seed("buyer").build().unwrap()).unwrap();
        let m = Market { bureau, ledger: ledger.clone(), sales, shop, seller, buyer };
        Wallet::new(mint, ledger).mint(m.wallet(buyer).address(), FUNDS).await.unwrap();
        m
    }

    fn wallet(&self, agent: Address) -> Wallet {
        self.bureau.context(agent).unwrap().wallet().unwrap()
    }

    async fn balance(&self, agent: Address) -> u128 {
        self.ledger.balance(self.wallet(agent).address()).await.unwrap()
    }

    /// Locks the price as `pay_on_delivery` does, but with `arbiter` and an escrow deadline
    /// `grace` after the delivery is due; schedules no refund.
    async fn lock(&self, deal: DealId, arbiter: Address, grace: Duration) -> (EscrowId, u64, u64) {
        let wallet = self.wallet(self.buyer);
        let deliver_by_ms = agent_core::envelope::unix_now_ms() + DELIVER_WITHIN.as_millis() as u64;
        let deadline_ms = deliver_by_ms + grace.as_millis() as u64;
        let seller_wallet = self.wallet(self.seller).address();
        let (escrow, _) = wallet.lock(PRICE, seller_wallet, deadline_ms, arbiter, Some(deal)).await.unwrap();
        (escrow, deliver_by_ms, deadline_ms)
    }

    /// The buyer sends `payment` and waits for the answer.
    async fn pay(&self, payment: Payment) -> Delivery {
        let ctx = self.bureau.context(self.buyer).unwrap();
        ctx.request::<Payment, Delivery>(self.seller, payment, Some(DELIVER_WITHIN + REFUND_GRACE)).await.unwrap()
    }

    /// How many times the buyer's history shows `escrow` refunded and released.
    async fn settlements(&self, escrow: EscrowId) -> (usize, usize) {
        let history = self.wallet(self.buyer).history(100).await.unwrap();
        let count = |refund: bool| {
            history
                .iter()
                .filter(|r| match r.tx.operation {
                    Operation::Refund { escrow: e } => refund && e == escrow,
                    Operation::Release { escrow: e } => !refund && e == escrow,
                    _ => false,
                })
                .count()
        };
        (count(true), count(false))
    }

    /// Waits (bounded) until the buyer's balance is `expected`.
    async fn buyer_balance_becomes(&self, expected: u128) -> u128 {
        for _ in 0..100 {
            if self.balance(self.buyer).await == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.balance(self.buyer).await
    }

    async fn nothing_locked(&self) -> bool {
        self.ledger.open_escrows(self.wallet(self.buyer).address(), 10).await.unwrap().is_empty()
    }
}

#[tokio::test]
async fn the_seller_is_paid_by_its_own_release_though_the_buyer_never_releases_and_only_once() {
    let m = Market::new(Behaviour::Deliver).await;
    let deal = DealId::named("paid by the seller's release");
    m.sales.expect(deal, m.buyer, PRICE);
    let seller_wallet = m.wallet(m.seller).address();
    let (escrow, deliver_by_ms, deadline_ms) = m.lock(deal, seller_wallet, REFUND_GRACE).await;

    // The buyer pays and then does nothing: no release, ever.
    let answer = m.pay(Payment { deal, escrow, price: PRICE, deliver_by_ms }).await;
    assert!(matches!(answer, Delivery::Delivered(_)), "{answer:?}");
    assert_eq!(m.balance(m.seller).await, PRICE, "released by the seller as it delivered");
    assert_eq!(m.balance(m.buyer).await, FUNDS - PRICE);
    assert!(m.nothing_locked().await);

    // After the deadline the buyer tries to take it back: the ledger has settled it.
    let wait = deadline_ms.saturating_sub(agent_core::envelope::unix_now_ms()) + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let refund = m.wallet(m.buyer).refund(escrow).await;
    assert!(matches!(refund, Err(WalletError::Ledger(LedgerError::UnknownEscrow(_)))), "{refund:?}");
    assert_eq!((m.balance(m.buyer).await, m.balance(m.seller).await), (FUNDS - PRICE, PRICE), "paid once");
    assert_eq!(m.settlements(escrow).await, (0, 1), "one release, by the seller; no refund");
    assert_eq!(m.shop.delivered.load(Ordering::SeqCst), 1);
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_payment_the_buyer_arbitrates_or_refundable_before_its_delivery_is_due_is_refused_and_comes_back() {
    let m = Market::new(Behaviour::Deliver).await;
    let seller_wallet = m.wallet(m.seller).address();
    let buyer_wallet = m.wallet(m.buyer).address();
    let mut escrows = Vec::new();

    // The buyer as its own arbiter: the seller could not release it once it delivered.
    let deal = DealId::named("buyer arbitrates");
    m.sales.expect(deal, m.buyer, PRICE);
    let (escrow, deliver_by_ms, _) = m.lock(deal, buyer_wallet, REFUND_GRACE).await;
    escrows.push(escrow);
    let Delivery::Refused(why) = m.pay(Payment { deal, escrow, price: PRICE, deliver_by_ms }).await else {
        panic!("delivered against an escrow the buyer arbitrates")
    };
    assert!(why.contains("arbiter"), "{why}");
    assert!(m.sales.awaits(&deal), "the sale still awaits a good payment");

    // Refundable the moment the delivery is due: no grace to release it in.
    let deal = DealId::named("no grace");
    m.sales.expect(deal, m.buyer, PRICE);
    let (escrow, deliver_by_ms, _) = m.lock(deal, seller_wallet, Duration::ZERO).await;
    escrows.push(escrow);
    let Delivery::Refused(why) = m.pay(Payment { deal, escrow, price: PRICE, deliver_by_ms }).await else {
        panic!("delivered against an escrow refundable before its grace")
    };
    assert!(why.contains("refundable before the delivery is due"), "{why}");

    // A payment that says the delivery was due already.
    let deal = DealId::named("due already");
    m.sales.expect(deal, m.buyer, PRICE);
    let (escrow, _, _) = m.lock(deal, seller_wallet, REFUND_GRACE).await;
    escrows.push(escrow);
    let past = agent_core::envelope::unix_now_ms() - 1;
    let Delivery::Refused(why) = m.pay(Payment { deal, escrow, price: PRICE, deliver_by_ms: past }).await else {
        panic!("delivered after the delivery was due")
    };
    assert!(why.contains("too soon"), "{why}");

    assert_eq!(m.shop.delivered.load(Ordering::SeqCst), 0, "nothing delivered");
    assert_eq!((m.balance(m.buyer).await, m.balance(m.seller).await), (FUNDS - 3 * PRICE, 0));
    // Each comes back to the buyer at its deadline, once.
    assert_eq!(
        settlement::refund_open_escrows(&m.bureau.context(m.buyer).unwrap(), &m.wallet(m.buyer)).await.unwrap(),
        3
    );
    assert_eq!(m.buyer_balance_becomes(FUNDS).await, FUNDS);
    assert!(m.nothing_locked().await);
    for escrow in escrows {
        assert_eq!(m.settlements(escrow).await, (1, 0));
    }
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_undelivered_payment_comes_back_at_once_though_the_buyer_never_asks() {
    let m = Market::new(Behaviour::Refuse).await;
    let deal = DealId::named("out of stock");
    m.sales.expect(deal, m.buyer, PRICE);
    let seller_wallet = m.wallet(m.seller).address();
    // Its deadline 30 s away: money back within the 5 s waited for came before it.
    let (escrow, deliver_by_ms, deadline_ms) = m.lock(deal, seller_wallet, Duration::from_secs(30)).await;
    // The buyer schedules no refund: the seller, the escrow's arbiter, refunds it as soon
    // as it has said it cannot deliver, before the escrow's deadline.
    let answer = m.pay(Payment { deal, escrow, price: PRICE, deliver_by_ms }).await;
    assert!(matches!(&answer, Delivery::Refused(why) if why == "out of stock"), "{answer:?}");
    assert_eq!(m.buyer_balance_becomes(FUNDS).await, FUNDS, "refunded");
    assert!(agent_core::envelope::unix_now_ms() < deadline_ms, "refunded before the escrow's deadline");
    assert_eq!(m.balance(m.seller).await, 0);
    assert!(m.nothing_locked().await);
    assert_eq!(m.settlements(escrow).await, (1, 0), "refunded once");
    assert!(m.sales.awaits(&deal), "undelivered: the sale may be paid again");
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn pay_on_delivery_is_paid_once_refunded_once_or_refunded_when_delivery_comes_after_the_deadline() {
    // Delivered: paid once, whoever releases first.
    let m = Market::new(Behaviour::Deliver).await;
    let deal = DealId::named("on time");
    m.sales.expect(deal, m.buyer, PRICE);
    let ctx = m.bureau.context(m.buyer).unwrap();
    let seller_wallet = m.wallet(m.seller).address();
    let settled = settlement::pay_on_delivery(&ctx, m.seller, seller_wallet, PRICE, deal, DELIVER_WITHIN).await;
    let Ok(Settled::Paid { escrow, .. }) = settled else { panic!("{settled:?}") };
    assert_eq!((m.balance(m.buyer).await, m.balance(m.seller).await), (FUNDS - PRICE, PRICE));
    assert_eq!(m.settlements(escrow).await, (0, 1));
    assert_eq!(m.wallet(m.buyer).escrow(escrow).await.unwrap(), None);
    m.bureau.shutdown().await.unwrap();

    // Refused: refunded once, though both sides schedule the refund.
    let m = Market::new(Behaviour::Refuse).await;
    let deal = DealId::named("refused");
    m.sales.expect(deal, m.buyer, PRICE);
    let ctx = m.bureau.context(m.buyer).unwrap();
    let seller_wallet = m.wallet(m.seller).address();
    let settled = settlement::pay_on_delivery(&ctx, m.seller, seller_wallet, PRICE, deal, DELIVER_WITHIN).await;
    let Ok(Settled::Refunding { escrow, .. }) = settled else { panic!("{settled:?}") };
    assert_eq!(m.buyer_balance_becomes(FUNDS).await, FUNDS);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((m.balance(m.buyer).await, m.balance(m.seller).await), (FUNDS, 0), "refunded once");
    assert_eq!(m.settlements(escrow).await, (1, 0));
    m.bureau.shutdown().await.unwrap();

    // Delivered after the deadline: the buyer has its money back, and the seller's late
    // release finds nothing to pay out.
    let late = DELIVER_WITHIN + REFUND_GRACE + Duration::from_millis(300);
    let m = Market::new(Behaviour::DeliverAfter(late)).await;
    let deal = DealId::named("late");
    m.sales.expect(deal, m.buyer, PRICE);
    let ctx = m.bureau.context(m.buyer).unwrap();
    let seller_wallet = m.wallet(m.seller).address();
    let settled = settlement::pay_on_delivery(&ctx, m.seller, seller_wallet, PRICE, deal, DELIVER_WITHIN).await;
    let Ok(Settled::Refunding { escrow, .. }) = settled else { panic!("{settled:?}") };
    assert_eq!(m.buyer_balance_becomes(FUNDS).await, FUNDS);
    for _ in 0..100 {
        if m.shop.delivered.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((m.balance(m.buyer).await, m.balance(m.seller).await), (FUNDS, 0), "not paid after the deadline");
    assert_eq!(m.settlements(escrow).await, (1, 0));
    m.bureau.shutdown().await.unwrap();
}
