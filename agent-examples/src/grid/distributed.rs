//! The energy market across OS processes over libp2p: an almanac node, a ledger node and
//! household nodes (each serving a shard of the households) as children of the demo
//! binary, and the operator (the clearinghouse) and the battery in the demo's own process,
//! which drives the intervals as [`super::run`] does. An interval lasts `ms_per_interval`
//! ms of real time (the demo's `--ms-per-interval`, 1000 by default), and the terms are
//! scaled to it ([`Terms::real_time`](super::Terms::real_time)), so hours of market run in
//! seconds. At the end the households are asked for their books over the network, and the
//! invariants are checked against those books, the operator's rounds, meters and
//! statements, and the ledger node.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, RemoteLedger};
use agent_core::transport::NetworkConfig;
use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet};
use agent_protocols::double_auction;
use almanac::{AlmanacResolver, Registration, RemoteAlmanac, WeightedEndpoint};

use super::household::{BatteryAgent, BooksRequest, HouseholdAgent, HouseholdBooks};
use super::market::{fund, run_day, seed_of, MarketError, Options, MAX_INTERVALS};
use super::operator::{self, Operator, OPERATOR_ATTRIBUTE};
use super::profile::Battery;
use super::scenario::Scenario;
use super::summary::{AccountRecord, BatteryRecord, Books, HouseholdRecord, Summary};
use super::INTERVAL_MINUTES;
use crate::market::distributed::{loopback, spawn, DistributedError, NodeAddress};
use crate::market::Progress;

/// How long registrations last in the almanac (the almanac node allows as much).
pub const REGISTERED_FOR: Duration = Duration::from_secs(31 * 24 * 3600);

/// The shortest and longest interval in real time, in ms.
pub const MS_PER_INTERVAL: std::ops::RangeInclusive<u64> = 250..=900_000;

/// The mint of the market's ledger (the same as on the simulation kit).
pub fn mint() -> Identity {
    Identity::from_seed("grid demo mint")
}

/// The agent and the wallet of the market agent called `name`.
fn addresses_of(name: &str) -> (Address, Address) {
    let identity = Identity::from_seed(&seed_of(name));
    (identity.address(), identity.derive("wallet").address())
}

/// A node of households, serving until dropped.
pub struct Households {
    /// Their bureau.
    pub bureau: Bureau,
    /// Where it listens.
    pub address: NodeAddress,
    /// Keeps them registered in the almanac (the operator reaches them through it).
    pub registrar: almanac::Registrar,
    /// The households, in scenario order.
    pub households: Vec<Arc<HouseholdAgent>>,
}

/// Starts the households of shard `shard` (household `i` is in shard `i % shards`) for
/// the intervals before `end`, with the scenario's terms scaled to `ms_per_interval`, in a
/// bureau of their own that listens on loopback and is registered in the almanac; each
/// finds the operator there and joins its auction before this returns.
pub async fn serve_households(
    scenario: &Scenario,
    end: usize,
    ms_per_interval: u64,
    (shard, shards): (usize, usize),
    almanac: &NodeAddress,
    ledger: &NodeAddress,
) -> Result<Households, DistributedError> {
    scenario.validate().map_err(MarketError::from)?;
    check_timing(end, ms_per_interval)?;
    let terms = scenario.terms.real_time(ms_per_interval);
    let directory = Arc::new(RemoteAlmanac::new(almanac.peer_id, almanac.addrs.clone())?);
    let ledger = Arc::new(RemoteLedger::new(ledger.peer_id, ledger.addrs.clone())?);
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger))?;
    let mut households = Vec::new();
    let mut contexts = Vec::new();
    let profiles = scenario.profiles(end);
    for (i, (spec, energy)) in scenario.households.iter().zip(profiles).enumerate() {
        if i % shards.max(1) != shard {
            continue;
        }
        let identity = Identity::from_seed(&seed_of(&spec.name));
        let mut agent =
            Agent::builder(spec.name.clone()).identity(identity.clone()).build().map_err(MarketError::from)?;
        let state = HouseholdAgent::new(&spec.name, energy, terms);
        state.serve(&mut agent, identity);
        let address = bureau.add(agent)?;
        let ctx = bureau.context(address).ok_or_else(|| DistributedError::Stopped(spec.name.clone()))?;
        households.push(state);
        contexts.push(ctx);
    }
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    let info = bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let config = almanac::RegistrarConfig::default().with_ttl(REGISTERED_FOR);
    let registrar = almanac::register_bureau(&bureau, directory.clone(), config).await?;
    let joins = households.iter().zip(&contexts).map(|(state, ctx)| state.join(ctx, directory.as_ref()));
    let joined = futures::future::join_all(joins).await;
    tracing::debug!(shard, joined = joined.iter().filter(|j| **j).count(), "households joined");
    let address = NodeAddress { peer_id: info.peer_id, addrs: info.listen_addrs };
    Ok(Households { bureau, address, registrar, households })
}

