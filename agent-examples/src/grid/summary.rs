//! The end of an energy market: each interval's clearing price and energy, each
//! household's trades and bills, the battery and the operator, and the market's
//! invariants, checked against the operator's rounds and meters, the traders' payments
//! and the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use agent_core::ledger::DealId;
use agent_core::Address;
use agent_protocols::double_auction::Side;
use serde::Serialize;

use super::operator::{IntervalRecord, Payment, StatementRecord};
use super::profile::{self, IntervalEnergy};
use super::INTERVAL_MINUTES;
use crate::market::{Invariants, Table};

/// Everything the invariants are checked against, gathered at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Books {
    /// The operator's tariff, in µT/Wh.
    pub tariff: u64,
    /// Its feed-in price, in µT/Wh.
    pub feed_in: u64,
    /// Money minted at the start, in µT.
    pub minted: u128,
    /// Each interval's round, as the operator (the clearinghouse) ran it.
    pub intervals: Vec<IntervalRecord>,
    /// Every wallet in the market: households, the battery, the operator.
    pub accounts: Vec<AccountRecord>,
    /// Each household's day and what the operator metered.
    pub households: Vec<HouseholdRecord>,
    /// Every payment on delivery, as its payer recorded it.
    pub payments: Vec<Payment>,
    /// Every statement the operator sent.
    pub statements: Vec<StatementRecord>,
    /// The operator's name.
    pub operator: String,
    /// The battery at the end, if there is one.
    pub battery: Option<BatteryRecord>,
    /// Market time the run took, in ms.
    pub market_time_ms: u64,
}

/// The battery at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatteryRecord {
    /// Its name.
    pub name: String,
    /// Its agent.
    pub agent: Address,
    /// Its charge and capacity.
    pub battery: profile::Battery,
}

/// A wallet at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountRecord {
    /// Whose.
    pub name: String,
    /// The agent.
    pub agent: Address,
    /// Its wallet.
    pub wallet: Address,
    /// Minted to it at the start, in µT.
    pub funds: u128,
    /// Its balance at the end, in µT.
    pub balance: u128,
    /// Escrows it locked still open at the end.
    pub open_escrows: usize,
}

/// A household's day as it lived it and as the operator metered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdRecord {
    /// Its name.
    pub name: String,
    /// Its agent.
    pub agent: Address,
    /// Whether it joined the auction.
    pub joined: bool,
    /// Solar production and consumption per interval.
    pub energy: Vec<IntervalEnergy>,
    /// Energy the operator supplied per interval, in Wh.
    pub supplied: Vec<u64>,
    /// Energy fed into the grid per interval, in Wh.
    pub exported: Vec<u64>,
}

/// How an energy market ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Each interval.
    pub intervals: Vec<IntervalLine>,
    /// Each household, in scenario order.
    pub households: Vec<HouseholdLine>,
    /// The battery, if there is one.
    pub battery: Option<BatteryLine>,
    /// The operator.
    pub operator: OperatorLine,
    /// Market time the run took, in ms.
    pub market_time_ms: u64,
    /// The invariants, checked.
    pub invariants: Invariants,
}

/// One interval of the market.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntervalLine {
    /// The interval (0 starts at midnight).
    pub interval: u32,
    /// Its start ("13:45").
    pub time: String,
    /// The clearing price in µT/Wh, if anything traded.
    pub price: Option<u128>,
    /// Energy traded in the auction, in Wh.
    pub traded_wh: u64,
    /// Trades.
    pub trades: usize,
    /// Trades paid (escrow released to the seller).
    pub trades_paid: usize,
    /// Energy the operator supplied to households, in Wh.
    pub supplied_wh: u64,
    /// Energy households fed into the grid, in Wh.
    pub exported_wh: u64,
}

/// One household's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HouseholdLine {
    /// Its name.
    pub name: String,
    /// Energy bought in the auction, in Wh.
    pub bought_wh: u64,
    /// Energy sold in the auction, in Wh.
    pub sold_wh: u64,
    /// Energy from the grid, in Wh.
    pub supplied_wh: u64,
    /// Energy fed into the grid, in Wh.
    pub exported_wh: u64,
    /// Paid out (trades and bills), in µT.
    pub paid: u128,
    /// Received (sales and feed-in credits), in µT.
    pub received: u128,
    /// Its balance at the end, in µT.
    pub balance: u128,
}

