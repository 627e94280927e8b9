//! A double auction over messages: signed orders, one uniform price per round exactly as
//! the rule gives for the orders that counted, and every trade paid through escrow;
//! balances checked on the ledger.

use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{DealId, Ledger, Operation};
use agent_core::{Address, Agent, Context, Identity};
use agent_protocols::auction::{self, Order};
use agent_protocols::double_auction::{
    self, Cleared, Clearinghouse, OrderError, RoundOpen, Side, SignedOrder, Trade, Trader,
};
use agent_protocols::settlement::{self, Sales, Settled, SettlementError, REFUND_GRACE};
use parking_lot::Mutex;

mod common;
use common::paid::Paid;

struct Fixed {
    orders: Vec<(Side, u128, u64)>,
    settled: Mutex<Vec<(u64, bool)>>,
}

#[async_trait::async_trait]
impl Trader for Fixed {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        self.orders.clone()
    }

    async fn settled(&self, trade: &Trade, settled: Result<Settled, SettlementError>) {
        self.settled.lock().push((trade.quantity, matches!(settled, Ok(Settled::Paid { .. }))));
    }
}

struct Deliver;

#[async_trait::async_trait]
impl settlement::Seller for Deliver {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "kWh delivered for": price.to_string() }))
    }
}

/// How long a seller has to deliver.
const DELIVER_WITHIN: Duration = Duration::from_millis(500);

/// A market on a ledger of its own.
fn market() -> Paid {
    Paid::new("double auction mint")
}

/// A trader in `m` placing `orders` each round, signed with `signer`'s key, delivering what
/// it sells, and funded with 1,000.
async fn trader(m: &Paid, seed: &str, signer: &str, orders: Vec<(Side, u128, u64)>) -> (Address, Arc<Fixed>) {
    let strategy = Arc::new(Fixed { orders, settled: Mutex::new(Vec::new()) });
    let mut agent = Agent::builder(seed).seed(seed).build().unwrap();
    let sales = Sales::new();
    double_auction::serve(&mut agent, Identity::from_seed(signer), strategy.clone(), sales.clone(), DELIVER_WITHIN);
    settlement::serve_sales(&mut agent, sales, Arc::new(Deliver));
    let address = m.bureau.add(agent).unwrap();
    m.fund(address, 1_000).await;
    (address, strategy)
}

