//! What every market needs to run across OS processes over libp2p on loopback: service
//! nodes (an almanac server, ledger nodes) started as child processes of the demo binary,
//! which announce where they listen on stdout, and are stopped when dropped.
//!
//! A node prints `node <multiaddr>/p2p/<peer>` for each address it listens on, then
//! `ready`. The parent reads those lines ([`spawn`]) and passes the addresses on to the
//! nodes it starts next (`--almanac ADDR`, `--ledger ADDR`).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use agent_core::ledger::{LocalLedger, LocalLedgerConfig};
use agent_core::Address;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Why a node could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A node process could not be started, or stopped before it was ready.
    #[error("the {node} node did not start")]
    Spawn {
        /// Which node.
        node: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A node's address could not be read.
    #[error("bad node address {0:?}: expected /ip4/.../tcp/PORT/p2p/PEER_ID")]
    Address(String),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] agent_core::net::NetError),
    /// The ledger could not be opened.
    #[error("the ledger failed")]
    Ledger(#[from] agent_core::ledger::LedgerError),
    /// A flag the node needs was not given.
    #[error("this node needs --{0}")]
    Missing(&'static str),
    /// The node could not announce itself on stdout.
    #[error("cannot announce the node")]
    Announce(#[source] std::io::Error),
}

/// The flags a node of a distributed market is started with. Hidden from `--help`: the
/// demo passes them to the nodes it starts (`docs/markets.md` shows them for running the
/// nodes by hand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NodeArgs {
    /// The almanac node, as /ip4/.../tcp/PORT/p2p/PEER_ID.
    #[arg(long, hide = true)]
    pub almanac: Option<String>,
    /// The ledger node, as an address, or TOKEN=ADDRESS once per token.
    #[arg(long, hide = true)]
    pub ledger: Vec<String>,
    /// The ledger's directory (a ledger node).
    #[arg(long, hide = true)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The shard of the market's agents this node serves.
    #[arg(long, hide = true, default_value_t = 0)]
    pub shard: usize,
}

impl NodeArgs {
    /// The almanac node.
    pub fn almanac(&self) -> Result<NodeAddress, NodeError> {
        NodeAddress::parse(self.almanac.as_deref().ok_or(NodeError::Missing("almanac"))?)
    }

    /// The one ledger node.
    pub fn ledger(&self) -> Result<NodeAddress, NodeError> {
        NodeAddress::parse(self.ledger.first().ok_or(NodeError::Missing("ledger"))?)
    }

    /// One ledger node per token (`TOKEN=ADDRESS`).
    pub fn ledgers(&self) -> Result<std::collections::BTreeMap<String, NodeAddress>, NodeError> {
        let mut ledgers = std::collections::BTreeMap::new();
        for given in &self.ledger {
            let (token, address) = given.split_once('=').ok_or_else(|| NodeError::Address(given.clone()))?;
            ledgers.insert(token.to_owned(), NodeAddress::parse(address)?);
        }
        Ok(ledgers)
    }
}

/// A service node of a distributed market.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// An almanac server keeping registrations for up to `max_ttl`.
    Almanac {
        /// The longest registration it keeps.
        max_ttl: Duration,
    },
    /// A ledger on disk in `--data-dir`, where only `mint` may mint.
    Ledger {
        /// The mint authority.
        mint: Address,
    },
}

/// Runs `service` as this process: announces where it listens, then serves until stopped.
pub async fn serve_service(args: &NodeArgs, service: Service) -> Result<(), NodeError> {
    let (_server, address) = match service {
        Service::Almanac { max_ttl } => serve_almanac(max_ttl).await?,
        Service::Ledger { mint } => {
            serve_ledger(args.data_dir.as_deref().ok_or(NodeError::Missing("data-dir"))?, mint).await?
        }
    };
    announce_and_serve(&address).await.map_err(NodeError::Announce)
}

