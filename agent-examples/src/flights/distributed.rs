//! The flight market across OS processes over libp2p: an almanac server, a ledger node,
//! airline nodes (each serving a shard of the airlines) and the travellers' node, which
//! starts the others as child processes of the demo binary and stops them at the end.
//!
//! Each node announces itself on stdout, one line at a time: `node <multiaddr>/p2p/<peer>`
//! for each address it listens on, then `ready`. The travellers' node reads those lines to
//! learn where the almanac and the ledger are, and passes them on. Agents find each other
//! through the almanac (their registrations carry their node's addresses), and every
//! message between them is a signed envelope over the libp2p transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, RemoteLedger};
use agent_core::transport::NetworkConfig;
use agent_core::{Address, Agent, Bureau, Config, Identity, Wallet};
use agent_protocols::contract_net;
use almanac::{AlmanacResolver, RemoteAlmanac, WeightedEndpoint};

use crate::market::distributed::{loopback, spawn, DistributedError, NodeAddress};

use super::market::{airline_agent, await_settled, registration, seed_of, shop_all, BooksRequest, Options};
use super::scenario::Scenario;
use super::summary::{self, Books, Summary};

/// The mint authority of the flight market's ledger (the faucet that funds travellers).
pub fn mint() -> Identity {
    Identity::from_seed("flights demo mint")
}

/// Starts the airlines of shard `shard` (of `shards`: airline `i` is in shard
/// `i % shards`) in a bureau of their own, listening on loopback and registered in the
/// almanac with their routes.
pub async fn serve_airlines(
    scenario: &Scenario,
    shard: usize,
    shards: usize,
    almanac: &NodeAddress,
    ledger: &NodeAddress,
) -> Result<(Bureau, NodeAddress), DistributedError> {
    let directory = Arc::new(RemoteAlmanac::new(almanac.peer_id, almanac.addrs.clone())?);
    let ledger = Arc::new(RemoteLedger::new(ledger.peer_id, ledger.addrs.clone())?);
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger))?;
    let mine: Vec<_> = scenario.airlines.iter().enumerate().filter(|(i, _)| i % shards.max(1) == shard).collect();
    for (_, spec) in &mine {
        let (agent, _) = airline_agent(spec, &scenario.terms)?;
        bureau.add(agent)?;
    }
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    let info = bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let endpoints: Vec<WeightedEndpoint> =
        info.listen_addrs.iter().map(|a| WeightedEndpoint { addr: a.to_string(), weight: 1 }).collect();
    let agents = bureau.agents();
    for (_, spec) in &mine {
        let protocols = agents.iter().find(|a| a.name == spec.name).map(|a| a.protocols.clone()).unwrap_or_default();
        directory.register(registration(spec, info.peer_id.to_string(), endpoints.clone(), protocols)).await?;
    }
    Ok((bureau, NodeAddress { peer_id: info.peer_id, addrs: info.listen_addrs }))
}

/// Runs `scenario` across processes: starts an almanac node, a ledger node and `shards`
/// airline nodes as children (`exe` is the demo binary, run with `--role`), then runs the
/// travellers in this process and checks the invariants against the airlines' books, as
/// they report them, and the ledger node.
pub async fn run(
    exe: &Path,
    scenario: &Scenario,
    shards: usize,
    options: &Options,
) -> Result<Summary, DistributedError> {
    scenario.validate().map_err(|e| DistributedError::from(super::MarketError::from(e)))?;
    let dir = tempfile::tempdir()?;
    let scenario_path: PathBuf = dir.path().join("scenario.json");
    std::fs::write(&scenario_path, serde_json::to_string(scenario).map_err(std::io::Error::other)?)?;
    let started = tokio::time::Instant::now();

    let almanac = spawn(exe, "almanac", &["--role".into(), "almanac".into()]).await?;
    let ledger_dir = dir.path().join("ledger").display().to_string();
    let ledger = spawn(exe, "ledger", &["--role".into(), "ledger".into(), "--data-dir".into(), ledger_dir]).await?;
    let mut airline_nodes = Vec::new();
    for shard in 0..shards.max(1) {
        let args = [
            "--role".into(),
            "airlines".into(),
            "--shard".into(),
            shard.to_string(),
            "--shards".into(),
            shards.max(1).to_string(),
            "--almanac".into(),
            almanac.address.to_arg(),
            "--ledger".into(),
            ledger.address.to_arg(),
            "--scenario".into(),
            scenario_path.display().to_string(),
        ];
        airline_nodes.push(spawn(exe, &format!("airlines {shard}"), &args).await?);
    }

    let directory: Arc<dyn almanac::Directory> =
        Arc::new(RemoteAlmanac::new(almanac.address.peer_id, almanac.address.addrs.clone())?);
    let remote_ledger = Arc::new(RemoteLedger::new(ledger.address.peer_id, ledger.address.addrs.clone())?);
    let bureau = Bureau::with_config(Config::default().with_ledger(remote_ledger.clone()))?;
    let mut travellers = Vec::new();
    let mut addresses = Vec::new();
    for spec in &scenario.travellers {
        let identity = Identity::from_seed(&seed_of(&spec.name));
        let mut agent = Agent::builder(spec.name.clone())
            .identity(identity)
            .build()
            .map_err(|e| DistributedError::from(super::MarketError::from(e)))?;
        let book = contract_net::initiator(&mut agent);
        addresses.push(bureau.add(agent)?);
        travellers.push((book, spec.clone()));
    }
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let _registrar = almanac::register_bureau(&bureau, directory.clone(), almanac::RegistrarConfig::default()).await?;
    let faucet = Wallet::new(mint(), remote_ledger.clone());
    let mut shoppers = Vec::new();
    for ((book, spec), address) in travellers.into_iter().zip(&addresses) {
        let ctx =
            bureau.context(*address).ok_or_else(|| DistributedError::Stopped(format!("traveller {}", spec.name)))?;
        faucet.mint(ctx.wallet()?.address(), spec.funds.into()).await?;
        shoppers.push((ctx, book, spec));
    }

    let shopped = shop_all(&shoppers, directory.clone(), scenario.terms, options).await;
    let wallets: Vec<Address> = shopped.iter().filter_map(|t| t.wallet).collect();
    await_settled(remote_ledger.as_ref() as &dyn Ledger, &wallets, &scenario.terms).await;

    let asker = &shoppers.first().map(|(ctx, _, _)| ctx.clone());
    let mut books: Vec<Books> = Vec::new();
    for spec in &scenario.airlines {
        let Some(asker) = asker else { break };
        let airline = Identity::from_seed(&seed_of(&spec.name)).address();
        let shown: Books = asker
            .request(airline, BooksRequest, Duration::from_secs(10))
            .await
            .map_err(|source| DistributedError::Books { agent: spec.name.clone(), source })?;
        books.push(shown);
    }
    let summary =
        summary::check(scenario, &shopped, &books, remote_ledger.as_ref() as &dyn Ledger, started.elapsed()).await;
    bureau.shutdown().await?;
    drop(airline_nodes);
    drop((almanac, ledger));
    Ok(summary)
}

impl From<super::MarketError> for DistributedError {
    fn from(error: super::MarketError) -> DistributedError {
        DistributedError::Market(Box::new(error))
    }
}