/// Waits (bounded) until `trader` has settled `count` trades.
async fn settled(trader: &Fixed, count: usize) -> Vec<(u64, bool)> {
    for _ in 0..300 {
        if trader.settled.lock().len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    trader.settled.lock().clone()
}

#[tokio::test]
async fn a_round_clears_at_the_rules_uniform_price_and_every_trade_is_paid_once() {
    let m = market();
    let mut house_agent = Agent::builder("clearinghouse").build().unwrap();
    let house = Clearinghouse::serve(&mut house_agent);
    let house_address = m.bureau.add(house_agent).unwrap();

    let (b1, b1s) = trader(&m, "buyer 1", "buyer 1", vec![(Side::Buy, 120, 5)]).await;
    let (b2, b2s) = trader(&m, "buyer 2", "buyer 2", vec![(Side::Buy, 100, 3)]).await;
    let (b3, b3s) = trader(&m, "buyer 3", "buyer 3", vec![(Side::Buy, 80, 4)]).await;
    let (s1, _) = trader(&m, "seller 1", "seller 1", vec![(Side::Sell, 70, 4)]).await;
    let (s2, _) = trader(&m, "seller 2", "seller 2", vec![(Side::Sell, 90, 3)]).await;
    let (s3, _) = trader(&m, "seller 3", "seller 3", vec![(Side::Sell, 110, 5)]).await;
    let (forger, _) = trader(&m, "forger", "not the forger", vec![(Side::Sell, 1, 100)]).await;
    let traders = [b1, b2, b3, s1, s2, s3, forger];

    let ctx = m.bureau.context(house_address).unwrap();
    let round = house.run_round(&ctx, &traders, "kWh", Duration::from_millis(400)).await.unwrap();

    // Exactly the rule, on the orders that counted, in arrival order.
    let as_order = |side: Side| -> Vec<Order> {
        round
            .orders
            .iter()
            .enumerate()
            .filter(|(_, o)| o.side == side)
            .map(|(seq, o)| Order { trader: o.trader, price: o.price, quantity: o.quantity, seq: seq as u64 })
            .collect()
    };
    assert_eq!(round.clearing, auction::double(&as_order(Side::Buy), &as_order(Side::Sell)));
    assert_eq!(round.orders.len(), 6, "the forger's order does not count");
    assert!(matches!(round.refused.as_slice(), [(who, OrderError::NotTheTrader { .. })] if *who == forger));
    for order in &round.orders {
        order.check(order.trader).expect("each counted order is evidence on its own");
    }
    // Worked by hand: 120x5 and 100x3 against 70x4, 90x3 and 110x5 match 7 units; the
    // unmatched bid at 100 and the matched ask at 90 put the price at 100.
    let clearing = round.clearing.clone().unwrap();
    assert_eq!((clearing.price, clearing.volume()), (100, 7));

    // Every trade paid once, at the uniform price.
    assert_eq!(settled(&b1s, 2).await, vec![(4, true), (1, true)]);
    assert_eq!(settled(&b2s, 1).await, vec![(2, true)]);
    assert!(b3s.settled.lock().is_empty(), "buyer 3's bid was below every matched ask");
    assert_eq!(m.balance(b1).await, 1_000 - 500);
    assert_eq!(m.balance(b2).await, 1_000 - 200);
    assert_eq!(m.balance(b3).await, 1_000);
    assert_eq!(m.balance(s1).await, 1_000 + 400);
    assert_eq!(m.balance(s2).await, 1_000 + 300);
    assert_eq!((m.balance(s3).await, m.balance(forger).await), (1_000, 1_000));
    for trade in &round.trades {
        let history = m.ledger.history(m.wallet(trade.buyer), 20).await.unwrap();
        assert_eq!(history.iter().filter(|r| r.deal == Some(trade.deal)).count(), 2, "one lock, one release");
    }
    m.bureau.shutdown().await.unwrap();
}

#[tokio::test]
async fn trades_from_anyone_but_the_rounds_clearinghouse_or_beyond_the_orders_are_not_paid() {
    let m = market();
    let (buyer, strategy) = trader(&m, "careful buyer", "careful buyer", vec![(Side::Buy, 50, 2)]).await;
    let (house, _) = trader(&m, "a house", "a house", vec![]).await;
    let (stranger, _) = trader(&m, "a stranger", "a stranger", vec![]).await;
    let (house_ctx, stranger_ctx) = (m.bureau.context(house).unwrap(), m.bureau.context(stranger).unwrap());
    let trade = |round: &str, quantity, price| Trade {
        deal: double_auction::deal_of(round, 0),
        buyer,
        seller: house,
        pay_to: m.wallet(house),
        quantity,
        price,
    };
    let cleared = |round: &str, quantity, price| Cleared {
        round: round.into(),
        price: Some(price),
        trades: vec![trade(round, quantity, price)],
    };
    let open = |round: &str| RoundOpen { round: round.into(), good: "kWh".into(), closes_at_ms: u64::MAX };
    let settle = || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        strategy.settled.lock().len()
    };

    // Told by a stranger, for a round the house opened: ignored; and the house may not
    // then sell above the bid.
    house_ctx.send(buyer, open("r1")).await.unwrap();
    stranger_ctx.send(buyer, cleared("r1", 2, 50)).await.unwrap();
    assert_eq!(settle().await, 0);
    house_ctx.send(buyer, cleared("r1", 2, 60)).await.unwrap();
    assert_eq!(settle().await, 0, "above the bid");
    // More units than ordered: ignored.
    house_ctx.send(buyer, open("r2")).await.unwrap();
    house_ctx.send(buyer, cleared("r2", 3, 50)).await.unwrap();
    assert_eq!(settle().await, 0, "more than ordered");
    // A second trade at a price above the bid, behind one at the bid: ignored.
    house_ctx.send(buyer, open("r2b")).await.unwrap();
    let mut two = cleared("r2b", 1, 50);
    two.trades.push(Trade { price: 10_000, ..trade("r2b", 1, 10_000) });
    house_ctx.send(buyer, two).await.unwrap();
    assert_eq!(settle().await, 0, "every trade at the round's price");
    // Within the orders, from the round's house: the buyer pays (here the seller refuses,
    // as it awaits no such sale, so the escrow is refunded).
    house_ctx.send(buyer, open("r3")).await.unwrap();
    house_ctx.send(buyer, cleared("r3", 2, 50)).await.unwrap();
    assert_eq!(settled(&strategy, 1).await, vec![(2, false)], "the check lets good trades through");
    assert_eq!(m.balance(house).await, 1_000);
    m.bureau.shutdown().await.unwrap();
}

