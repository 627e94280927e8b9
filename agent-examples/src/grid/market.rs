//! The energy market on the simulation kit: the operator, the battery and the households
//! on simulated hosts, an almanac and a ledger they share, and the day from the first
//! round to the last bill.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{FaultyLedger, Link, Outage, Outages, Sim, SimError};
use agent_core::{Address, Agent, Config, Context, Identity, Wallet};
use agent_protocols::double_auction;
use almanac::{Almanac, Registration};

use super::household::{BatteryAgent, HouseholdAgent};
use super::operator::{self, Operator, OPERATOR_ATTRIBUTE};
use super::profile::Battery;
use super::scenario::Scenario;
use super::summary::{AccountRecord, BatteryRecord, Books, HouseholdRecord, Summary};
use super::INTERVAL_MINUTES;
use crate::market::Progress;

/// How a simulated energy market runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first interval to run (0 starts at midnight; 40 at 10:00).
    pub first: usize,
    /// How many 15-minute intervals to run (96 is a day).
    pub intervals: usize,
    /// Share of messages lost on every link (0 to 1).
    pub loss: f64,
    /// When the ledger is unavailable, in market time since the start (none by default).
    pub ledger_outage: Option<(Duration, Duration)>,
    /// Agents per simulated host.
    pub agents_per_host: usize,
    /// Show a progress bar (when stdout is a terminal).
    pub progress: bool,
    /// Record the simulation's trace (costs memory on large markets).
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            first: 0,
            intervals: super::INTERVALS_PER_DAY,
            loss: 0.0,
            ledger_outage: None,
            agents_per_host: 25,
            progress: false,
            trace: false,
        }
    }
}

