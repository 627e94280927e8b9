//! The DeFi market across OS processes over libp2p: an almanac node, one ledger node per
//! token, a node of market makers and a node of traders as children of the demo binary,
//! and the arbitrageurs in the demo's own process, which also samples the spread by
//! asking the makers for their pools.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, RemoteLedger};
use agent_core::transport::NetworkConfig;
use agent_core::{Bureau, Config, Identity, Wallet};
use almanac::{AlmanacResolver, RemoteAlmanac, WeightedEndpoint};
use rand::SeedableRng;

use super::arbitrageur::arbitrageur_agent;
use super::maker::{maker_agent, registration, seed_of, BooksRequest, Ledgers, MakerBooks, Makers};
use super::scenario::Scenario;
use super::summary::{self, Summary};
use super::trader::{read_pools, trader_agent, TraderLog};
use super::Options;
use crate::market::distributed::{loopback, spawn, DistributedError, NodeAddress};

/// The mint of every token's ledger.
pub fn mint() -> Identity {
    Identity::from_seed("defi demo mint")
}

/// Each token's ledger node, as clients.
pub fn ledgers(nodes: &BTreeMap<String, NodeAddress>, scenario: &Scenario) -> Result<Ledgers, DistributedError> {
    let mut ledgers: BTreeMap<String, Arc<dyn Ledger>> = BTreeMap::new();
    for token in &scenario.tokens {
        let node = nodes.get(token).ok_or_else(|| {
            DistributedError::Invalid(format!("no ledger node for token {token} (give --ledger {token}=ADDR)"))
        })?;
        ledgers.insert(token.clone(), Arc::new(RemoteLedger::new(node.peer_id, node.addrs.clone())?));
    }
    Ok(Arc::new(ledgers))
}

/// Which agents a node of the market runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The market makers, each with its pool.
    Pools,
    /// The traders, trading until `until_ms` (Unix ms).
    Traders {
        /// When they stop.
        until_ms: u64,
    },
}

/// A node's agents, serving until dropped.
pub struct Served {
    /// Their bureau.
    pub bureau: Bureau,
    /// Where it listens.
    pub address: NodeAddress,
    /// Keeps the traders registered (their answers are routed back through it).
    pub registrar: Option<almanac::Registrar>,
}

/// Starts the agents of `part` in a bureau of their own, listening on loopback and
/// registered in the almanac; `seed` seeds the traders' choices.
pub async fn serve(
    scenario: &Scenario,
    part: Part,
    seed: u64,
    almanac: &NodeAddress,
    ledger_nodes: &BTreeMap<String, NodeAddress>,
) -> Result<Served, DistributedError> {
    let directory = Arc::new(RemoteAlmanac::new(almanac.peer_id, almanac.addrs.clone())?);
    let ledgers = ledgers(ledger_nodes, scenario)?;
    let bureau = Bureau::new()?;
    match part {
        Part::Pools => {
            for spec in &scenario.pools {
                let (agent, _) = maker_agent(spec, ledgers.clone())?;
                bureau.add(agent)?;
            }
        }
        Part::Traders { until_ms } => {
            let makers = Makers::new(directory.clone());
            for spec in &scenario.traders {
                let rng = rand::rngs::StdRng::seed_from_u64(seed ^ u64::from_le_bytes(name_bytes(&spec.name)));
                let (agent, _) =
                    trader_agent(spec, ledgers.clone(), makers.clone(), rng, until_ms, scenario.terms.escrow_ms)?;
                bureau.add(agent)?;
            }
        }
    }
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    let info = bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let endpoints: Vec<WeightedEndpoint> =
        info.listen_addrs.iter().map(|a| WeightedEndpoint { addr: a.to_string(), weight: 1 }).collect();
    let registrar = match part {
        Part::Pools => {
            for spec in &scenario.pools {
                directory.register(registration(spec, info.peer_id.to_string(), endpoints.clone())).await?;
            }
            None
        }
        Part::Traders { .. } => {
            let config = almanac::RegistrarConfig::default();
            Some(almanac::register_bureau(&bureau, directory.clone(), config).await?)
        }
    };
    let address = NodeAddress { peer_id: info.peer_id, addrs: info.listen_addrs };
    Ok(Served { bureau, address, registrar })
}

fn name_bytes(name: &str) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    bytes
}

