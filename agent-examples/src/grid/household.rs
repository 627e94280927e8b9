//! The traders: households, which sell their solar surplus and buy their deficit in
//! each interval's auction and settle the operator's statements, and the battery, which
//! buys at midday or when energy is cheap and sells in the evening peak or when it is
//! dear. Both find the operator in the almanac and join its auction.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::ledger::DealId;
use agent_core::{Address, Agent, Context, Identity};
use agent_protocols::double_auction::{self, RoundOpen, Side, Trade, Trader};
use agent_protocols::settlement::{self, Sales, Settled, SettlementError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::operator::{self, interval_of, Join, Payment, Statement, StatementAnswer, Welcome, OPERATOR_ATTRIBUTE};
use super::profile::{self, household_order, Battery, IntervalEnergy, Order};
use super::scenario::Terms;

fn library_side(side: profile::Side) -> Side {
    match side {
        profile::Side::Buy => Side::Buy,
        profile::Side::Sell => Side::Sell,
    }
}

fn as_orders(order: Option<Order>) -> Vec<(Side, u128, u64)> {
    order.map(|o| (library_side(o.side), u128::from(o.limit_price), o.energy_wh)).into_iter().collect()
}

/// What every trader shares: its wallet, the operator it joined, and the payments it made.
#[derive(Default)]
struct Account {
    wallet: OnceLock<Address>,
    operator: OnceLock<(Address, Welcome)>,
    payments: Mutex<Vec<Payment>>,
}

impl Account {
    fn record(&self, trade: &Trade, settled: &Result<Settled, SettlementError>) {
        let paid = matches!(settled, Ok(Settled::Paid { .. }));
        let payer = self.wallet.get().copied().unwrap_or(trade.buyer);
        self.payments.lock().push(Payment {
            deal: trade.deal,
            payer,
            payee: trade.pay_to,
            amount: trade.total(),
            paid,
        });
    }
}

/// Finds the operator in `directory`, joins its auction (trying `terms.attempts` times),
/// and returns it with its prices. `None` if none could be found or joined.
async fn join(ctx: &Context, directory: &dyn almanac::Directory, terms: &Terms) -> Option<(Address, Welcome)> {
    let wallet = ctx.wallet().ok()?.address();
    let query = almanac::Query::protocol(operator::protocol().digest()).with_attribute(OPERATOR_ATTRIBUTE, "yes");
    for attempt in 0..terms.attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let found = match directory.query(query.clone()).await {
            Ok(page) => page.records.first().map(|r| r.address),
            Err(e) => {
                tracing::debug!(error = %e, "the almanac could not be asked");
                None
            }
        };
        let Some(operator) = found else { continue };
        // The operator answers joins one at a time, each reply acknowledged over the
        // network: a large market's joins queue up, so the wait is generous.
        match ctx.request::<Join, Welcome>(operator, Join { wallet }, Some(Duration::from_secs(120))).await {
            Ok(welcome) => return Some((operator, welcome)),
            Err(e) => tracing::debug!(error = %e, "the operator did not welcome us; trying again"),
        }
    }
    None
}

/// Asks a household for its books ([`HouseholdBooks`]): how `grid --distributed` reads the
/// households running in other processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.demo.grid.BooksRequest")]
pub struct BooksRequest;

/// What a household shows of its books when asked ([`BooksRequest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.demo.grid.HouseholdBooks")]
pub struct HouseholdBooks {
    /// Its name.
    pub name: String,
    /// Whether it joined the operator's auction.
    pub joined: bool,
    /// Its solar production and consumption per interval.
    pub energy: Vec<IntervalEnergy>,
    /// The payments it made (or tried to).
    pub payments: Vec<Payment>,
    /// Bills it is still paying.
    pub paying: usize,
}

/// The protocol a household shows its books with.
pub fn books_protocol() -> agent_core::Protocol {
    agent_core::Protocol::new("agora.demo.grid.books", "1.0.0").replies::<BooksRequest, HouseholdBooks>()
}

/// A household: its day, its orders, and its books; shared with whoever reports on the
/// market.
pub struct HouseholdAgent {
    /// Its name.
    pub name: String,
    energy: Vec<IntervalEnergy>,
    terms: Terms,
    account: Account,
    statements: Mutex<Vec<DealId>>,
    paying: Mutex<std::collections::BTreeSet<DealId>>,
    in_flight: Mutex<usize>,
}

/// What a household or the battery delivers when paid: the energy is metered by the
/// grid, so only a receipt.
struct Meter;

#[async_trait::async_trait]
impl settlement::Seller for Meter {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "metered energy for": price.to_string() }))
    }
}