fn check_timing(end: usize, ms_per_interval: u64) -> Result<(), DistributedError> {
    if end > MAX_INTERVALS {
        return Err(MarketError::Intervals { asked: end, max: MAX_INTERVALS }.into());
    }
    if !MS_PER_INTERVAL.contains(&ms_per_interval) {
        return Err(DistributedError::Invalid(format!(
            "an interval must last 250 to 900000 ms of real time, not {ms_per_interval}"
        )));
    }
    Ok(())
}

/// Signs the almanac registration of the agent `identity` on the node `peer_id` at
/// `endpoints`.
fn registration(
    identity: &Identity,
    (peer_id, endpoints): (String, Vec<WeightedEndpoint>),
    protocols: Vec<agent_core::ProtocolDigest>,
    attributes: BTreeMap<String, String>,
) -> Registration {
    let now = agent_core::envelope::unix_now_ms();
    let until = now.saturating_add(REGISTERED_FOR.as_millis() as u64);
    Registration::sign(identity, peer_id, endpoints, protocols, attributes, now, until)
}

/// Runs `scenario` across processes for `options.intervals` intervals from
/// `options.first`, each lasting `ms_per_interval` ms of real time: an almanac node, a
/// ledger node and `shards` household nodes as children (`exe` is the demo binary, run
/// with `--role`), the operator and the battery here. Every wallet is funded through the
/// ledger node before trading; the invariants are checked against the books the
/// households report over the network, the operator's records and the ledger node.
pub async fn run(
    exe: &Path,
    scenario: &Scenario,
    shards: usize,
    ms_per_interval: u64,
    options: &Options,
) -> Result<Summary, DistributedError> {
    scenario.validate().map_err(MarketError::from)?;
    let (first, intervals) = (options.first, options.intervals);
    let end = first.saturating_add(intervals);
    check_timing(end, ms_per_interval)?;
    let terms = scenario.terms.real_time(ms_per_interval);
    let shards = shards.clamp(1, scenario.households.len().max(1));
    let dir = tempfile::tempdir()?;
    let scenario_path = dir.path().join("scenario.json");
    std::fs::write(&scenario_path, serde_json::to_string(scenario).map_err(std::io::Error::other)?)?;
    let started = tokio::time::Instant::now();

    let almanac = spawn(exe, "almanac", &["--role".into(), "almanac".into()]).await?;
    let ledger_dir = dir.path().join("ledger").display().to_string();
    let ledger = spawn(exe, "ledger", &["--role".into(), "ledger".into(), "--data-dir".into(), ledger_dir]).await?;
    let directory = Arc::new(RemoteAlmanac::new(almanac.address.peer_id, almanac.address.addrs.clone())?);
    let remote_ledger = Arc::new(RemoteLedger::new(ledger.address.peer_id, ledger.address.addrs.clone())?);

    // Every wallet is funded before anyone trades.
    let faucet = Wallet::new(mint(), remote_ledger.clone());
    let op_spec = &scenario.operator;
    let mut accounts: Vec<(String, Address, Address, u128)> = Vec::new();
    let mut funded = vec![(op_spec.name.as_str(), op_spec.funds)];
    funded.extend(scenario.battery.iter().map(|b| (b.name.as_str(), b.funds)));
    funded.extend(scenario.households.iter().map(|h| (h.name.as_str(), h.funds)));
    for (name, funds) in funded {
        let (agent, wallet) = addresses_of(name);
        fund(&faucet, wallet, funds).await.map_err(MarketError::from)?;
        accounts.push((name.to_owned(), agent, wallet, funds.into()));
    }

    // The operator and the battery, here; the operator meters every household.
    let bureau = Bureau::with_config(Config::default().with_ledger(remote_ledger.clone()))?;
    let op_identity = Identity::from_seed(&seed_of(&op_spec.name));
    let mut op_agent =
        Agent::builder(op_spec.name.clone()).identity(op_identity.clone()).build().map_err(MarketError::from)?;
    let operator = Operator::new(op_spec, terms);
    operator.serve(&mut op_agent);
    let op_address = bureau.add(op_agent)?;
    let op_ctx = bureau.context(op_address).ok_or_else(|| DistributedError::Stopped(op_spec.name.clone()))?;
    let mut battery = None;
    if let Some(spec) = &scenario.battery {
        let identity = Identity::from_seed(&seed_of(&spec.name));
        let mut agent =
            Agent::builder(spec.name.clone()).identity(identity.clone()).build().map_err(MarketError::from)?;
        let state = BatteryAgent::new(&spec.name, Battery::new(spec.capacity_wh, spec.charge_wh, spec.rate_wh), terms);
        state.serve(&mut agent, identity.clone());
        let address = bureau.add(agent)?;
        let ctx = bureau.context(address).ok_or_else(|| DistributedError::Stopped(spec.name.clone()))?;
        battery = Some((state, address, ctx, identity));
    }
    for (spec, energy) in scenario.households.iter().zip(scenario.profiles(end)) {
        let (agent, wallet) = addresses_of(&spec.name);
        operator.meter(agent, wallet, energy);
    }
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    let info = bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let node = (
        info.peer_id.to_string(),
        info.listen_addrs.iter().map(|a| WeightedEndpoint { addr: a.to_string(), weight: 1 }).collect::<Vec<_>>(),
    );
    let attributes = BTreeMap::from([(OPERATOR_ATTRIBUTE.to_owned(), "yes".to_owned())]);
    let protocols = vec![operator::protocol().digest(), double_auction::protocol().digest()];
    directory.register(registration(&op_identity, node.clone(), protocols, attributes)).await?;
    if let Some((_, address, _, identity)) = &battery {
        let agents = bureau.agents();
        let protocols = agents.iter().find(|a| a.address == *address).map(|a| a.protocols.clone()).unwrap_or_default();
        directory.register(registration(identity, node.clone(), protocols, BTreeMap::new())).await?;
    }

    // The households, in their own processes: they join before their node is ready.
    let mut nodes = Vec::new();
    for shard in 0..shards {
        let args = [
            "--role".into(),
            "households".into(),
            "--shard".into(),
            shard.to_string(),
            "--shards".into(),
            shards.to_string(),
            "--first".into(),
            first.to_string(),
            "--intervals".into(),
            intervals.to_string(),
            "--ms-per-interval".into(),
            ms_per_interval.to_string(),
            "--almanac".into(),
            almanac.address.to_arg(),
            "--ledger".into(),
            ledger.address.to_arg(),
            "--scenario".into(),
            scenario_path.display().to_string(),
        ];
        nodes.push(spawn(exe, &format!("households {shard}"), &args).await?);
    }
    if let Some((state, _, ctx, _)) = &battery {
        state.join(ctx, directory.as_ref()).await;
    }

    // The day, in real time.
    let progress = match options.progress {
        true => Progress::new(intervals as u64, "intervals"),
        false => Progress::hidden(),
    };
    let market_started = tokio::time::Instant::now();
    let interval_length = Duration::from_millis(ms_per_interval);
    let metered_battery = battery.as_ref().map(|(state, address, _, _)| (state, *address));
    run_day(&operator, &op_ctx, metered_battery, first..end, interval_length, terms.bill_every, &progress).await;
    let market_real = market_started.elapsed();

    // Households pay what they owe in the background: wait (bounded by their retries)
    // until none is still paying; then until every escrow is released or refunded.
    let retries =
        (Duration::from_millis(terms.retry_ms) + Duration::from_millis(terms.deliver_ms) * 2) * terms.attempts;
    let paid_by = tokio::time::Instant::now() + retries + Duration::from_secs(5);
    loop {
        let books = read_books(&op_ctx, scenario).await?;
        if books.iter().all(|b| b.paying == 0) || tokio::time::Instant::now() >= paid_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    progress.finish();
    let wallets: Vec<Address> = accounts.iter().map(|a| a.2).collect();
    let settle =
        Duration::from_millis(terms.deliver_ms) + agent_protocols::settlement::REFUND_GRACE + Duration::from_secs(5);
    crate::market::await_settled(remote_ledger.as_ref() as &dyn Ledger, &wallets, settle, Duration::from_millis(250))
        .await;
    // Read after every escrow ended, so every payment is recorded.
    let shown = read_books(&op_ctx, scenario).await?;

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
        let balance = remote_ledger.balance(wallet).await.unwrap_or(0);
        let open_escrows = remote_ledger.open_escrows(wallet, 1000).await.map_or(usize::MAX, |e| e.len());
        books.accounts.push(AccountRecord { name, agent, wallet, funds, balance, open_escrows });
    }
    let metering: BTreeMap<Address, (Vec<u64>, Vec<u64>)> =
        operator.metering().into_iter().map(|(a, s, e)| (a, (s, e))).collect();
    for (spec, household) in scenario.households.iter().zip(shown) {
        let (agent, _) = addresses_of(&spec.name);
        let (supplied, exported) = metering.get(&agent).cloned().unwrap_or_default();
        books.households.push(HouseholdRecord {
            name: household.name,
            agent,
            joined: household.joined,
            energy: household.energy,
            supplied,
            exported,
        });
        books.payments.extend(household.payments);
    }
    if let Some((state, address, _, _)) = &battery {
        books.payments.extend(state.payments());
        books.battery = Some(BatteryRecord { name: state.name.clone(), agent: *address, battery: state.battery() });
    }
    // Market time: the real time the day took, scaled back to 15-minute intervals.
    let interval_ms = 60_000 * u128::from(INTERVAL_MINUTES);
    let market_ms = market_real.as_millis() * interval_ms / u128::from(ms_per_interval);
    books.market_time_ms = u64::try_from(market_ms).unwrap_or(u64::MAX);
    tracing::debug!(elapsed = ?started.elapsed(), "the distributed market ended");
    bureau.shutdown().await?;
    drop(nodes);
    drop((almanac, ledger));
    Ok(Summary::from_books(&books))
}

/// Asks every household (in scenario order) for its books over the network.
async fn read_books(ctx: &agent_core::Context, scenario: &Scenario) -> Result<Vec<HouseholdBooks>, DistributedError> {
    let asks = scenario.households.iter().map(|spec| async move {
        let (agent, _) = addresses_of(&spec.name);
        ctx.request::<BooksRequest, HouseholdBooks>(agent, BooksRequest, Some(Duration::from_secs(10)))
            .await
            .map_err(|source| DistributedError::Books { agent: spec.name.clone(), source })
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

impl From<super::MarketError> for DistributedError {
    fn from(error: super::MarketError) -> DistributedError {
        DistributedError::Market(Box::new(error))
    }
}