/// Why a market could not run across processes (what its agents did is in its summary).
#[derive(Debug, thiserror::Error)]
pub enum DistributedError {
    /// A node could not be started or reached.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The network failed.
    #[error(transparent)]
    Net(#[from] agent_core::net::NetError),
    /// The bureau failed.
    #[error(transparent)]
    Bureau(#[from] agent_core::BureauError),
    /// The market itself could not be set up (its agents, its scenario).
    #[error("the market could not be set up")]
    Market(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The almanac refused or failed.
    #[error("the almanac failed")]
    Almanac(#[from] almanac::AlmanacError),
    /// A wallet operation failed.
    #[error(transparent)]
    Wallet(#[from] agent_core::WalletError),
    /// An agent in another process did not show its books.
    #[error("{agent} did not show its books")]
    Books {
        /// Which.
        agent: String,
        /// Why.
        #[source]
        source: agent_core::RequestError,
    },
    /// An agent of the demo's own process stopped.
    #[error("{0} stopped")]
    Stopped(String),
    /// The options do not describe a market that can run.
    #[error("{0}")]
    Invalid(String),
    /// A file for the nodes could not be written.
    #[error("cannot write the scenario for the nodes")]
    Io(#[from] std::io::Error),
}

/// Where a service node listens: its peer id and addresses.
#[derive(Debug, Clone)]
pub struct NodeAddress {
    /// The node's peer id.
    pub peer_id: PeerId,
    /// Its addresses (without the `/p2p/` suffix).
    pub addrs: Vec<Multiaddr>,
}

impl NodeAddress {
    /// Reads `/ip4/.../tcp/PORT/p2p/PEER_ID`.
    pub fn parse(text: &str) -> Result<NodeAddress, NodeError> {
        let bad = || NodeError::Address(text.to_owned());
        let mut addr: Multiaddr = text.parse().map_err(|_| bad())?;
        match addr.pop() {
            Some(Protocol::P2p(peer_id)) => Ok(NodeAddress { peer_id, addrs: vec![addr] }),
            _ => Err(bad()),
        }
    }

    /// The first address with its `/p2p/` suffix, as [`parse`](Self::parse) reads it.
    pub fn to_arg(&self) -> String {
        let addr = self.addrs.first().cloned().unwrap_or_else(Multiaddr::empty);
        addr.with(Protocol::P2p(self.peer_id)).to_string()
    }
}

/// The lines a node announces itself with: each listening address, then `ready`.
pub fn announcement(peer_id: PeerId, addrs: &[Multiaddr]) -> String {
    let mut lines = String::new();
    for addr in addrs {
        lines.push_str(&format!("node {}\n", addr.clone().with(Protocol::P2p(peer_id))));
    }
    lines.push_str("ready\n");
    lines
}

/// Loopback, on a port the system picks.
pub fn loopback() -> Vec<Multiaddr> {
    "/ip4/127.0.0.1/tcp/0".parse().map(|a| vec![a]).unwrap_or_default()
}

/// Serves an in-memory almanac on loopback until the process is stopped; returns once it
/// listens, with its address. Registrations may last up to `max_ttl`.
pub async fn serve_almanac(max_ttl: Duration) -> Result<(agent_core::net::rpc::ServerHandle, NodeAddress), NodeError> {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let config = almanac::Config::default().with_max_ttl_ms(max_ttl.as_millis() as u64);
    let server = almanac::service::serve(almanac::Almanac::new(config), keypair, &loopback()).await?;
    let address = NodeAddress { peer_id: server.peer_id(), addrs: server.listen_addrs().to_vec() };
    Ok((server, address))
}

/// Serves a ledger on disk in `dir`, where only `mint` may mint, on loopback.
pub async fn serve_ledger(
    dir: &Path,
    mint: Address,
) -> Result<(agent_core::net::rpc::ServerHandle, NodeAddress), NodeError> {
    let ledger = LocalLedger::open(LocalLedgerConfig::default().with_path(dir).with_authority(mint))?;
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let server = agent_core::ledger::service::serve(Arc::new(ledger), keypair, &loopback()).await?;
    let address = NodeAddress { peer_id: server.peer_id(), addrs: server.listen_addrs().to_vec() };
    Ok((server, address))
}

/// A child node, killed when dropped.
pub struct Child {
    process: tokio::process::Child,
    /// Where it listens.
    pub address: NodeAddress,
}

/// Starts `exe` with `args` as the node called `node`, and waits (at most 30 s) until it
/// announces itself.
pub async fn spawn(exe: &Path, node: &str, args: &[String]) -> Result<Child, NodeError> {
    let failed = |source| NodeError::Spawn { node: node.to_owned(), source };
    let mut process = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    let stdout = process.stdout.take().ok_or_else(|| failed(std::io::Error::other("no stdout")))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut address = None;
    let read = async {
        while let Some(line) = lines.next_line().await? {
            match line.split_once(' ') {
                Some(("node", addr)) if address.is_none() => address = Some(addr.to_owned()),
                _ if line == "ready" => return Ok(()),
                _ => {}
            }
        }
        Err(std::io::Error::other("it exited before it was ready"))
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| failed(std::io::Error::other("not ready after 30 s")))?
        .map_err(failed)?;
    let address = NodeAddress::parse(&address.ok_or_else(|| failed(std::io::Error::other("no address")))?)?;
    Ok(Child { process, address })
}

impl Drop for Child {
    fn drop(&mut self) {
        // kill_on_drop does it too; this makes the order explicit.
        if let Err(e) = self.process.start_kill() {
            tracing::debug!(error = %e, "a node had already stopped");
        }
    }
}

/// Announces a node on stdout (see the module docs) and serves until Ctrl-C or SIGTERM.
pub async fn announce_and_serve(address: &NodeAddress) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(announcement(address.peer_id, &address.addrs).as_bytes())?;
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await
}
