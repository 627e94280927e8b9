//! The supply chain across OS processes over libp2p: an almanac node, a ledger node and
//! supplier nodes (each serving a shard of the suppliers of both tiers) as children of the
//! demo binary, and the manufacturer in the demo's own process. Market hours are short in
//! real time (`terms.ms_per_hour`; the demo's `--ms-per-hour`, 100 by default), so lead
//! times of days pass in seconds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{Ledger, RemoteLedger};
use agent_core::transport::NetworkConfig;
use agent_core::{Agent, Bureau, Config, Identity, Wallet};
use agent_protocols::contract_net;
use almanac::{AlmanacResolver, RemoteAlmanac, WeightedEndpoint};
use rand::SeedableRng;

use super::market::{registration, seed_of, supplier_agent, Options, REGISTERED_FOR_MS};
use super::procure::{procure, Prefer};
use super::scenario::{Scenario, MANUFACTURER};
use super::summary::{self, Summary};
use super::supplier::{BooksRequest, SupplierBooks};
use crate::market::distributed::{loopback, spawn, DistributedError, NodeAddress};

/// The mint of the chain's ledger.
pub fn mint() -> Identity {
    Identity::from_seed("supply demo mint")
}

/// A supplier's random generator, from the run's seed and its name.
fn rng_for(seed: u64, name: &str) -> rand::rngs::StdRng {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(seed.to_be_bytes()).chain_update(name.as_bytes()).finalize();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&digest);
    rand::rngs::StdRng::from_seed(bytes)
}

