//! The flight market on the simulation kit: airlines and travellers on simulated hosts,
//! an almanac and a ledger they share, and the run from first call to last refund.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{FaultyLedger, Link, Outage, Outages, Sim};
use agent_core::{Address, Agent, Config, Context, Identity, Wallet};
use agent_protocols::contract_net;
use almanac::{Almanac, Registration};
use serde::{Deserialize, Serialize};

use super::airline::Airline;
use super::scenario::{AirlineSpec, Scenario, Terms, TravellerSpec};
use super::summary::{self, Books, Summary};
use super::traveller::{route_attribute, shop, Shopping};
use crate::market::Progress;

/// How a simulated flight market runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve travellers one after another in scenario order (otherwise they shop at once).
    pub sequential: bool,
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
    /// Market time after which travellers still shopping give up (none by default).
    pub duration: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sequential: false,
            loss: 0.0,
            ledger_outage: None,
            agents_per_host: 25,
            progress: false,
            trace: false,
            duration: None,
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
    Start(#[from] agent_core::sim::SimError),
    /// An agent could not be built.
    #[error("cannot build an agent")]
    Agent(#[from] agent_core::AgentError),
    /// The almanac refused a registration.
    #[error("cannot register an airline in the almanac")]
    Almanac(#[from] almanac::AlmanacError),
    /// The faucet could not fund a traveller.
    #[error("cannot fund a traveller")]
    Funding(#[from] agent_core::WalletError),
}

/// The key seed of a market agent called `name`.
pub(super) fn seed_of(name: &str) -> String {
    format!("flights demo agent {name}")
}

/// Runs `scenario` on the simulation kit with `seed`, on the current (paused,
/// current-thread) runtime, and checks the market's invariants at the end.
pub async fn run(scenario: &Scenario, seed: u64, options: &Options) -> Result<Summary, MarketError> {
    scenario.validate()?;
    let sim = Sim::new(seed);
    let sim = if options.trace { sim } else { sim.without_trace() };
    sim.set_default_link(link(options.loss));
    let mint = Identity::from_seed("flights demo mint");
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
    let per_host = options.agents_per_host.max(1);

    let mut airlines = Vec::new();
    let mut host = None;
    for (i, spec) in scenario.airlines.iter().enumerate() {
        if i % per_host == 0 {
            host = Some(sim.add_host_with(&format!("airlines-{}", i / per_host), config.clone())?);
        }
        let Some(host) = &host else { continue };
        let (agent, airline) = airline_agent(spec, &scenario.terms)?;
        let address = host.add(agent)?;
        let wallet = host.context(address).ok_or(agent_core::sim::SimError::Down(host.name()))?.wallet()?.address();
        let record =
            registration(spec, String::new(), Vec::new(), vec![contract_net::protocol_of::<Airline>().digest()]);
        almanac.register(record).await?;
        airlines.push((wallet, airline));
    }

    let faucet = Wallet::new(mint, memory_ledger.clone());
    let mut travellers = Vec::new();
    for (i, spec) in scenario.travellers.iter().enumerate() {
        if i % per_host == 0 {
            host = Some(sim.add_host_with(&format!("travellers-{}", i / per_host), config.clone())?);
        }
        let Some(host) = &host else { continue };
        let mut agent =
            Agent::builder(spec.name.clone()).identity(Identity::from_seed(&seed_of(&spec.name))).build()?;
        let book = contract_net::initiator(&mut agent);
        let address = host.add(agent)?;
        let context = host.context(address).ok_or(agent_core::sim::SimError::Down(host.name()))?;
        faucet.mint(context.wallet()?.address(), spec.funds.into()).await?;
        travellers.push((context, book, spec.clone()));
    }

    let shopped = shop_all(&travellers, almanac, scenario.terms, options).await;
    let wallets: Vec<_> = shopped.iter().filter_map(|t| t.wallet).collect();
    await_settled(memory_ledger.as_ref(), &wallets, &scenario.terms).await;

    let books: Vec<_> = airlines.iter().map(|(wallet, airline)| airline.books(*wallet)).collect();
    let summary = summary::check(scenario, &shopped, &books, memory_ledger.as_ref(), sim.elapsed()).await;
    sim.shutdown().await;
    Ok(summary)
}

/// An airline's agent: a contract-net participant selling `spec`'s flights, which also
/// shows its books to whoever asks ([`BooksRequest`]).
pub(super) fn airline_agent(spec: &AirlineSpec, terms: &Terms) -> Result<(Agent, Arc<Airline>), MarketError> {
    let airline = Airline::new(spec, terms.hold_ms);
    let mut agent = Agent::builder(spec.name.clone()).identity(Identity::from_seed(&seed_of(&spec.name))).build()?;
    contract_net::serve(&mut agent, airline.clone());
    let shown = airline.clone();
    agent.include(
        agent_core::Protocol::new("flights-demo-books", "1.0")
            .on_message(move |ctx: Context, _from: Address, _: BooksRequest| {
                let shown = shown.clone();
                async move {
                    let wallet = ctx.wallet()?.address();
                    ctx.reply(shown.books(wallet)).await?;
                    Ok::<(), anyhow::Error>(())
                }
            })
            .replies::<BooksRequest, Books>(),
    );
    Ok((agent, airline))
}

/// Asks an airline for its books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, agent_core::Message)]
#[message(name = "agora.demo.flights.BooksRequest")]
pub struct BooksRequest;

/// The almanac registration of airline `spec`: contract-net, and an attribute for each
/// route it flies, signed with its key.
pub(super) fn registration(
    spec: &AirlineSpec,
    peer_id: String,
    endpoints: Vec<almanac::WeightedEndpoint>,
    protocols: Vec<agent_core::ProtocolDigest>,
) -> Registration {
    let attributes: BTreeMap<String, String> =
        spec.flights.iter().map(|f| (route_attribute(&f.route), "yes".to_owned())).collect();
    let now = agent_core::envelope::unix_now_ms();
    let identity = Identity::from_seed(&seed_of(&spec.name));
    Registration::sign(&identity, peer_id, endpoints, protocols, attributes, now, now + REGISTERED_FOR_MS)
}

/// How long an airline's registration lasts: longer than any demo market.
const REGISTERED_FOR_MS: u64 = 20 * 3_600_000;

/// Runs every traveller's shopping, at once or in order, each until the market closes.
pub(super) async fn shop_all(
    travellers: &[(Context, contract_net::Book, TravellerSpec)],
    directory: Arc<dyn almanac::Directory>,
    terms: Terms,
    options: &Options,
) -> Vec<Shopping> {
    let progress = match options.progress {
        true => Progress::new(travellers.len() as u64, "travellers"),
        false => Progress::hidden(),
    };
    let closes = options.duration.map(|d| tokio::time::Instant::now() + d);
    let shop_until_close = |ctx, book, spec| {
        let directory = directory.clone();
        async move {
            let shopping = shop(ctx, book, directory.as_ref(), spec, &terms);
            match closes {
                None => shopping.await,
                Some(closes) => tokio::time::timeout_at(closes, shopping)
                    .await
                    .unwrap_or_else(|_| Shopping::closed(spec, ctx, "the market closed before a booking")),
            }
        }
    };
    let mut shopped = Vec::with_capacity(travellers.len());
    match options.sequential {
        true => {
            for (ctx, book, spec) in travellers {
                shopped.push(shop_until_close(ctx, book, spec).await);
                progress.inc();
            }
        }
        false => {
            let runs = travellers.iter().map(|(ctx, book, spec)| {
                let shopping = shop_until_close(ctx, book, spec);
                let progress = &progress;
                async move {
                    let shopping = shopping.await;
                    progress.inc();
                    shopping
                }
            });
            shopped = futures::future::join_all(runs).await;
        }
    }
    progress.finish();
    shopped
}

/// Waits until none of `wallets` has an open escrow, for at most the escrow window plus
/// two minutes: a refund due during a ledger outage goes through once the ledger is back.
pub(super) async fn await_settled(ledger: &dyn Ledger, wallets: &[Address], terms: &Terms) {
    let limit = Duration::from_millis(terms.perform_ms) + Duration::from_secs(120);
    crate::market::await_settled(ledger, wallets, limit, Duration::from_millis(500)).await;
}

/// Links of 5-25 ms, with `loss`.
fn link(loss: f64) -> Link {
    Link::with_latency(Duration::from_millis(5)).jitter(Duration::from_millis(20)).loss(loss.clamp(0.0, 1.0))
}
