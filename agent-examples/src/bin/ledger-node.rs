//! A ledger node: hosts a ledger on disk (`ledger.log` in its data directory) and serves it over libp2p, so agents in other
//! processes settle on one shared ledger.
//!
//! ```text
//! ledger-node --data-dir ./ledger --listen /ip4/127.0.0.1/tcp/4100 \
//!             --node-seed "node secret" --authority agent1…
//! ```
//! Prints `peer_id <id>` and one `listening <multiaddr>` line per address (and
//! `metrics http://ADDR/metrics` when given `--metrics-addr`), then serves
//! until killed. The same `--node-seed` gives the same peer id after a restart.
#![allow(clippy::print_stdout)] // The node reports its addresses on stdout for scripts.

use std::path::PathBuf;
use std::sync::Arc;

use agent_core::error::Report;
use agent_core::ledger::{service, LocalLedger, LocalLedgerConfig};
use agent_core::Address;
use anyhow::Context as _;
use clap::Parser;
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(about = "Serve an Agora ledger over libp2p")]
struct Args {
    /// Directory of the ledger's database (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on; repeat for several (TCP and QUIC).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// Secret phrase from which the node's libp2p identity is derived (a stable peer id).
    #[arg(long)]
    node_seed: Option<String>,
    /// The only account allowed to mint (the faucet).
    #[arg(long)]
    authority: Option<Address>,
    #[command(flatten)]
    metrics: agent_examples::MetricsArgs,
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    let mut config = LocalLedgerConfig::default().with_path(&args.data_dir);
    if let Some(authority) = args.authority {
        config = config.with_authority(authority);
    }
    let ledger =
        LocalLedger::open(config).with_context(|| format!("cannot open the ledger in {}", args.data_dir.display()))?;
    let keypair = match &args.node_seed {
        Some(seed) => agent_core::net::node_keypair(seed),
        None => libp2p::identity::Keypair::generate_ed25519(),
    };
    let server = service::serve(Arc::new(ledger), keypair, &args.listen).await?;
    let metrics = args.metrics.serve().await?;
    println!("peer_id {}", server.peer_id());
    for address in server.listen_addrs() {
        println!("listening {address}");
    }
    if let Some(metrics) = &metrics {
        println!("metrics http://{}/metrics", metrics.local_addr());
    }
    tokio::signal::ctrl_c().await?;
    Ok(())
}