impl HouseholdAgent {
    /// A household whose day is `energy`.
    pub fn new(name: &str, energy: Vec<IntervalEnergy>, terms: Terms) -> Arc<HouseholdAgent> {
        Arc::new(HouseholdAgent {
            name: name.into(),
            energy,
            terms,
            account: Account::default(),
            statements: Mutex::default(),
            paying: Mutex::default(),
            in_flight: Mutex::default(),
        })
    }

    /// Makes `agent` (whose key is `identity`) this household: a trader in the double
    /// auction, a seller paid on delivery, a customer of the operator, and one that shows
    /// its books to whoever asks ([`BooksRequest`]).
    pub fn serve(self: &Arc<Self>, agent: &mut Agent, identity: Identity) {
        let shown = self.clone();
        agent.include(books_protocol().on_message(move |ctx: Context, _from: Address, _: BooksRequest| {
            let shown = shown.clone();
            async move { ctx.reply(shown.books()).await.map_err(|e| e.to_string()) }
        }));
        let sales = Sales::new();
        let within = Duration::from_millis(self.terms.deliver_ms);
        double_auction::serve(agent, identity, self.clone(), sales.clone(), within);
        settlement::serve_sales(agent, sales.clone(), Arc::new(Meter));
        let me = self.clone();
        agent.include(operator::protocol().on_message(move |ctx: Context, from: Address, statement: Statement| {
            let (me, sales) = (me.clone(), sales.clone());
            async move {
                let answer = me.answer(from, &statement, &sales);
                let (accepted, net) = (answer == StatementAnswer::Accepted, statement.net());
                let pay = match me.account.operator.get() {
                    Some(&joined) if accepted && net > 0 && me.paying.lock().insert(statement.deal) => Some(joined),
                    _ => None,
                };
                if pay.is_some() {
                    *me.in_flight.lock() += 1;
                }
                let replied = ctx.reply(answer).await.map_err(|e| e.to_string());
                if let Some((operator, welcome)) = pay {
                    // Paid in the background (retries may span a ledger outage): the agent
                    // handles one message at a time and goes on trading meanwhile.
                    let amount = net.unsigned_abs();
                    tokio::spawn(async move {
                        let deal = statement.deal;
                        let paid = operator::pay(&ctx, operator, welcome.wallet, amount, deal, &me.terms).await;
                        let payer = me.account.wallet.get().copied().unwrap_or(ctx.address());
                        let payment = Payment { deal, payer, payee: welcome.wallet, amount, paid };
                        me.account.payments.lock().push(payment);
                        let mut in_flight = me.in_flight.lock();
                        *in_flight = in_flight.saturating_sub(1);
                    });
                }
                replied
            }
        }));
    }

    /// Checks a statement against the household's own meter: from its operator, at its
    /// prices, for no more than it drew or fed in. A statement already accepted is
    /// accepted again (its answer may have been lost) but settled once.
    fn answer(&self, from: Address, statement: &Statement, sales: &Sales) -> StatementAnswer {
        let disputed = |why: &str| StatementAnswer::Disputed(why.into());
        let Some(&(operator, welcome)) = self.account.operator.get() else { return disputed("not a member") };
        if from != operator || statement.tariff != welcome.tariff || statement.feed_in != welcome.feed_in {
            return disputed("not from our operator, or at other prices");
        }
        let (from_i, to_i) = (statement.from as usize, statement.to as usize);
        let Some(days) = self.energy.get(from_i..to_i.min(self.energy.len())) else {
            return disputed("no such intervals");
        };
        let deficit: u64 = days.iter().map(|e| e.consumption_wh.saturating_sub(e.solar_wh)).sum();
        let surplus: u64 = days.iter().map(|e| e.solar_wh.saturating_sub(e.consumption_wh)).sum();
        if statement.supplied_wh > deficit || statement.exported_wh > surplus {
            return disputed("more energy than the meter shows");
        }
        let mut seen = self.statements.lock();
        if seen.contains(&statement.deal) {
            return StatementAnswer::Accepted;
        }
        seen.push(statement.deal);
        drop(seen);
        if statement.net() < 0 {
            sales.expect(statement.deal, operator, statement.net().unsigned_abs());
        }
        StatementAnswer::Accepted
    }

    /// Finds the operator in `directory` and joins its auction; false if it could not.
    pub async fn join(&self, ctx: &Context, directory: &dyn almanac::Directory) -> bool {
        if let Ok(wallet) = ctx.wallet() {
            // Set at the first join; a later join has the same wallet.
            let _ = self.account.wallet.set(wallet.address());
        }
        match join(ctx, directory, &self.terms).await {
            Some(joined) => self.account.operator.set(joined).is_ok(),
            None => false,
        }
    }