/// Runs `scenario` across processes (`exe` is the demo binary, run with `--role`): the
/// invariants are checked against the books the makers and traders report and the
/// ledger nodes.
pub async fn run(exe: &Path, scenario: &Scenario, seed: u64, options: &Options) -> Result<Summary, DistributedError> {
    scenario.validate().map_err(|e| DistributedError::from(super::MarketError::from(e)))?;
    let dir = tempfile::tempdir()?;
    let scenario_path = dir.path().join("scenario.json");
    std::fs::write(&scenario_path, serde_json::to_string(scenario).map_err(std::io::Error::other)?)?;
    let almanac = spawn(exe, "almanac", &["--role".into(), "almanac".into()]).await?;
    let mut ledger_children = Vec::new();
    let mut ledger_nodes = BTreeMap::new();
    let mut ledger_args = Vec::new();
    for token in &scenario.tokens {
        let data = dir.path().join(format!("ledger-{token}")).display().to_string();
        let child =
            spawn(exe, &format!("{token} ledger"), &["--role".into(), "ledger".into(), "--data-dir".into(), data])
                .await?;
        ledger_args.extend(["--ledger".to_owned(), format!("{token}={}", child.address.to_arg())]);
        ledger_nodes.insert(token.clone(), child.address.clone());
        ledger_children.push(child);
    }
    let ledgers = ledgers(&ledger_nodes, scenario)?;
    // Every wallet is funded before anyone trades.
    let faucets: BTreeMap<&String, Wallet> =
        ledgers.iter().map(|(token, ledger)| (token, Wallet::new(mint(), ledger.clone()))).collect();
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
    for spec in &scenario.pools {
        fund(&spec.maker, &spec.token_a, spec.reserve_a).await?;
        fund(&spec.maker, &spec.token_b, spec.reserve_b).await?;
    }
    for spec in &scenario.traders {
        for token in &scenario.tokens {
            fund(&spec.name, token, spec.funds).await?;
        }
    }
    for spec in &scenario.arbitrageurs {
        fund(&spec.name, &spec.start, spec.funds).await?;
    }

    let common = |role: &str| {
        let mut args = vec!["--role".to_owned(), role.to_owned(), "--almanac".into(), almanac.address.to_arg()];
        args.extend(ledger_args.iter().cloned());
        args.extend(["--scenario".to_owned(), scenario_path.display().to_string(), "--seed".into(), seed.to_string()]);
        args
    };
    let pools = spawn(exe, "pools", &common("pools")).await?;
    let started_ms = agent_core::envelope::unix_now_ms();
    let trading_ends_ms = started_ms + scenario.terms.trading_ms;
    let mut trader_args = common("traders");
    trader_args.extend(["--until-ms".to_owned(), trading_ends_ms.to_string()]);
    let traders = spawn(exe, "traders", &trader_args).await?;

    let directory: Arc<dyn almanac::Directory> =
        Arc::new(RemoteAlmanac::new(almanac.address.peer_id, almanac.address.addrs.clone())?);
    let bureau = Bureau::with_config(Config::default())?;
    let makers = Makers::new(directory.clone());
    let mut arbitrageurs = Vec::new();
    let closes_ms = started_ms + scenario.terms.trading_ms + scenario.terms.calm_ms;
    for spec in &scenario.arbitrageurs {
        let terms = &scenario.terms;
        let open = (started_ms, closes_ms);
        let (agent, log) =
            arbitrageur_agent(spec, ledgers.clone(), makers.clone(), open, terms.hold_ms, terms.escrow_ms)
                .map_err(DistributedError::from)?;
        bureau.add(agent)?;
        arbitrageurs.push(log);
    }
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let _registrar = almanac::register_bureau(&bureau, directory.clone(), almanac::RegistrarConfig::default()).await?;
    let watcher = bureau.add(
        agent_core::Agent::builder("spread watcher")
            .build()
            .map_err(|e| DistributedError::from(super::MarketError::from(e)))?,
    )?;
    let ctx = bureau.context(watcher).ok_or_else(|| DistributedError::Stopped("the spread watcher".into()))?;

    let total_ms = scenario.terms.trading_ms + scenario.terms.calm_ms;
    let samples = total_ms / scenario.terms.sample_ms;
    let progress = match options.progress {
        true => crate::market::Progress::new(samples, "market time"),
        false => crate::market::Progress::hidden(),
    };
    let started = tokio::time::Instant::now();
    let mut spread = Vec::new();
    for sample in 0..=samples {
        tokio::time::sleep_until(started + Duration::from_millis(sample * scenario.terms.sample_ms)).await;
        let listed = makers.list().await;
        let pools: Option<Vec<_>> =
            read_pools(&ctx, &listed).await.into_iter().map(|r| r.and_then(|r| r.pool())).collect();
        if let Some(pools) = pools.filter(|p| !p.is_empty()) {
            let at = (sample * scenario.terms.sample_ms) as f64 / 1000.0;
            spread.push((at, super::spread::market_spread(&pools).unwrap_or(0.0)));
        }
        progress.inc();
    }
    progress.finish();
    let market_time = started.elapsed();
    tokio::time::sleep(
        Duration::from_millis(scenario.terms.hold_ms + scenario.terms.escrow_ms) + Duration::from_secs(2),
    )
    .await;

    let mut books: Vec<MakerBooks> = Vec::new();
    for spec in &scenario.pools {
        let maker = Identity::from_seed(&seed_of(&spec.maker)).address();
        let shown = ctx
            .request(maker, BooksRequest, Duration::from_secs(10))
            .await
            .map_err(|source| DistributedError::Books { agent: spec.maker.clone(), source })?;
        books.push(shown);
    }
    let mut logs: Vec<(String, TraderLog)> = Vec::new();
    for spec in &scenario.traders {
        let trader = Identity::from_seed(&seed_of(&spec.name)).address();
        let shown = ctx
            .request(trader, BooksRequest, Duration::from_secs(10))
            .await
            .map_err(|source| DistributedError::Books { agent: spec.name.clone(), source })?;
        logs.push((spec.name.clone(), shown));
    }
    let arbitrages: Vec<_> = arbitrageurs.iter().flat_map(|log| log.lock().clone()).collect();
    let (agents, starts) = (summary::wallets(scenario), summary::starts(scenario));
    let checked: BTreeMap<String, Arc<dyn Ledger>> = ledgers.as_ref().clone();
    let summary =
        summary::check(&checked, &scenario.minted(), books, logs, arbitrages, &agents, &starts, spread, market_time)
            .await;
    bureau.shutdown().await?;
    drop((pools, traders, ledger_children, almanac));
    Ok(summary)
}

impl From<super::MarketError> for DistributedError {
    fn from(error: super::MarketError) -> DistributedError {
        DistributedError::Market(Box::new(error))
    }
}
