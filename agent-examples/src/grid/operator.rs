//! The grid operator: it registers in the almanac, welcomes the traders that join, runs
//! each interval's double auction as the clearinghouse, meters every household (so it
//! knows what the auction did not match), and bills each household every few intervals:
//! energy drawn from the grid at its tariff, less energy fed in at its feed-in price. A
//! household that owes pays on delivery; one that is owed is paid the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agent_core::ledger::DealId;
use agent_core::{Address, Agent, Context, Message};
use agent_protocols::double_auction::{Clearinghouse, Side, Trade};
use agent_protocols::settlement::{self, Sales, Settled};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::profile::IntervalEnergy;
use super::scenario::{OperatorSpec, Terms};

/// A trader asks the operator to be included in the auction rounds; `wallet` is where it
/// is paid for what it feeds in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.grid.Join")]
pub struct Join {
    /// The trader's wallet.
    pub wallet: Address,
}

/// The operator's answer to [`Join`]: its prices and its wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.grid.Welcome")]
pub struct Welcome {
    /// What energy from the grid costs, in µT/Wh.
    pub tariff: u64,
    /// What the operator pays for energy fed in, in µT/Wh.
    pub feed_in: u64,
    /// Where bills are paid.
    pub wallet: Address,
}

/// A bill for intervals `from..to`: `supplied_wh` from the grid at `tariff`, less
/// `exported_wh` fed in at `feed_in`. A positive net is owed to the operator, paid on
/// delivery for `deal`; a negative one the operator pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.grid.Statement")]
pub struct Statement {
    /// The deal that settles it.
    pub deal: DealId,
    /// The first interval billed.
    pub from: u32,
    /// One past the last interval billed.
    pub to: u32,
    /// Energy the operator supplied, in Wh.
    pub supplied_wh: u64,
    /// The tariff, in µT/Wh.
    pub tariff: u64,
    /// Energy fed into the grid, in Wh.
    pub exported_wh: u64,
    /// The feed-in price, in µT/Wh.
    pub feed_in: u64,
}

impl Statement {
    /// What the household owes (positive) or is owed (negative), in µT.
    pub fn net(&self) -> i128 {
        i128::from(self.supplied_wh) * i128::from(self.tariff) - i128::from(self.exported_wh) * i128::from(self.feed_in)
    }
}

/// A household's answer to a [`Statement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, Message)]
#[message(name = "agora.demo.grid.StatementAnswer")]
pub enum StatementAnswer {
    /// It agrees, and pays or awaits payment.
    Accepted,
    /// It does not, and why.
    Disputed(String),
}

/// The grid demo's own protocol (joining and billing); the auction is the library's.
pub fn protocol() -> agent_core::Protocol {
    agent_core::Protocol::new("agora.demo.grid", "1.0.0")
        .replies::<Join, Welcome>()
        .replies::<Statement, StatementAnswer>()
}

/// The almanac attribute the operator registers with.
pub const OPERATOR_ATTRIBUTE: &str = "grid.operator";

/// The good traded in interval `i`'s round.
pub fn good_of(interval: usize) -> String {
    format!("Wh in interval {interval}")
}

/// The interval a round's good names.
pub fn interval_of(good: &str) -> Option<usize> {
    good.strip_prefix("Wh in interval ")?.parse().ok()
}

/// A payment on delivery as its payer recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::WireSchema)]
pub struct Payment {
    /// What it paid for.
    pub deal: DealId,
    /// The payer's wallet.
    pub payer: Address,
    /// The payee's wallet.
    pub payee: Address,
    /// The amount, in µT.
    pub amount: u128,
    /// Whether it was paid (the escrow released); otherwise it was refunded or never locked.
    pub paid: bool,
}

/// A counted order of a round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLine {
    /// The trader.
    pub trader: Address,
    /// Buy or sell.
    pub side: Side,
    /// Its limit, in µT/Wh.
    pub price: u128,
    /// Its energy, in Wh.
    pub quantity: u64,
}

/// One interval's round as the operator ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntervalRecord {
    /// The interval.
    pub interval: u32,
    /// The uniform price, if anything traded.
    pub price: Option<u128>,
    /// The energy the clearing matched, in Wh.
    pub volume_wh: u64,
    /// The orders that counted.
    pub orders: Vec<OrderLine>,
    /// The trades.
    pub trades: Vec<Trade>,
}

/// A statement as the operator sent it, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementRecord {
    /// The household.
    pub household: Address,
    /// The statement.
    pub statement: Statement,
    /// Whether the household accepted it.
    pub accepted: bool,
}