/// The battery's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatteryLine {
    /// Its name.
    pub name: String,
    /// Charge at the end, in Wh.
    pub charge_wh: u64,
    /// Capacity, in Wh.
    pub capacity_wh: u64,
    /// Energy bought, in Wh.
    pub bought_wh: u64,
    /// Energy sold, in Wh.
    pub sold_wh: u64,
    /// Paid out, in µT.
    pub paid: u128,
    /// Received, in µT.
    pub received: u128,
    /// Its balance at the end, in µT.
    pub balance: u128,
}

/// The operator's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorLine {
    /// Its name.
    pub name: String,
    /// Energy supplied to households, in Wh.
    pub supplied_wh: u64,
    /// Energy taken from households, in Wh.
    pub exported_wh: u64,
    /// Bills paid to it, in µT.
    pub received: u128,
    /// Feed-in credits it paid, in µT.
    pub paid: u128,
    /// Its balance at the end, in µT.
    pub balance: u128,
}

/// Money in the grid demo: micro-tokens, printed as tokens with three decimals.
pub fn tokens(micro: u128) -> String {
    format!("{}.{:03}", micro / 1_000_000, (micro % 1_000_000) / 1_000)
}

/// The start of `interval` as "HH:MM" (wrapping at midnight).
pub fn clock(interval: usize) -> String {
    let minutes = (interval * INTERVAL_MINUTES as usize) % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn side_total(record: &IntervalRecord, trader: Address, side: Side) -> u64 {
    record
        .trades
        .iter()
        .filter(|t| if side == Side::Buy { t.buyer == trader } else { t.seller == trader })
        .map(|t| t.quantity)
        .sum()
}

/// Checks the market's invariants against `books`.
pub fn check(books: &Books) -> Invariants {
    let mut invariants = Invariants::default();

    // Energy: the auction's sides balance, within the orders and as much as the orders
    // allow; and every household's energy adds up, interval by interval.
    let mut unbalanced = Vec::new();
    for record in &books.intervals {
        let i = record.interval;
        let mut sold: BTreeMap<Address, u64> = BTreeMap::new();
        let mut bought: BTreeMap<Address, u64> = BTreeMap::new();
        for trade in &record.trades {
            *sold.entry(trade.seller).or_default() += trade.quantity;
            *bought.entry(trade.buyer).or_default() += trade.quantity;
        }
        let (sold_wh, bought_wh): (u64, u64) = (sold.values().sum(), bought.values().sum());
        if sold_wh != bought_wh || sold_wh != record.volume_wh {
            unbalanced
                .push(format!("interval {i}: {sold_wh} Wh sold, {bought_wh} bought, {} cleared", record.volume_wh));
        }
        let ordered = |trader: &Address, side: Side| -> u64 {
            record.orders.iter().filter(|o| o.trader == *trader && o.side == side).map(|o| o.quantity).sum()
        };
        for (trader, wh) in &sold {
            if *wh > ordered(trader, Side::Sell) {
                unbalanced.push(format!("interval {i}: {trader} sold {wh} Wh, more than it asked to"));
            }
        }
        for (trader, wh) in &bought {
            if *wh > ordered(trader, Side::Buy) {
                unbalanced.push(format!("interval {i}: {trader} bought {wh} Wh, more than it bid for"));
            }
        }
        let reference: Vec<profile::Order> = record
            .orders
            .iter()
            .map(|o| profile::Order {
                side: if o.side == Side::Buy { profile::Side::Buy } else { profile::Side::Sell },
                energy_wh: o.quantity,
                limit_price: u64::try_from(o.price).unwrap_or(u64::MAX),
            })
            .collect();
        let most = super::clear(&reference).traded_wh;
        if most != record.volume_wh {
            unbalanced.push(format!("interval {i}: {} Wh cleared, the orders allow {most}", record.volume_wh));
        }
    }
    for household in &books.households {
        for record in &books.intervals {
            let i = record.interval as usize;
            let (Some(e), Some(supplied), Some(exported)) =
                (household.energy.get(i), household.supplied.get(i), household.exported.get(i))
            else {
                unbalanced.push(format!("{} has no meter reading for interval {i}", household.name));
                continue;
            };
            let bought = side_total(record, household.agent, Side::Buy);
            let sold = side_total(record, household.agent, Side::Sell);
            let inflow = u128::from(e.solar_wh) + u128::from(bought) + u128::from(*supplied);
            let outflow = u128::from(e.consumption_wh) + u128::from(sold) + u128::from(*exported);
            if inflow != outflow {
                unbalanced.push(format!("{} in interval {i}: {inflow} Wh in, {outflow} Wh out", household.name));
            }
        }
    }
    let traded: u64 = books.intervals.iter().map(|r| r.volume_wh).sum();
    invariants.check(
        "traded energy per interval balanced (sold = bought), and every household's energy adds up",
        format!("{} intervals, {traded} Wh traded", books.intervals.len()),
        unbalanced,
    );

    // Prices: one per round, within every matched order's limit.
    let mut above_bid = Vec::new();
    let mut below_ask = Vec::new();
    let mut trades = 0usize;
    for record in &books.intervals {
        for trade in &record.trades {
            trades += 1;
            if Some(trade.price) != record.price {
                above_bid.push(format!(
                    "interval {}: a trade at {} in a round cleared at {:?}",
                    record.interval, trade.price, record.price
                ));
            }
            let limit = |trader: Address, side: Side| {
                record.orders.iter().find(|o| o.trader == trader && o.side == side).map(|o| o.price)
            };
            match limit(trade.buyer, Side::Buy) {
                Some(bid) if trade.price <= bid => {}
                bid => above_bid.push(format!(
                    "interval {}: {} paid {} per Wh, bid {bid:?}",
                    record.interval, trade.buyer, trade.price
                )),
            }
            match limit(trade.seller, Side::Sell) {
                Some(ask) if trade.price >= ask => {}
                ask => below_ask.push(format!(
                    "interval {}: {} sold at {} per Wh, asked {ask:?}",
                    record.interval, trade.seller, trade.price
                )),
            }
        }
    }
    invariants.check("no buyer above its bid", format!("{trades} trades"), above_bid);
    invariants.check("no seller below its ask", format!("{trades} trades"), below_ask);

    let held: u128 = books.accounts.iter().map(|a| a.balance).sum();
    let conserved = match held == books.minted {
        true => Vec::new(),
        false => vec![format!("{} minted, {} held", tokens(books.minted), tokens(held))],
    };
    invariants.check(
        "money conserved (sum of wallets = minted)",
        format!("{} in {} wallets", tokens(books.minted), books.accounts.len()),
        conserved,
    );

    // The operator supplies exactly what the auction left, bills it at its tariff (less
    // feed-in at its price), and every bill is settled.
    let mut uncovered = Vec::new();
    let paid_deals: BTreeSet<DealId> = books.payments.iter().filter(|p| p.paid).map(|p| p.deal).collect();
    for household in &books.households {
        let mut supplied_total = 0u64;
        let mut exported_total = 0u64;
        for record in &books.intervals {
            let i = record.interval as usize;
            let (Some(e), Some(supplied), Some(exported)) =
                (household.energy.get(i), household.supplied.get(i), household.exported.get(i))
            else {
                continue;
            };
            let deficit = e.consumption_wh.saturating_sub(e.solar_wh);
            let surplus = e.solar_wh.saturating_sub(e.consumption_wh);
            let bought = side_total(record, household.agent, Side::Buy);
            let sold = side_total(record, household.agent, Side::Sell);
            if *supplied != deficit.saturating_sub(bought) || *exported != surplus.saturating_sub(sold) {
                uncovered.push(format!(
                    "{} in interval {i}: needed {deficit} Wh, bought {bought}, the grid supplied {supplied}",
                    household.name
                ));
            }
            supplied_total += supplied;
            exported_total += exported;
        }
        let statements: Vec<&StatementRecord> =
            books.statements.iter().filter(|s| s.household == household.agent).collect();
        let billed: u64 = statements.iter().map(|s| s.statement.supplied_wh).sum();
        let credited: u64 = statements.iter().map(|s| s.statement.exported_wh).sum();
        if billed != supplied_total || credited != exported_total {
            uncovered.push(format!("{} was billed for {billed} of {supplied_total} Wh supplied, credited {credited} of {exported_total} Wh fed in", household.name));
        }
        for s in statements {
            let st = &s.statement;
            if st.tariff != books.tariff || st.feed_in != books.feed_in {
                uncovered.push(format!(
                    "{} was billed at {} µT/Wh, not the tariff {}",
                    household.name, st.tariff, books.tariff
                ));
            } else if !s.accepted {
                uncovered.push(format!(
                    "{}'s statement for intervals {}..{} was not accepted",
                    household.name, st.from, st.to
                ));
            } else if st.net() != 0 && !paid_deals.contains(&st.deal) {
                uncovered.push(format!(
                    "{}'s statement for intervals {}..{} ({} µT) was not settled",
                    household.name,
                    st.from,
                    st.to,
                    st.net()
                ));
            }
        }
    }
    let supplied: u64 = books.households.iter().flat_map(|h| h.supplied.iter()).sum();
    invariants.check(
        "the operator covers unmatched demand at its tariff, and every bill is settled",
        format!("{supplied} Wh supplied, {} statements", books.statements.len()),
        uncovered,
    );

    let open: Vec<String> = books
        .accounts
        .iter()
        .filter(|a| a.open_escrows > 0)
        .map(|a| format!("{} still has {} escrows locked", a.name, a.open_escrows))
        .collect();
    invariants.check("every escrow settled at the end", format!("{} wallets", books.accounts.len()), open);

    let mut moved = Vec::new();
    for account in &books.accounts {
        let out: u128 = books.payments.iter().filter(|p| p.paid && p.payer == account.wallet).map(|p| p.amount).sum();
        let into: u128 = books.payments.iter().filter(|p| p.paid && p.payee == account.wallet).map(|p| p.amount).sum();
        let expected = (account.funds + into).checked_sub(out);
        if expected != Some(account.balance) {
            moved.push(format!(
                "{} holds {}, its payments say {}",
                account.name,
                tokens(account.balance),
                expected.map_or("less than nothing".into(), tokens)
            ));
        }
    }
    let paid = books.payments.iter().filter(|p| p.paid).count();
    invariants.check(
        "every wallet moved exactly what its payments say",
        format!("{paid} of {} payments made", books.payments.len()),
        moved,
    );
    invariants
}

impl Summary {
    /// Sums `books` up and checks the invariants.
    pub fn from_books(books: &Books) -> Summary {
        let (operator, market_time_ms) = (books.operator.as_str(), books.market_time_ms);
        let battery = books.battery.as_ref().map(|b| (b.name.clone(), b.agent, b.battery));
        let invariants = check(books);
        let paid_deals: BTreeSet<DealId> = books.payments.iter().filter(|p| p.paid).map(|p| p.deal).collect();
        let intervals = books
            .intervals
            .iter()
            .map(|r| {
                let i = r.interval as usize;
                IntervalLine {
                    interval: r.interval,
                    time: clock(i),
                    price: r.price,
                    traded_wh: r.volume_wh,
                    trades: r.trades.len(),
                    trades_paid: r.trades.iter().filter(|t| paid_deals.contains(&t.deal)).count(),
                    supplied_wh: books.households.iter().filter_map(|h| h.supplied.get(i)).sum(),
                    exported_wh: books.households.iter().filter_map(|h| h.exported.get(i)).sum(),
                }
            })
            .collect();
        let money = |agent: Address| -> (u128, u128, u128) {
            let Some(account) = books.accounts.iter().find(|a| a.agent == agent) else { return (0, 0, 0) };
            let out = books.payments.iter().filter(|p| p.paid && p.payer == account.wallet).map(|p| p.amount).sum();
            let into = books.payments.iter().filter(|p| p.paid && p.payee == account.wallet).map(|p| p.amount).sum();
            (out, into, account.balance)
        };
        let traded =
            |agent: Address, side: Side| -> u64 { books.intervals.iter().map(|r| side_total(r, agent, side)).sum() };
        let households = books
            .households
            .iter()
            .map(|h| {
                let (paid, received, balance) = money(h.agent);
                HouseholdLine {
                    name: h.name.clone(),
                    bought_wh: traded(h.agent, Side::Buy),
                    sold_wh: traded(h.agent, Side::Sell),
                    supplied_wh: h.supplied.iter().sum(),
                    exported_wh: h.exported.iter().sum(),
                    paid,
                    received,
                    balance,
                }
            })
            .collect();
        let battery = battery.map(|(name, agent, state)| {
            let (paid, received, balance) = money(agent);
            BatteryLine {
                name,
                charge_wh: state.charge_wh(),
                capacity_wh: state.capacity_wh(),
                bought_wh: traded(agent, Side::Buy),
                sold_wh: traded(agent, Side::Sell),
                paid,
                received,
                balance,
            }
        });
        let operator_account = books.accounts.iter().find(|a| a.name == operator);
        let (paid, received, balance) = operator_account.map_or((0, 0, 0), |a| money(a.agent));
        let operator = OperatorLine {
            name: operator.into(),
            supplied_wh: books.households.iter().flat_map(|h| h.supplied.iter()).sum(),
            exported_wh: books.households.iter().flat_map(|h| h.exported.iter()).sum(),
            received,
            paid,
            balance,
        };
        Summary { intervals, households, battery, operator, market_time_ms, invariants }
    }

    /// Energy traded in the auction over the run, in Wh.
    pub fn traded_wh(&self) -> u64 {
        self.intervals.iter().map(|i| i.traded_wh).sum()
    }

    /// Each interval's (clearing price, traded energy), for [`super::plot::plot_day_svg`].
    pub fn plot_points(&self) -> Vec<super::plot::IntervalOutcome> {
        self.intervals.iter().map(|i| (i.price.map(|p| u64::try_from(p).unwrap_or(u64::MAX)), i.traded_wh)).collect()
    }
}

fn kwh(wh: u64) -> String {
    format!("{}.{:03}", wh / 1_000, wh % 1_000)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 40;
        let mut hours = Table::new(["hour", "price µT/Wh", "traded kWh", "grid kWh", "fed in kWh", "trades paid"]);
        for chunk in self.intervals.chunks(4) {
            let Some(first) = chunk.first() else { continue };
            let prices: Vec<u128> = chunk.iter().filter_map(|i| i.price).collect();
            let price = match prices.len() {
                0 => "-".to_owned(),
                n => (prices.iter().sum::<u128>() / n as u128).to_string(),
            };
            let sum = |g: fn(&IntervalLine) -> u64| chunk.iter().map(g).sum::<u64>();
            let trades: usize = chunk.iter().map(|i| i.trades).sum();
            let paid: usize = chunk.iter().map(|i| i.trades_paid).sum();
            hours.row([
                first.time.clone(),
                price,
                kwh(sum(|i| i.traded_wh)),
                kwh(sum(|i| i.supplied_wh)),
                kwh(sum(|i| i.exported_wh)),
                format!("{paid}/{trades}"),
            ]);
        }
        writeln!(f, "Per hour (mean clearing price of the intervals that cleared)")?;
        write!(f, "{hours}")?;
        let mut households = Table::new([
            "household",
            "bought kWh",
            "sold kWh",
            "grid kWh",
            "fed in kWh",
            "paid",
            "received",
            "balance",
        ]);
        for h in self.households.iter().take(SHOWN) {
            households.row([
                h.name.clone(),
                kwh(h.bought_wh),
                kwh(h.sold_wh),
                kwh(h.supplied_wh),
                kwh(h.exported_wh),
                tokens(h.paid),
                tokens(h.received),
                tokens(h.balance),
            ]);
        }
        writeln!(f, "\nHouseholds (tokens)")?;
        write!(f, "{households}")?;
        if self.households.len() > SHOWN {
            writeln!(f, "... and {} more (--json lists all)", self.households.len() - SHOWN)?;
        }
        if let Some(b) = &self.battery {
            writeln!(
                f,
                "\nBattery {}: bought {} kWh, sold {} kWh, holds {} of {} kWh; paid {}, received {}, balance {}",
                b.name,
                kwh(b.bought_wh),
                kwh(b.sold_wh),
                kwh(b.charge_wh),
                kwh(b.capacity_wh),
                tokens(b.paid),
                tokens(b.received),
                tokens(b.balance)
            )?;
        }
        let o = &self.operator;
        writeln!(
            f,
            "Operator {}: supplied {} kWh, took {} kWh fed in; bills paid {}, feed-in paid {}, balance {}",
            o.name,
            kwh(o.supplied_wh),
            kwh(o.exported_wh),
            tokens(o.received),
            tokens(o.paid),
            tokens(o.balance)
        )?;
        writeln!(f, "\nInvariants (market time {:.1} s)", self.market_time_ms as f64 / 1000.0)?;
        write!(f, "{}", self.invariants.table())
    }
}
