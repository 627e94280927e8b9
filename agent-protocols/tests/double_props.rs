//! The double auction as it runs over messages, on random traders: each round's trades and
//! uniform price are exactly what the documented clearing rule gives for the orders that
//! arrived before the round closed, computed here directly from the traders' orders and
//! delays (not from what the clearinghouse counted), and unit by unit rather than order by
//! order as `auction::double` does. Prices are drawn from a few values, so equal prices
//! are common: the rule that breaks such ties is arrival (earlier first). Some traders,
//! written by hand, send their orders after the close: those are refused as late, their
//! senders told, and nothing of them counts. Then every trade is paid, exactly, on the
//! ledger.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use agent_core::{Address, Agent, Context, Identity};
use agent_protocols::auction::{Clearing, Fill};
use agent_protocols::dialogue::{RefusalCause, Refused};
use agent_protocols::double_auction::{self, Cleared, Clearinghouse, RoundOpen, Side, SignedOrder, Trade, Trader};
use agent_protocols::settlement::{self, Sales, Settled, SettlementError};
use parking_lot::Mutex;
use proptest::prelude::*;

mod common;
use common::floor::{Lots, DELIVER_WITHIN, FUNDS};
use common::sim_paid::{paused, SimPaid};

const OPEN_FOR: Duration = Duration::from_millis(200);
/// Traders' delays are whole multiples of this, distinct, so their orders arrive in a known
/// order; those in time end well before the close, the late ones well after it.
const SLOT: Duration = Duration::from_millis(10);
const LATE: Duration = Duration::from_millis(250);