/// A household as the operator meters it.
struct Metered {
    wallet: Address,
    energy: Vec<IntervalEnergy>,
    supplied: Vec<u64>,
    exported: Vec<u64>,
}

/// The operator's state; shared with whoever reports on the market.
pub struct Operator {
    /// Its name.
    pub name: String,
    tariff: u64,
    feed_in: u64,
    terms: Terms,
    house: OnceLock<Clearinghouse>,
    sales: Sales,
    members: Mutex<BTreeMap<Address, Address>>,
    metered: Mutex<BTreeMap<Address, Metered>>,
    rounds: Mutex<Vec<IntervalRecord>>,
    statements: Mutex<Vec<StatementRecord>>,
    payments: Mutex<Vec<Payment>>,
}

/// What the operator delivers when a bill is paid: nothing more than a receipt.
struct Receipt;

#[async_trait::async_trait]
impl settlement::Seller for Receipt {
    async fn deliver(&self, _buyer: Address, _deal: DealId, price: u128) -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "bill paid": price.to_string() }))
    }
}

impl Operator {
    /// An operator with `spec`'s prices.
    pub fn new(spec: &OperatorSpec, terms: Terms) -> Arc<Operator> {
        Arc::new(Operator {
            name: spec.name.clone(),
            tariff: spec.tariff,
            feed_in: spec.feed_in,
            terms,
            house: OnceLock::new(),
            sales: Sales::new(),
            members: Mutex::default(),
            metered: Mutex::default(),
            rounds: Mutex::default(),
            statements: Mutex::default(),
            payments: Mutex::default(),
        })
    }

    /// Makes `agent` this operator: the clearinghouse of the auction, the seller of bills,
    /// and the one traders join.
    /// Call it once: a second call keeps the first clearinghouse.
    pub fn serve(self: &Arc<Self>, agent: &mut Agent) {
        // Already set only if `serve` was called before; the first agent keeps the house.
        let _ = self.house.set(Clearinghouse::serve(agent));
        settlement::serve_sales(agent, self.sales.clone(), Arc::new(Receipt));
        let operator = self.clone();
        agent.include(protocol().on_message(move |ctx: Context, from: Address, join: Join| {
            let operator = operator.clone();
            async move {
                let wallet = ctx.wallet().map_err(|e| e.to_string())?.address();
                operator.members.lock().insert(from, join.wallet);
                let welcome = Welcome { tariff: operator.tariff, feed_in: operator.feed_in, wallet };
                ctx.reply(welcome).await.map_err(|e| e.to_string())
            }
        }));
    }

    /// Starts metering the household `agent` (paid at `wallet`), whose day is `energy`.
    pub fn meter(&self, agent: Address, wallet: Address, energy: Vec<IntervalEnergy>) {
        let n = energy.len();
        self.metered.lock().insert(agent, Metered { wallet, energy, supplied: vec![0; n], exported: vec![0; n] });
    }

    /// The traders that joined.
    pub fn members(&self) -> Vec<Address> {
        self.members.lock().keys().copied().collect()
    }

    /// Runs interval `interval`'s round among the traders that joined (open for
    /// `open_for`), then meters each household: what the auction did not cover the grid
    /// supplies, and what it did not take the grid takes.
    pub async fn run_interval(&self, ctx: &Context, interval: usize) -> Option<IntervalRecord> {
        let house = self.house.get()?;
        let traders = self.members();
        let open_for = Duration::from_millis(self.terms.open_ms);
        let round = match house.run_round(ctx, &traders, &good_of(interval), open_for).await {
            Ok(round) => round,
            Err(e) => {
                tracing::error!(interval, error = %e, "the interval's round could not run");
                return None;
            }
        };
        let orders = round
            .orders
            .iter()
            .map(|o| OrderLine { trader: o.trader, side: o.side, price: o.price, quantity: o.quantity })
            .collect();
        let record = IntervalRecord {
            interval: interval as u32,
            price: round.clearing.as_ref().map(|c| c.price),
            volume_wh: round.clearing.as_ref().map_or(0, |c| c.volume()),
            orders,
            trades: round.trades,
        };
        let mut metered = self.metered.lock();
        for (address, household) in metered.iter_mut() {
            let Some(energy) = household.energy.get(interval) else { continue };
            let bought: u64 = record.trades.iter().filter(|t| t.buyer == *address).map(|t| t.quantity).sum();
            let sold: u64 = record.trades.iter().filter(|t| t.seller == *address).map(|t| t.quantity).sum();
            let deficit = energy.consumption_wh.saturating_sub(energy.solar_wh);
            let surplus = energy.solar_wh.saturating_sub(energy.consumption_wh);
            household.supplied[interval] = deficit.saturating_sub(bought);
            household.exported[interval] = surplus.saturating_sub(sold);
        }
        drop(metered);
        self.rounds.lock().push(record.clone());
        Some(record)
    }

