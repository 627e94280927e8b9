//! The almanac server: stores registrations on disk (`almanac.redb` in its data directory)
//! and serves them over libp2p.
//!
//! ```text
//! almanac --data-dir ./almanac --listen /ip4/0.0.0.0/tcp/4000 --node-seed "secret"
//! ```
//! Prints `peer_id <id>` and one `listening <multiaddr>` line per address on start, and
//! `metrics http://ADDR/metrics` when given `--metrics-addr` (`docs/metrics.md`).
#![allow(clippy::print_stdout)] // The server reports its addresses on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use agent_core::error::Report;
use almanac::{service, Almanac, Config};
use anyhow::Context as _;
use clap::Parser;
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(about = "Serve an Agora almanac (agent registry) over libp2p")]
struct Args {
    /// Directory of the almanac's database (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on; repeat for several (TCP and QUIC).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// Secret phrase from which the node's libp2p identity is derived (a stable peer id).
    #[arg(long)]
    node_seed: Option<String>,
    /// Most records held.
    #[arg(long, default_value_t = 10_000_000)]
    max_records: usize,
    /// Longest accepted time to live, in seconds.
    #[arg(long, default_value_t = 86_400)]
    max_ttl_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (for example 127.0.0.1:9100; port 0
    /// picks a free port).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config::default().with_max_records(args.max_records).with_max_ttl_ms(args.max_ttl_secs * 1000);
    let almanac = Almanac::open(&args.data_dir, config)
        .with_context(|| format!("cannot open the almanac in {}", args.data_dir.display()))?;
    let _expiry = almanac.start_expiry(Duration::from_secs(1));
    let keypair = match &args.node_seed {
        Some(seed) => agent_core::net::node_keypair(seed),
        None => libp2p::identity::Keypair::generate_ed25519(),
    };
    let server = service::serve(almanac, keypair, &args.listen).await?;
    let metrics = agent_core::metrics::serve_if(args.metrics_addr).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "peer_id {}", server.peer_id())?;
    for address in server.listen_addrs() {
        writeln!(out, "listening {address}")?;
    }
    if let Some(metrics) = &metrics {
        writeln!(out, "metrics http://{}/metrics", metrics.local_addr())?;
    }
    out.flush()?;
    drop(out);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
