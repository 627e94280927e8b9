//! One node of the soak test (`agent-examples/tests/soak.rs` starts them, with the
//! `almanac` and `ledger-node` binaries, and kills and restarts them):
//!
//! - `soak --role receiver --node N --agents K --data-dir DIR --listen ADDR --almanac ADDR`:
//!   K receiver agents that record each request on disk before answering
//!   ([`agent_examples::soak::serve_receivers`]). Announces `node <addr>` and `ready`.
//! - `soak --role sender --node N --agents K --receivers R --receiver-agents K2 --almanac ADDR
//!   --ledger ADDR --journal FILE`: K sender agents ([`agent_examples::soak::start_senders`]), paused
//!   until told. Announces `ready`, then obeys one command per line on stdin:
//!   `run`, `pause` (answers `paused` or `busy` once nothing is in flight, waiting at most
//!   the request timeout), `status` (answers `status tasks=… connections=… links=…
//!   pending=… requests=… acknowledged=…`) and `report` (answers `report {json}`, a
//!   [`agent_examples::soak::SenderReport`]; what was acknowledged is in the journal,
//!   flushed before the answer). Ends at the end of stdin.
#![allow(clippy::print_stdout)] // The node answers the driving test on stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use agent_core::error::Report;
use agent_examples::market::distributed::{announce_and_serve, NodeAddress};
use agent_examples::soak::{self, Phase, SenderPlan};
use anyhow::Context as _;
use clap::Parser;
use libp2p::Multiaddr;
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
#[command(about = "A node of the Agora soak test")]
struct Args {
    /// What this node is.
    #[arg(long, value_enum)]
    role: Role,
    /// This node's index among the nodes of its role.
    #[arg(long, default_value_t = 0)]
    node: usize,
    /// Agents on this node.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Receiver nodes (a sender).
    #[arg(long, default_value_t = 1)]
    receivers: usize,
    /// Agents on each receiver node (a sender).
    #[arg(long, default_value_t = 4)]
    receiver_agents: usize,
    /// The receiver's storage (kept across restarts).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where a sender appends what was acknowledged.
    #[arg(long)]
    journal: Option<PathBuf>,
    /// Where a receiver listens (the same across restarts).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Multiaddr,
    /// The almanac, as /ip4/.../tcp/PORT/p2p/PEER_ID.
    #[arg(long)]
    almanac: String,
    /// The ledger node, as /ip4/.../tcp/PORT/p2p/PEER_ID (a sender).
    #[arg(long)]
    ledger: Option<String>,
    /// Milliseconds each sender agent waits between two requests.
    #[arg(long, default_value_t = 20)]
    pace_ms: u64,
    /// A ledger transfer after every this many requests of an agent.
    #[arg(long, default_value_t = 10)]
    transfer_every: u64,
    /// Milliseconds a request or a transfer may take.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Seeds the senders' choice of receivers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    Receiver,
    Sender,
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    let almanac = NodeAddress::parse(&args.almanac)?;
    match args.role {
        Role::Receiver => {
            let data_dir = args.data_dir.as_deref().context("a receiver needs --data-dir")?;
            let receivers =
                soak::serve_receivers(args.node, args.agents, data_dir, args.listen.clone(), &almanac).await?;
            announce_and_serve(&receivers.address).await?;
            drop(receivers);
        }
        Role::Sender => {
            let ledger = NodeAddress::parse(args.ledger.as_deref().context("a sender needs --ledger")?)?;
            let timeout = Duration::from_millis(args.timeout_ms);
            let plan = SenderPlan {
                node: args.node,
                agents: args.agents,
                receivers: (args.receivers, args.receiver_agents),
                pace: Duration::from_millis(args.pace_ms),
                transfer_every: args.transfer_every,
                timeout,
                seed: args.seed,
                journal: args.journal.clone().context("a sender needs --journal")?,
            };
            let senders = soak::start_senders(plan, &almanac, &ledger).await?;
            answer("ready")?;
            let mut commands = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Some(command) = commands.next_line().await? {
                match command.trim() {
                    "run" => {
                        senders.set_phase(Phase::Run, Duration::ZERO).await;
                        answer("running")?;
                    }
                    // In-flight requests end by their timeout; the transfer after them too.
                    "pause" => match senders.set_phase(Phase::Pause, timeout * 2 + Duration::from_secs(1)).await {
                        true => answer("paused")?,
                        false => answer("busy")?,
                    },
                    "status" => {
                        let stats = senders.bureau.network_stats().unwrap_or_default();
                        let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
                        let acknowledged = senders.acknowledged();
                        answer(&format!(
                            "status tasks={tasks} connections={} links={} pending={} requests={} acknowledged={acknowledged}",
                            stats.connections,
                            stats.links,
                            stats.pending_requests,
                            senders.requests()
                        ))?;
                    }
                    "report" => answer(&format!("report {}", serde_json::to_string(&senders.report()?)?))?,
                    other => tracing::warn!(command = other, "unknown command"),
                }
            }
            senders.shutdown().await?;
        }
    }
    Ok(())
}

/// One line to the driver, flushed at once.
fn answer(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}