    /// Bills every household for intervals `from..to`, and settles each bill (retrying as
    /// the terms allow); returns once every bill is settled or given up.
    pub async fn bill(self: &Arc<Self>, ctx: &Context, from: usize, to: usize) {
        let bills: Vec<(Address, Address, Statement)> = self
            .metered
            .lock()
            .iter()
            .map(|(address, m)| {
                let range = from.min(m.supplied.len())..to.min(m.supplied.len());
                let statement = Statement {
                    deal: DealId::named(&format!("grid/{}/{address}/{from}-{to}", self.name)),
                    from: from as u32,
                    to: to as u32,
                    supplied_wh: m.supplied[range.clone()].iter().sum(),
                    tariff: self.tariff,
                    exported_wh: m.exported[range].iter().sum(),
                    feed_in: self.feed_in,
                };
                (*address, m.wallet, statement)
            })
            .collect();
        let runs = bills.into_iter().map(|(household, wallet, statement)| {
            let operator = self.clone();
            async move { operator.settle(ctx, household, wallet, statement).await }
        });
        futures::future::join_all(runs).await;
    }

    async fn settle(&self, ctx: &Context, household: Address, wallet: Address, statement: Statement) {
        let net = statement.net();
        if net > 0 {
            self.sales.expect(statement.deal, household, net.unsigned_abs());
        }
        let pause = Duration::from_millis(self.terms.retry_ms);
        let within = Duration::from_millis(self.terms.deliver_ms);
        let mut accepted = false;
        for attempt in 0..self.terms.attempts {
            if attempt > 0 {
                tokio::time::sleep(pause).await;
            }
            match ctx.request::<Statement, StatementAnswer>(household, statement.clone(), Some(within)).await {
                Ok(StatementAnswer::Accepted) => {
                    accepted = true;
                    break;
                }
                Ok(StatementAnswer::Disputed(why)) => {
                    tracing::warn!(%household, why, "a statement was disputed");
                    break;
                }
                Err(e) => tracing::debug!(%household, error = %e, "a statement was not answered; trying again"),
            }
        }
        self.statements.lock().push(StatementRecord { household, statement: statement.clone(), accepted });
        if !accepted || net >= 0 {
            return;
        }
        let paid = pay(ctx, household, wallet, net.unsigned_abs(), statement.deal, &self.terms).await;
        let payer = ctx.wallet().map(|w| w.address()).unwrap_or(ctx.address());
        self.payments.lock().push(Payment {
            deal: statement.deal,
            payer,
            payee: wallet,
            amount: net.unsigned_abs(),
            paid,
        });
    }

    /// The rounds run so far.
    pub fn rounds(&self) -> Vec<IntervalRecord> {
        self.rounds.lock().clone()
    }

    /// The statements sent so far.
    pub fn statements(&self) -> Vec<StatementRecord> {
        self.statements.lock().clone()
    }

    /// The feed-in credits it paid (or failed to).
    pub fn payments(&self) -> Vec<Payment> {
        self.payments.lock().clone()
    }

    /// Each household's metered supply and export per interval: (agent, supplied, exported).
    pub fn metering(&self) -> Vec<(Address, Vec<u64>, Vec<u64>)> {
        self.metered.lock().iter().map(|(a, m)| (*a, m.supplied.clone(), m.exported.clone())).collect()
    }
}

/// Pays `amount` to the agent `seller` (wallet `pay_to`) for `deal` on delivery, trying
/// again after a refusal or a failure as `terms` allow. True once paid.
pub(super) async fn pay(
    ctx: &Context,
    seller: Address,
    pay_to: Address,
    amount: u128,
    deal: DealId,
    terms: &Terms,
) -> bool {
    let within = Duration::from_millis(terms.deliver_ms);
    for attempt in 0..terms.attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(terms.retry_ms)).await;
        }
        match settlement::pay_on_delivery(ctx, seller, pay_to, amount, deal, within).await {
            Ok(Settled::Paid { .. }) => return true,
            Ok(Settled::Refunding { reason, .. }) => tracing::debug!(%deal, reason, "not delivered; trying again"),
            Err(e) => tracing::debug!(%deal, error = %e, "not paid; trying again"),
        }
    }
    false
}