/// Starts the suppliers of shard `shard` (supplier `i` is in shard `i % shards`) in a
/// bureau of their own, listening on loopback and registered in the almanac.
pub async fn serve_suppliers(
    scenario: &Scenario,
    seed: u64,
    shard: usize,
    shards: usize,
    almanac: &NodeAddress,
    ledger: &NodeAddress,
) -> Result<(Bureau, NodeAddress), DistributedError> {
    let scenario = Arc::new(scenario.clone());
    let directory = Arc::new(RemoteAlmanac::new(almanac.peer_id, almanac.addrs.clone())?);
    let ledger = Arc::new(RemoteLedger::new(ledger.peer_id, ledger.addrs.clone())?);
    let bureau = Bureau::with_config(Config::default().with_ledger(ledger))?;
    let started_ms = agent_core::envelope::unix_now_ms();
    let mine: Vec<_> = scenario.suppliers.iter().enumerate().filter(|(i, _)| i % shards.max(1) == shard).collect();
    let mut suppliers = Vec::new();
    for (_, spec) in &mine {
        let rng = rng_for(seed, &spec.name);
        let (agent, supplier) = supplier_agent(spec, &scenario, rng, directory.clone(), started_ms)?;
        let address = bureau.add(agent)?;
        if let Some(ctx) = bureau.context(address) {
            // Set once, as the agent starts: a second set cannot happen.
            let _ = supplier.context.set(ctx);
        }
        suppliers.push(supplier);
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

/// Runs `scenario` across processes: an almanac node, a ledger node and `shards`
/// supplier nodes as children (`exe` is the demo binary, run with `--role`), the
/// manufacturer here; the invariants are checked against the books the suppliers report
/// and the ledger node.
pub async fn run(
    exe: &Path,
    scenario: &Scenario,
    seed: u64,
    shards: usize,
    options: &Options,
) -> Result<Summary, DistributedError> {
    scenario.validate().map_err(|e| DistributedError::from(super::MarketError::from(e)))?;
    let mut scenario = scenario.clone();
    let started_ms = agent_core::envelope::unix_now_ms();
    scenario.terms.closes_at_ms =
        options.duration_hours.map(|h| started_ms + scenario.terms.hours(h).as_millis() as u64);
    let scenario = &scenario;
    let dir = tempfile::tempdir()?;
    let scenario_path = dir.path().join("scenario.json");
    std::fs::write(&scenario_path, serde_json::to_string(scenario).map_err(std::io::Error::other)?)?;
    let started = tokio::time::Instant::now();

    let almanac = spawn(exe, "almanac", &["--role".into(), "almanac".into()]).await?;
    let ledger_dir = dir.path().join("ledger").display().to_string();
    let ledger = spawn(exe, "ledger", &["--role".into(), "ledger".into(), "--data-dir".into(), ledger_dir]).await?;
    let mut nodes = Vec::new();
    for shard in 0..shards.max(1) {
        let args = [
            "--role".into(),
            "suppliers".into(),
            "--shard".into(),
            shard.to_string(),
            "--shards".into(),
            shards.max(1).to_string(),
            "--seed".into(),
            seed.to_string(),
            "--almanac".into(),
            almanac.address.to_arg(),
            "--ledger".into(),
            ledger.address.to_arg(),
            "--scenario".into(),
            scenario_path.display().to_string(),
        ];
        nodes.push(spawn(exe, &format!("suppliers {shard}"), &args).await?);
    }

    let directory: Arc<dyn almanac::Directory> =
        Arc::new(RemoteAlmanac::new(almanac.address.peer_id, almanac.address.addrs.clone())?);
    let remote_ledger = Arc::new(RemoteLedger::new(ledger.address.peer_id, ledger.address.addrs.clone())?);
    let faucet = Wallet::new(mint(), remote_ledger.clone());
    for spec in &scenario.suppliers {
        if scenario.supplier_funds > 0 {
            let wallet = Identity::from_seed(&seed_of(&spec.name)).derive("wallet").address();
            faucet.mint(wallet, scenario.supplier_funds.into()).await?;
        }
    }
    let bureau = Bureau::with_config(Config::default().with_ledger(remote_ledger.clone()))?;
    let mut agent = Agent::builder(MANUFACTURER)
        .identity(Identity::from_seed(&seed_of(MANUFACTURER)))
        .build()
        .map_err(|e| DistributedError::from(super::MarketError::from(e)))?;
    let book = contract_net::initiator(&mut agent);
    let address = bureau.add(agent)?;
    let resolver = Arc::new(AlmanacResolver::new(directory.clone()));
    bureau.listen(NetworkConfig::new(loopback(), resolver)).await?;
    let registrar = almanac::RegistrarConfig::default().with_ttl(Duration::from_millis(REGISTERED_FOR_MS));
    let _registrar = almanac::register_bureau(&bureau, directory.clone(), registrar).await?;
    let ctx = bureau.context(address).ok_or_else(|| DistributedError::Stopped("the manufacturer".into()))?;
    let manufacturer_wallet = ctx.wallet()?.address();
    faucet.mint(manufacturer_wallet, scenario.manufacturer_funds.into()).await?;

    let progress = match options.progress {
        true => crate::market::Progress::new(scenario.bom.parts.len() as u64, "parts"),
        false => crate::market::Progress::hidden(),
    };
    let buys = scenario.bom.parts.iter().map(|part| {
        let (ctx, book, directory, progress) = (&ctx, &book, directory.clone(), &progress);
        async move {
            let bought =
                procure(ctx, book, directory.as_ref(), &part.name, part.quantity, Prefer::Cheapest, &scenario.terms)
                    .await;
            progress.inc();
            bought
        }
    });
    let bought = futures::future::join_all(buys).await;
    progress.finish();
    let market_time = started.elapsed();

    // Suppliers still at work (buying sub-parts after their buyer stopped waiting) finish
    // first; then their books are read.
    let idle_by = tokio::time::Instant::now() + scenario.terms.hours(24 * 31).min(Duration::from_secs(120));
    let books = loop {
        let mut books: Vec<SupplierBooks> = Vec::new();
        for spec in &scenario.suppliers {
            let supplier = Identity::from_seed(&seed_of(&spec.name)).address();
            let shown: SupplierBooks = ctx
                .request(supplier, BooksRequest, Duration::from_secs(10))
                .await
                .map_err(|source| DistributedError::Books { agent: spec.name.clone(), source })?;
            books.push(shown);
        }
        if !books.iter().any(|b| b.working) || tokio::time::Instant::now() >= idle_by {
            break books;
        }
        tokio::time::sleep(scenario.terms.hours(1)).await;
    };
    let wallets: Vec<_> = books.iter().filter_map(|b| b.wallet).chain([manufacturer_wallet]).collect();
    // Refunds fall due a second (of real time) after their deadline.
    let grace = scenario.terms.hours(u64::from(scenario.terms.grace_hours) + 1) + Duration::from_secs(5);
    crate::market::await_settled(remote_ledger.as_ref() as &dyn Ledger, &wallets, grace, scenario.terms.hours(1) / 4)
        .await;
    let summary = summary::check(
        scenario,
        bought,
        books,
        manufacturer_wallet,
        remote_ledger.as_ref() as &dyn Ledger,
        market_time,
    )
    .await;
    bureau.shutdown().await?;
    drop(nodes);
    drop((almanac, ledger));
    Ok(summary)
}

impl From<super::MarketError> for DistributedError {
    fn from(error: super::MarketError) -> DistributedError {
        DistributedError::Market(Box::new(error))
    }
}