/// A seller whose ask is matched but that never notes its trades and never delivers,
/// written by hand: it sends its order and is silent after (it has no one to deliver).
/// The round clears as the rule gives; the buyer pays the honest seller on delivery, and
/// its escrow for the silent seller stays locked until the escrow's deadline (the silent
/// seller is its arbiter), then comes back to it. No money is lost or paid twice.
#[tokio::test]
async fn a_silent_sellers_buyer_gets_its_payment_back_and_the_honest_trade_settles() {
    const SILENT: &str = "silent seller";
    let m = market();
    let mut house_agent = Agent::builder("clearinghouse").build().unwrap();
    let house = Clearinghouse::serve(&mut house_agent);
    let house_address = m.bureau.add(house_agent).unwrap();
    let (buyer, strategy) = trader(&m, "buyer of 2", "buyer of 2", vec![(Side::Buy, 100, 2)]).await;
    let (honest, _) = trader(&m, "honest seller", "honest seller", vec![(Side::Sell, 40, 1)]).await;
    let mut silent = Agent::builder(SILENT).seed(SILENT).build().unwrap();
    silent.on_message(|ctx: Context, house: Address, open: RoundOpen| async move {
        let wallet = ctx.wallet().unwrap().address();
        let ask = SignedOrder::sign(&Identity::from_seed(SILENT), &open.round, Side::Sell, 50, 1, Some(wallet));
        assert!(ctx.send(house, ask).await.is_ok());
    });
    silent.on_message(|_: Context, _: Address, _: Cleared| std::future::ready(()));
    let silent = m.bureau.add(silent).unwrap();
    m.fund(silent, 1_000).await;

    let ctx = m.bureau.context(house_address).unwrap();
    let round = house.run_round(&ctx, &[buyer, honest, silent], "kWh", Duration::from_millis(400)).await.unwrap();
    // 100x2 against 40x1 and 50x1: both units trade, between 50 and 100, at 75.
    let clearing = round.clearing.clone().unwrap();
    assert_eq!((clearing.price, clearing.volume(), round.refused.len()), (75, 2, 0), "{round:?}");
    let trade_with = |seller: Address| round.trades.iter().find(|t| t.seller == seller).unwrap().clone();
    let (paid, unpaid) = (trade_with(honest), trade_with(silent));
    assert_eq!((paid.buyer, unpaid.buyer, unpaid.total()), (buyer, buyer, 75));

    // The honest trade is paid; the silent seller's ends without a delivery, at once.
    let ended = settled(&strategy, 2).await;
    assert_eq!(ended, vec![(1, true), (1, false)], "in trade order: {:?}", round.trades);
    assert_eq!(m.balance(buyer).await, 1_000 - 75 - 75, "its escrow for the silent seller is locked until due");
    // Due at the delivery's time plus the grace: then refunded, by the ledger's rule.
    tokio::time::sleep(DELIVER_WITHIN + REFUND_GRACE).await;
    m.settles(&[(buyer, 1_000 - 75), (honest, 1_000 + 75), (silent, 1_000), (house_address, 0)]).await;
    let history = m.ledger.history(m.wallet(buyer), 20).await.unwrap();
    let of = |deal: DealId| -> Vec<&'static str> {
        let name = |op: &Operation| match op {
            Operation::Lock { .. } => "lock",
            Operation::Release { .. } => "release",
            Operation::Refund { .. } => "refund",
            _ => "other",
        };
        history.iter().rev().filter(|r| r.deal == Some(deal)).map(|r| name(&r.tx.operation)).collect()
    };
    assert_eq!(of(paid.deal), ["lock", "release"], "paid once");
    assert_eq!(of(unpaid.deal), ["lock", "refund"], "refunded once");
    m.bureau.shutdown().await.unwrap();
}