/// Why a market could not run (what the agents did is never an error: it is in the
/// [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The scenario is not consistent.
    #[error(transparent)]
    Scenario(#[from] super::scenario::ScenarioError),
    /// A simulated host or agent could not be started.
    #[error("cannot start the market")]
    Start(#[from] SimError),
    /// An agent could not be built.
    #[error("cannot build an agent")]
    Agent(#[from] agent_core::AgentError),
    /// The almanac refused the operator's registration.
    #[error("cannot register the operator in the almanac")]
    Almanac(#[from] almanac::AlmanacError),
    /// The faucet could not fund an agent.
    #[error("cannot fund an agent")]
    Funding(#[from] agent_core::WalletError),
    /// Too many intervals.
    #[error("the market must end by interval {max} (a year), not {asked}")]
    Intervals {
        /// Asked for.
        asked: usize,
        /// The most.
        max: usize,
    },
}

/// The key seed of a market agent called `name`.
pub(super) fn seed_of(name: &str) -> String {
    format!("grid demo agent {name}")
}

/// The most intervals a run may have: a year.
pub const MAX_INTERVALS: usize = super::INTERVALS_PER_DAY * 366;

/// Runs `scenario` like [`run`], and returns the books the invariants are checked against
/// (see [`super::check`]).
pub async fn run_books(scenario: &Scenario, seed: u64, options: &Options) -> Result<Books, MarketError> {
    run_market(scenario, seed, options).await
}

/// Runs `scenario` on the simulation kit with `seed` for `options.intervals` intervals
/// from `options.first`,
/// on the current (paused, current-thread) runtime, and checks the market's invariants
/// at the end.
pub async fn run(scenario: &Scenario, seed: u64, options: &Options) -> Result<Summary, MarketError> {
    Ok(Summary::from_books(&run_market(scenario, seed, options).await?))
}

async fn run_market(scenario: &Scenario, seed: u64, options: &Options) -> Result<Books, MarketError> {
    scenario.validate()?;
    let (first, intervals) = (options.first, options.intervals);
    let end = first.saturating_add(intervals);
    if end > MAX_INTERVALS {
        return Err(MarketError::Intervals { asked: end, max: MAX_INTERVALS });
    }
    let terms = scenario.terms;
    let sim = Sim::new(seed);
    let sim = if options.trace { sim } else { sim.without_trace() };
    sim.set_default_link(link(options.loss));
    let mint = Identity::from_seed("grid demo mint");
    let memory_ledger = Arc::new(MemoryLedger::new(Some(mint.address()), sim.clock()));
    let ledger: Arc<dyn Ledger> = match options.ledger_outage {
        Some((from, until)) => Arc::new(FaultyLedger::new(
            &sim,
            memory_ledger.clone(),
            Outages::none().add(from, until, Outage::Unavailable),
        )),
        None => memory_ledger.clone(),
    };
    let config = Config::default().with_ledger(ledger);
    let almanac = Arc::new(Almanac::new(almanac::Config::default()));
    let faucet = Wallet::new(mint, memory_ledger.clone());
    let mut accounts: Vec<(String, Address, Address, u128)> = Vec::new();

    // The operator: the clearinghouse, registered in the almanac.
    let op_spec = &scenario.operator;
    let op_host = sim.add_host_with("operator", config.clone())?;
    let op_identity = Identity::from_seed(&seed_of(&op_spec.name));
    let mut op_agent = Agent::builder(op_spec.name.clone()).identity(op_identity.clone()).build()?;
    let operator = Operator::new(op_spec, terms);
    operator.serve(&mut op_agent);
    let op_address = op_host.add(op_agent)?;
    let op_ctx = op_host.context(op_address).ok_or(SimError::Down(op_host.name()))?;
    let op_wallet = op_ctx.wallet()?.address();
    fund(&faucet, op_wallet, op_spec.funds).await?;
    accounts.push((op_spec.name.clone(), op_address, op_wallet, op_spec.funds.into()));
    let now = agent_core::envelope::unix_now_ms();
    let attributes = BTreeMap::from([(OPERATOR_ATTRIBUTE.to_owned(), "yes".to_owned())]);
    let protocols = vec![operator::protocol().digest(), double_auction::protocol().digest()];
    let record =
        Registration::sign(&op_identity, String::new(), Vec::new(), protocols, attributes, now, now + 86_400_000);
    almanac.register(record).await?;

    // The battery and the households, which find the operator in the almanac and join.
    let per_host = options.agents_per_host.max(1);
    let mut battery = None;
    let mut host = None;
    if let Some(spec) = &scenario.battery {
        let battery_host = sim.add_host_with("battery", config.clone())?;
        let identity = Identity::from_seed(&seed_of(&spec.name));
        let mut agent = Agent::builder(spec.name.clone()).identity(identity.clone()).build()?;
        let state = BatteryAgent::new(&spec.name, Battery::new(spec.capacity_wh, spec.charge_wh, spec.rate_wh), terms);
        state.serve(&mut agent, identity);
        let address = battery_host.add(agent)?;
        let ctx = battery_host.context(address).ok_or(SimError::Down(battery_host.name()))?;
        let wallet = ctx.wallet()?.address();
        fund(&faucet, wallet, spec.funds).await?;
        accounts.push((spec.name.clone(), address, wallet, spec.funds.into()));
        battery = Some((state, address, ctx));
    }
    let profiles = scenario.profiles(end);
    let mut households = Vec::new();
    for (i, (spec, energy)) in scenario.households.iter().zip(profiles).enumerate() {
        if i % per_host == 0 {
            host = Some(sim.add_host_with(&format!("households-{}", i / per_host), config.clone())?);
        }
        let Some(host) = &host else { continue };
        let identity = Identity::from_seed(&seed_of(&spec.name));
        let mut agent = Agent::builder(spec.name.clone()).identity(identity.clone()).build()?;
        let state = HouseholdAgent::new(&spec.name, energy.clone(), terms);
        state.serve(&mut agent, identity);
        let address = host.add(agent)?;
        let ctx = host.context(address).ok_or(SimError::Down(host.name()))?;
        let wallet = ctx.wallet()?.address();
        fund(&faucet, wallet, spec.funds).await?;
        accounts.push((spec.name.clone(), address, wallet, spec.funds.into()));
        operator.meter(address, wallet, energy);
        households.push((state, address, ctx));
    }
    let joins = households.iter().map(|(state, _, ctx)| state.join(ctx, almanac.as_ref()));
    let joined = futures::future::join_all(joins).await;
    if let Some((state, _, ctx)) = &battery {
        state.join(ctx, almanac.as_ref()).await;
    }
    tracing::debug!(joined = joined.iter().filter(|j| **j).count(), "households joined");

    // The day: a round every 15 minutes; bills every `bill_every` intervals, settled in
    // the background while the market goes on.
    let progress = match options.progress {
        true => Progress::new(intervals as u64, "intervals"),
        false => Progress::hidden(),
    };
    let interval_length = Duration::from_secs(60 * u64::from(INTERVAL_MINUTES));
    let metered_battery = battery.as_ref().map(|(state, address, _)| (state, *address));
    run_day(&operator, &op_ctx, metered_battery, first..end, interval_length, terms.bill_every, &progress).await;
    // Households pay what they owe in the background: wait (bounded by their retries)
    // until every payment has ended.
    let retries = (Duration::from_millis(terms.retry_ms) + Duration::from_millis(terms.deliver_ms) * 2)
        * terms.attempts
        + Duration::from_secs(60);
    let paid_by = tokio::time::Instant::now() + retries;
    while households.iter().any(|(state, _, _)| state.paying() > 0) && tokio::time::Instant::now() < paid_by {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress.finish();
    // Every escrow's deadline passes, and the refunds scheduled for it run.
    let settle =
        Duration::from_millis(terms.deliver_ms) + agent_protocols::settlement::REFUND_GRACE + Duration::from_secs(60);
    tokio::time::sleep(settle).await;

    let mut books = Books {
        tariff: op_spec.tariff,
        feed_in: op_spec.feed_in,
        minted: scenario.minted(),
        intervals: operator.rounds(),
        accounts: Vec::new(),
        households: Vec::new(),
        payments: operator.payments(),
        statements: operator.statements(),
        operator: op_spec.name.clone(),
        battery: None,
        market_time_ms: 0,
    };
    for (name, agent, wallet, funds) in accounts {
        let balance = memory_ledger.balance(wallet).await.unwrap_or(0);
        let open_escrows = memory_ledger.open_escrows(wallet, 1000).await.map_or(usize::MAX, |e| e.len());
        books.accounts.push(AccountRecord { name, agent, wallet, funds, balance, open_escrows });
    }
    let metering: BTreeMap<Address, (Vec<u64>, Vec<u64>)> =
        operator.metering().into_iter().map(|(a, s, e)| (a, (s, e))).collect();
    for (state, address, _) in &households {
        let (supplied, exported) = metering.get(address).cloned().unwrap_or_default();
        books.households.push(HouseholdRecord {
            name: state.name.clone(),
            agent: *address,
            joined: state.joined(),
            energy: state.energy().to_vec(),
            supplied,
            exported,
        });
        books.payments.extend(state.payments());
    }
    if let Some((state, address, _)) = &battery {
        books.payments.extend(state.payments());
        books.battery = Some(BatteryRecord { name: state.name.clone(), agent: *address, battery: state.battery() });
    }
    books.market_time_ms = sim.elapsed().as_millis() as u64;
    sim.shutdown().await;
    Ok(books)
}

/// Runs the intervals `days` one every `interval_length`: each round among the traders
/// that joined, the battery metered after it, and the households billed every
/// `bill_every` intervals and after the last (settled in the background while the market
/// goes on); returns once every bill is settled or given up.
pub(super) async fn run_day(
    operator: &Arc<Operator>,
    op_ctx: &Context,
    battery: Option<(&Arc<BatteryAgent>, Address)>,
    days: std::ops::Range<usize>,
    interval_length: Duration,
    bill_every: u32,
    progress: &Progress,
) {
    let (first, end) = (days.start, days.end);
    let start = tokio::time::Instant::now();
    let mut bills = tokio::task::JoinSet::new();
    let mut billed = first;
    for i in first..end {
        tokio::time::sleep_until(start + interval_length * (i - first) as u32).await;
        if let Some(record) = operator.run_interval(op_ctx, i).await {
            if let Some((state, address)) = &battery {
                let bought = record.trades.iter().filter(|t| t.buyer == *address).map(|t| t.quantity).sum();
                let sold = record.trades.iter().filter(|t| t.seller == *address).map(|t| t.quantity).sum();
                state.meter(bought, sold, record.price);
            }
        }
        if (i + 1 - first) % bill_every.max(1) as usize == 0 || i + 1 == end {
            let (operator, ctx, from) = (operator.clone(), op_ctx.clone(), billed);
            bills.spawn(async move { operator.bill(&ctx, from, i + 1).await });
            billed = i + 1;
        }
        progress.inc();
    }
    while bills.join_next().await.is_some() {}
}

/// Mints `amount` into `wallet` (nothing for none: the ledger refuses empty amounts).
pub(super) async fn fund(faucet: &Wallet, wallet: Address, amount: u64) -> Result<(), agent_core::WalletError> {
    if amount > 0 {
        faucet.mint(wallet, amount.into()).await?;
    }
    Ok(())
}

/// Links of 5-25 ms, with `loss`.
fn link(loss: f64) -> Link {
    Link::with_latency(Duration::from_millis(5)).jitter(Duration::from_millis(20)).loss(loss.clamp(0.0, 1.0))
}
