//! The supply chain on the simulation kit: the manufacturer and every supplier on
//! simulated hosts, an almanac and a ledger they share, the run from the first call to the
//! last delivery.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{FaultyLedger, Link, Outage, Outages, Sim};
use agent_core::{Agent, Config, Context, Identity, Wallet};
use agent_protocols::contract_net;
use almanac::{Almanac, Registration};

use super::procure::{part_attribute, procure, Prefer};
use super::scenario::{Scenario, MANUFACTURER};
use super::summary::{self, Summary};
use super::supplier::{BooksRequest, Supplier};
use crate::market::Progress;

/// How a simulated supply chain runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Share of messages lost on every link (0 to 1).
    pub loss: f64,
    /// When the ledger is unavailable, in market time since the start.
    pub ledger_outage: Option<(Duration, Duration)>,
    /// Show a progress bar (when stdout is a terminal).
    pub progress: bool,
    /// Market hours after which buyers start no new round (none by default).
    pub duration_hours: Option<u64>,
}

/// Why a market could not run (what the agents did is in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The scenario is not consistent.
    #[error(transparent)]
    Scenario(#[from] super::scenario::ScenarioError),
    /// A simulated host or agent could not be started.
    #[error("cannot start the market")]
    Start(#[from] agent_core::sim::SimError),
    /// An agent could not be built.
    #[error("cannot build an agent")]
    Agent(#[from] agent_core::AgentError),
    /// The almanac refused a registration.
    #[error("cannot register a supplier in the almanac")]
    Almanac(#[from] almanac::AlmanacError),
    /// The mint could not fund an agent.
    #[error("cannot fund an agent")]
    Funding(#[from] agent_core::WalletError),
}

/// How long a supplier's registration lasts.
pub(super) const REGISTERED_FOR_MS: u64 = 31 * 24 * 3_600_000;

pub(super) fn seed_of(name: &str) -> String {
    format!("supply demo agent {name}")
}

/// A supplier's agent: a contract-net participant (and, for assemblies, a buyer of
/// sub-parts) that also shows its books to whoever asks ([`BooksRequest`]).
pub(super) fn supplier_agent(
    spec: &super::bom::SupplierSpec,
    scenario: &Arc<Scenario>,
    rng: rand::rngs::StdRng,
    directory: Arc<dyn almanac::Directory>,
    started_ms: u64,
) -> Result<(Agent, Arc<Supplier>), MarketError> {
    let supplier = Supplier::new(spec, scenario.clone(), rng, directory, started_ms);
    let mut agent = Agent::builder(spec.name.clone()).identity(Identity::from_seed(&seed_of(&spec.name))).build()?;
    let selling = contract_net::serve(&mut agent, supplier.clone());
    contract_net::refuse_strays_serving(&mut agent, &supplier.buying, &selling);
    let shown = supplier.clone();
    agent.include(
        agent_core::Protocol::new("supply-demo-books", "1.0")
            .on_message(move |ctx: Context, _from: agent_core::Address, _: BooksRequest| {
                let books = shown.books();
                async move { ctx.reply(books).await }
            })
            .replies::<BooksRequest, super::supplier::SupplierBooks>(),
    );
    Ok((agent, supplier))
}

/// The registration of supplier `spec` in the almanac: contract-net, and an attribute
/// for each part it makes, signed with its key.
pub(super) fn registration(
    spec: &super::bom::SupplierSpec,
    peer_id: String,
    endpoints: Vec<almanac::WeightedEndpoint>,
    protocols: Vec<agent_core::ProtocolDigest>,
) -> Registration {
    let attributes: BTreeMap<String, String> =
        spec.offers.iter().map(|o| (part_attribute(&o.part), "yes".to_owned())).collect();
    let now = agent_core::envelope::unix_now_ms();
    let identity = Identity::from_seed(&seed_of(&spec.name));
    Registration::sign(&identity, peer_id, endpoints, protocols, attributes, now, now + REGISTERED_FOR_MS)
}

/// Runs `scenario` on the simulation kit with `seed`, on the current (paused,
/// current-thread) runtime, and checks the invariants at the end.
pub async fn run(scenario: &Scenario, seed: u64, options: &Options) -> Result<Summary, MarketError> {
    scenario.validate()?;
    // From here on the Unix clock is the simulation's.
    let sim = Sim::new(seed).without_trace();
    let mut scenario = scenario.clone();
    let started_ms = agent_core::envelope::unix_now_ms();
    scenario.terms.closes_at_ms =
        options.duration_hours.map(|h| started_ms + scenario.terms.hours(h).as_millis() as u64);
    let scenario = Arc::new(scenario);
    sim.set_default_link(
        Link::with_latency(Duration::from_millis(5))
            .jitter(Duration::from_millis(20))
            .loss(options.loss.clamp(0.0, 1.0)),
    );
    let mint = Identity::from_seed("supply demo mint");
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
    // A supply chain runs for days of market time: registrations last a month (a long-lived
    // deployment renews them instead, with `almanac::register_bureau`).
    let almanac = Arc::new(Almanac::new(almanac::Config::default().with_max_ttl_ms(REGISTERED_FOR_MS)));
    let faucet = Wallet::new(mint, memory_ledger.clone());

    let mut suppliers = Vec::new();
    for tier in [1u8, 2] {
        let host = sim.add_host_with(&format!("tier-{tier}"), config.clone())?;
        for spec in scenario.suppliers.iter().filter(|s| s.tier.clamp(1, 2) == tier) {
            let (agent, supplier) = supplier_agent(spec, &scenario, sim.rng(&spec.name), almanac.clone(), started_ms)?;
            let address = host.add(agent)?;
            let ctx = host.context(address).ok_or(agent_core::sim::SimError::Down(host.name()))?;
            faucet.mint(ctx.wallet()?.address(), scenario.supplier_funds.into()).await?;
            // Set once, as the agent starts: a second set cannot happen.
            let _ = supplier.context.set(ctx);
            let record =
                registration(spec, String::new(), Vec::new(), vec![contract_net::protocol_of::<Supplier>().digest()]);
            almanac.register(record).await?;
            suppliers.push(supplier);
        }
    }

    let host = sim.add_host_with("manufacturer", config)?;
    let mut agent = Agent::builder(MANUFACTURER).identity(Identity::from_seed(&seed_of(MANUFACTURER))).build()?;
    let book = contract_net::initiator(&mut agent);
    let address = host.add(agent)?;
    let ctx: Context = host.context(address).ok_or(agent_core::sim::SimError::Down(host.name()))?;
    let manufacturer_wallet = ctx.wallet()?.address();
    faucet.mint(manufacturer_wallet, scenario.manufacturer_funds.into()).await?;

    let progress = match options.progress {
        true => Progress::new(scenario.bom.parts.len() as u64, "parts"),
        false => Progress::hidden(),
    };
    let buys = scenario.bom.parts.iter().map(|part| {
        let (ctx, book, almanac, progress, terms) = (&ctx, &book, almanac.clone(), &progress, &scenario.terms);
        async move {
            let bought = procure(ctx, book, almanac.as_ref(), &part.name, part.quantity, Prefer::Cheapest, terms).await;
            progress.inc();
            bought
        }
    });
    let bought = futures::future::join_all(buys).await;
    progress.finish();
    let market_time = sim.elapsed();
    // Suppliers whose buyer stopped waiting may still be at work (buying sub-parts): the
    // books are read once every one is done, within a month of market time.
    let idle_by = tokio::time::Instant::now() + scenario.terms.hours(31 * 24);
    while suppliers.iter().any(|s| s.is_working()) && tokio::time::Instant::now() < idle_by {
        tokio::time::sleep(scenario.terms.hours(1) / 60).await;
    }
    // Refunds of failed orders fall due a second after their deadline, at most the grace
    // period after the last round.
    let books: Vec<_> = suppliers.iter().map(|s| s.books()).collect();
    let wallets: Vec<_> = books.iter().filter_map(|b| b.wallet).chain([manufacturer_wallet]).collect();
    let grace = scenario.terms.hours(u64::from(scenario.terms.grace_hours) + 1);
    crate::market::await_settled(memory_ledger.as_ref(), &wallets, grace, scenario.terms.hours(1) / 60).await;
    let summary =
        summary::check(&scenario, bought, books, manufacturer_wallet, memory_ledger.as_ref(), market_time).await;
    sim.shutdown().await;
    Ok(summary)
}