    /// Its solar production and consumption per interval.
    pub fn energy(&self) -> &[IntervalEnergy] {
        &self.energy
    }

    /// The payments it made (or tried to).
    pub fn payments(&self) -> Vec<Payment> {
        self.account.payments.lock().clone()
    }

    /// Bills it is still paying (trying again after a refusal or an outage).
    pub fn paying(&self) -> usize {
        *self.in_flight.lock()
    }

    /// Whether it joined the operator's auction.
    pub fn joined(&self) -> bool {
        self.account.operator.get().is_some()
    }

    /// Its books as they stand.
    pub fn books(&self) -> HouseholdBooks {
        HouseholdBooks {
            name: self.name.clone(),
            joined: self.joined(),
            energy: self.energy.clone(),
            payments: self.payments(),
            paying: self.paying(),
        }
    }
}

#[async_trait::async_trait]
impl Trader for HouseholdAgent {
    async fn orders(&self, round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        let (Some(interval), Some((_, welcome))) = (interval_of(&round.good), self.account.operator.get()) else {
            return Vec::new();
        };
        let Some(energy) = self.energy.get(interval) else { return Vec::new() };
        as_orders(household_order(energy.solar_wh, energy.consumption_wh, welcome.tariff, welcome.feed_in))
    }

    async fn settled(&self, trade: &Trade, settled: Result<Settled, SettlementError>) {
        self.account.record(trade, &settled);
    }
}

/// The battery: its charge, the prices it has seen, and its books.
pub struct BatteryAgent {
    /// Its name.
    pub name: String,
    battery: Mutex<Battery>,
    prices: Mutex<Vec<u64>>,
    terms: Terms,
    account: Account,
}

/// How many recent clearing prices the battery's policy looks at.
const RECENT: usize = 8;

impl BatteryAgent {
    /// A battery agent for `battery`.
    pub fn new(name: &str, battery: Battery, terms: Terms) -> Arc<BatteryAgent> {
        Arc::new(BatteryAgent {
            name: name.into(),
            battery: Mutex::new(battery),
            prices: Mutex::default(),
            terms,
            account: Account::default(),
        })
    }

    /// Makes `agent` (whose key is `identity`) the battery: a trader in the double
    /// auction and a seller paid on delivery.
    pub fn serve(self: &Arc<Self>, agent: &mut Agent, identity: Identity) {
        let sales = Sales::new();
        let within = Duration::from_millis(self.terms.deliver_ms);
        double_auction::serve(agent, identity, self.clone(), sales.clone(), within);
        settlement::serve_sales(agent, sales, Arc::new(Meter));
    }

    /// Finds the operator in `directory` and joins its auction; false if it could not.
    pub async fn join(&self, ctx: &Context, directory: &dyn almanac::Directory) -> bool {
        if let Ok(wallet) = ctx.wallet() {
            // Set at the first join; a later join has the same wallet.
            let _ = self.account.wallet.set(wallet.address());
        }
        match join(ctx, directory, &self.terms).await {
            Some(joined) => self.account.operator.set(joined).is_ok(),
            None => false,
        }
    }

    /// The grid meters an interval: the battery charged `bought_wh` and discharged
    /// `sold_wh`, and the interval cleared at `price` (published by the operator).
    pub fn meter(&self, bought_wh: u64, sold_wh: u64, price: Option<u128>) {
        let mut battery = self.battery.lock();
        battery.settle(profile::Side::Buy, bought_wh);
        battery.settle(profile::Side::Sell, sold_wh);
        if let Some(price) = price {
            let mut prices = self.prices.lock();
            prices.push(u64::try_from(price).unwrap_or(u64::MAX));
            if prices.len() > RECENT {
                prices.remove(0);
            }
        }
    }

    /// The battery as it stands.
    pub fn battery(&self) -> Battery {
        *self.battery.lock()
    }

    /// The payments it made (or tried to).
    pub fn payments(&self) -> Vec<Payment> {
        self.account.payments.lock().clone()
    }
}

#[async_trait::async_trait]
impl Trader for BatteryAgent {
    async fn orders(&self, round: &RoundOpen) -> Vec<(Side, u128, u64)> {
        let (Some(interval), Some((_, welcome))) = (interval_of(&round.good), self.account.operator.get()) else {
            return Vec::new();
        };
        let prices = self.prices.lock().clone();
        as_orders(self.battery.lock().order(interval, &prices, welcome.tariff, welcome.feed_in))
    }

    async fn settled(&self, trade: &Trade, settled: Result<Settled, SettlementError>) {
        self.account.record(trade, &settled);
    }
}
