//! The DeFi market on the simulation kit: one ledger per token, makers, traders and
//! arbitrageurs on simulated hosts, the spread sampled as the market runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, MemoryLedger};
use agent_core::sim::{FaultyLedger, Link, Outage, Outages, Sim};
use agent_core::{Identity, Wallet};
use almanac::Almanac;

use super::amm::Pool;
use super::arbitrageur::arbitrageur_agent;
use super::maker::{maker_agent, registration, seed_of, Ledgers, Makers};
use super::scenario::Scenario;
use super::summary::{self, Summary};
use super::trader::trader_agent;
use crate::market::Progress;

/// How a simulated DeFi market runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Share of messages lost on every link (0 to 1).
    pub loss: f64,
    /// When every token's ledger is unavailable, in market time since the start.
    pub ledger_outage: Option<(Duration, Duration)>,
    /// Show a progress bar (when stdout is a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { loss: 0.0, ledger_outage: None, progress: false }
    }
}

/// Why a market could not run (what the agents did is in the [`Summary`]).
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The scenario is not consistent.
    #[error(transparent)]
    Scenario(#[from] super::scenario::ScenarioError),
    /// A pool could not be made.
    #[error("bad pool {0}")]
    Pool(String),
    /// A simulated host or agent could not be started.
    #[error("cannot start the market")]
    Start(#[from] agent_core::sim::SimError),
    /// An agent could not be built.
    #[error("cannot build an agent")]
    Agent(#[from] agent_core::AgentError),
    /// The mint could not fund an agent.
    #[error("cannot fund an agent")]
    Funding(#[from] agent_core::WalletError),
    /// The almanac refused a registration.
    #[error("cannot register a pool in the almanac")]
    Almanac(#[from] almanac::AlmanacError),
}

/// The mint of every token's ledger.
fn mint() -> Identity {
    Identity::from_seed("defi demo mint")
}

/// Runs `scenario` on the simulation kit with `seed`, on the current (paused,
/// current-thread) runtime, and checks the market's invariants at the end.
pub async fn run(scenario: &Scenario, seed: u64, options: &Options) -> Result<Summary, MarketError> {
    scenario.validate()?;
    let sim = Sim::new(seed).without_trace();
    sim.set_default_link(
        Link::with_latency(Duration::from_millis(5))
            .jitter(Duration::from_millis(20))
            .loss(options.loss.clamp(0.0, 1.0)),
    );
    let mut memory = BTreeMap::new();
    let mut ledgers = BTreeMap::new();
    for token in &scenario.tokens {
        let ledger = Arc::new(MemoryLedger::new(Some(mint().address()), sim.clock()));
        let served: Arc<dyn Ledger> = match options.ledger_outage {
            Some((from, until)) => {
                Arc::new(FaultyLedger::new(&sim, ledger.clone(), Outages::none().add(from, until, Outage::Unavailable)))
            }
            None => ledger.clone(),
        };
        memory.insert(token.clone(), ledger);
        ledgers.insert(token.clone(), served);
    }
    let ledgers: Ledgers = Arc::new(ledgers);
    let faucets: BTreeMap<&String, Wallet> =
        memory.iter().map(|(token, ledger)| (token, Wallet::new(mint(), ledger.clone() as Arc<dyn Ledger>))).collect();
    let fund = |name: &str, token: &str, amount: u128| {
        let to = Identity::from_seed(&seed_of(name)).derive("wallet").address();
        let faucet = faucets.get(&token.to_owned()).cloned();
        async move {
            match faucet {
                Some(faucet) if amount > 0 => faucet.mint(to, amount).await.map(|_| ()),
                _ => Ok(()),
            }
        }
    };

    let started_ms = agent_core::envelope::unix_now_ms();
    let trading_ends_ms = started_ms + scenario.terms.trading_ms;
    let almanac = Arc::new(Almanac::new(almanac::Config::default()));
    let market_host = sim.add_host("pools")?;
    let mut makers = Vec::new();
    for spec in &scenario.pools {
        let (agent, maker) = maker_agent(spec, ledgers.clone())?;
        market_host.add(agent)?;
        almanac.register(registration(spec, String::new(), Vec::new())).await?;
        fund(&spec.maker, &spec.token_a, spec.reserve_a).await?;
        fund(&spec.maker, &spec.token_b, spec.reserve_b).await?;
        makers.push(maker);
    }
    let maker_addresses = Makers::new(almanac.clone());
    let traders_host = sim.add_host("traders")?;
    let mut traders = Vec::new();
    for spec in &scenario.traders {
        let rng = sim.rng(&spec.name);
        let (agent, log) = trader_agent(
            spec,
            ledgers.clone(),
            maker_addresses.clone(),
            rng,
            trading_ends_ms,
            scenario.terms.escrow_ms,
        )?;
        traders_host.add(agent)?;
        for token in &scenario.tokens {
            fund(&spec.name, token, spec.funds).await?;
        }
        traders.push((spec.name.clone(), log));
    }
    let arbitrage_host = sim.add_host("arbitrageurs")?;
    let mut arbitrageurs = Vec::new();
    for spec in &scenario.arbitrageurs {
        let (agent, log) = arbitrageur_agent(
            spec,
            ledgers.clone(),
            maker_addresses.clone(),
            (started_ms, started_ms + scenario.terms.trading_ms + scenario.terms.calm_ms),
            scenario.terms.hold_ms,
            scenario.terms.escrow_ms,
        )?;
        arbitrage_host.add(agent)?;
        fund(&spec.name, &spec.start, spec.funds).await?;
        arbitrageurs.push(log);
    }

    let total_ms = scenario.terms.trading_ms + scenario.terms.calm_ms;
    let samples = total_ms / scenario.terms.sample_ms;
    let progress = match options.progress {
        true => Progress::new(samples, "market time"),
        false => Progress::hidden(),
    };
    let mut spread = Vec::new();
    let pools_now = || makers.iter().map(|m| m.pool()).collect::<Vec<Pool>>();
    spread.push((0.0, super::spread::market_spread(&pools_now()).unwrap_or(0.0)));
    for sample in 1..=samples {
        tokio::time::sleep(Duration::from_millis(scenario.terms.sample_ms)).await;
        let at = (sample * scenario.terms.sample_ms) as f64 / 1000.0;
        spread.push((at, super::spread::market_spread(&pools_now()).unwrap_or(0.0)));
        progress.inc();
    }
    progress.finish();
    let market_time = sim.elapsed();
    // Trades under way when the market closed finish (every escrow is released or runs
    // out and is refunded) before the agents stop.
    tokio::time::sleep(
        Duration::from_millis(scenario.terms.hold_ms + scenario.terms.escrow_ms) + Duration::from_secs(5),
    )
    .await;
    sim.shutdown().await;

    let makers: Vec<_> = makers.iter().map(|m| m.books()).collect();
    let traders: Vec<_> = traders.iter().map(|(name, log)| (name.clone(), log.lock().clone())).collect();
    let arbitrages: Vec<_> = arbitrageurs.iter().flat_map(|log| log.lock().clone()).collect();
    let (agents, starts) = (summary::wallets(scenario), summary::starts(scenario));
    let checked: BTreeMap<String, Arc<dyn Ledger>> =
        memory.iter().map(|(token, ledger)| (token.clone(), ledger.clone() as Arc<dyn Ledger>)).collect();
    let summary = summary::check(
        &checked,
        &scenario.minted(),
        makers,
        traders,
        arbitrages,
        &agents,
        &starts,
        spread,
        market_time,
    )
    .await;
    Ok(summary)
}