/// One side's orders, placed `delay` after the round opens; records how its buys were paid.
struct Orders {
    orders: Vec<(Side, u128, u64)>,
    delay: Duration,
    paid: Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl Trader for Orders {
    async fn orders(&self, _round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        tokio::time::sleep(self.delay).await;
        self.orders.clone()
    }

    async fn settled(&self, _trade: &Trade, settled: Result<Settled, SettlementError>) {
        self.paid.lock().push(matches!(settled, Ok(Settled::Paid { .. })));
    }
}

/// A trader written by hand that sends its orders `delay` after the round opens, whatever
/// its own clock says of the close.
fn late(name: &str, orders: Vec<(Side, u128, u64)>, delay: Duration) -> (Agent, Arc<Mutex<Vec<Refused>>>) {
    let mut agent = Agent::builder(name).seed(name).build().unwrap();
    let identity = Arc::new(Identity::from_seed(name));
    agent.on_message(move |ctx: Context, house: Address, open: RoundOpen| {
        let (orders, identity) = (orders.clone(), identity.clone());
        async move {
            tokio::time::sleep(delay).await;
            let wallet = ctx.wallet().unwrap().address();
            for (side, price, quantity) in orders {
                let pay_to = (side == Side::Sell).then_some(wallet);
                let order = SignedOrder::sign(&identity, &open.round, side, price, quantity, pay_to);
                ctx.send(house, order).await.expect("the order is delivered");
            }
        }
    });
    agent.on_message(|_: Context, _: Address, _: Cleared| std::future::ready(()));
    let told = common::hear_refusals(&mut agent);
    (agent, told)
}

/// The documented clearing rule, applied directly to the orders in time, in arrival order,
/// one unit at a time: bid units ranked by price, highest first, ask units lowest first,
/// earlier orders first at equal prices; the `k`th bid unit trades with the `k`th ask unit
/// while it bids at least what that one asks; consecutive units of one pair of orders are
/// one fill. The price is the midpoint (rounded down) from the higher of the last matched
/// ask and the best unmatched bid to the lower of the last matched bid and the best
/// unmatched ask.
fn expected(arrived: &[(Address, Side, u128, u64)]) -> Option<Clearing> {
    let units = |side: Side| -> Vec<(u128, usize)> {
        let mut units: Vec<(u128, usize)> = arrived
            .iter()
            .enumerate()
            .filter(|(_, o)| o.1 == side)
            .flat_map(|(seq, o)| std::iter::repeat_n((o.2, seq), o.3 as usize))
            .collect();
        match side {
            Side::Buy => units.sort_by_key(|&(price, seq)| (Reverse(price), seq)),
            Side::Sell => units.sort(),
        }
        units
    };
    let (bids, asks) = (units(Side::Buy), units(Side::Sell));
    let matched = bids.iter().zip(&asks).take_while(|(bid, ask)| bid.0 >= ask.0).count();
    if matched == 0 {
        return None;
    }
    let mut fills: Vec<(usize, usize, u64)> = Vec::new();
    for (bid, ask) in bids.iter().zip(&asks).take(matched) {
        match fills.last_mut() {
            Some((b, a, quantity)) if (*b, *a) == (bid.1, ask.1) => *quantity += 1,
            _ => fills.push((bid.1, ask.1, 1)),
        }
    }
    let low = bids.get(matched).map_or(asks[matched - 1].0, |next| asks[matched - 1].0.max(next.0));
    let high = asks.get(matched).map_or(bids[matched - 1].0, |next| bids[matched - 1].0.min(next.0));
    let fills = fills
        .into_iter()
        .map(|(b, a, quantity)| Fill { buyer: arrived[b].0, seller: arrived[a].0, quantity })
        .collect();
    Some(Clearing { price: low + (high - low) / 2, fills })
}

/// One trader: buys (or sells) by these orders, in time at this slot, or late.
type Spec = (Side, Vec<(u128, u64)>, bool, u32);

async fn run(specs: &[Spec]) -> Result<(), TestCaseError> {
    let p = SimPaid::new("double props mint");
    let mut traders = Vec::new();
    for (i, (side, orders, is_late, slot)) in specs.iter().enumerate() {
        let orders: Vec<(Side, u128, u64)> = orders.iter().map(|(price, q)| (*side, *price, *q)).collect();
        let name = format!("trader {i}");
        let (agent, served, told) = if *is_late {
            let (agent, told) = late(&name, orders.clone(), LATE + SLOT * *slot);
            (agent, None, Some(told))
        } else {
            let trader = Arc::new(Orders { orders: orders.clone(), delay: SLOT * *slot, paid: Mutex::default() });
            let mut agent = Agent::builder(&name).seed(&name).build().unwrap();
            let sales = Sales::new();
            double_auction::serve(
                &mut agent,
                Identity::from_seed(&name),
                trader.clone(),
                sales.clone(),
                DELIVER_WITHIN,
            );
            settlement::serve_sales(&mut agent, sales, Arc::new(Lots));
            (agent, Some(trader), None)
        };
        let address = p.add(agent);
        p.fund(address, FUNDS).await;
        traders.push((address, orders, *is_late, *slot, served, told));
    }
    let mut agent = Agent::builder("clearinghouse").seed("clearinghouse").build().unwrap();
    let house = Clearinghouse::serve(&mut agent);
    let house_address = p.add(agent);

    let addresses: Vec<Address> = traders.iter().map(|t| t.0).collect();
    let round = house.run_round(&p.context(house_address), &addresses, "kWh", OPEN_FOR).await.unwrap();

    let mut in_time: Vec<_> = traders.iter().filter(|t| !t.2).collect();
    in_time.sort_by_key(|t| t.3);
    let arrived: Vec<(Address, Side, u128, u64)> =
        in_time.iter().flat_map(|t| t.1.iter().map(|(side, price, q)| (t.0, *side, *price, *q))).collect();
    let counted: Vec<(Address, Side, u128, u64)> =
        round.orders.iter().map(|o| (o.trader, o.side, o.price, o.quantity)).collect();
    prop_assert_eq!(&counted, &arrived, "the orders in time, in arrival order, and no late one");
    prop_assert!(round.refused.is_empty(), "{:?}", round.refused);
    let clearing = expected(&arrived);
    prop_assert_eq!(&round.clearing, &clearing);

    // Every trade paid once at the uniform price, buyer to seller; no token made or lost.
    let mut balances: Vec<(Address, u128)> = addresses.iter().map(|a| (*a, FUNDS)).collect();
    balances.push((house_address, 0));
    for (fill, price) in clearing.iter().flat_map(|c| c.fills.iter().map(|f| (f, c.price))) {
        let total = price * u128::from(fill.quantity);
        balances.iter_mut().filter(|(a, _)| *a == fill.buyer).for_each(|(_, b)| *b -= total);
        balances.iter_mut().filter(|(a, _)| *a == fill.seller).for_each(|(_, b)| *b += total);
    }
    p.settles(&balances).await.map_err(TestCaseError::fail)?;
    for (address, _, _, _, served, _) in &traders {
        let bought = clearing.iter().flat_map(|c| &c.fills).filter(|f| f.buyer == *address).count();
        if let Some(served) = served {
            prop_assert_eq!(served.paid.lock().clone(), vec![true; bought]);
        }
    }
    // Every late order was refused as late, and its sender told (bounded wait).
    for (_, orders, _, _, _, told) in &traders {
        let Some(told) = told else { continue };
        for _ in 0..100 {
            if told.lock().len() >= orders.len() {
                break;
            }
            tokio::time::sleep(SLOT).await;
        }
        let causes: Vec<RefusalCause> = told.lock().iter().map(|r| r.cause).collect();
        prop_assert_eq!(causes, vec![RefusalCause::Late; orders.len()]);
    }
    p.shutdown().await;
    Ok(())
}

/// 3 to 7 traders, each a buyer or a seller with one or two orders at one of 5 prices (so
/// equal prices are common) for 1 to 4 units, about one in seven of them late, each at its own slot.
fn traders() -> impl Strategy<Value = Vec<Spec>> {
    (3usize..=7).prop_flat_map(|n| {
        let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
        let order = ((2u128..=6).prop_map(|p| p * 5), 1u64..=4);
        let trader = (side, prop::collection::vec(order, 1..=2), prop::bool::weighted(0.15));
        let slots = Just((0..n as u32).collect::<Vec<u32>>()).prop_shuffle();
        (prop::collection::vec(trader, n), slots).prop_map(|(traders, slots)| {
            traders.into_iter().zip(slots).map(|((side, orders, late), slot)| (side, orders, late, slot)).collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn a_double_auction_round_clears_as_its_rule_gives_for_the_orders_in_time(traders in traders()) {
        paused(run(&traders))?;
    }
}
