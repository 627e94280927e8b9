//! A network node with one agent that answers `Ping(n)` with `Pong(n)`: the far end of the
//! cross-process tests and benchmarks.
//!
//! Prints `peer_id <id>`, one `listening <multiaddr>` line per address and `agent <address>`,
//! `metrics http://ADDR/metrics` when given `--metrics-addr`, then `handled <n>` for each
//! ping it handles.
#![allow(clippy::print_stdout)] // The node reports to the test that drives it on stdout.

use std::io::Write;

use agent_core::error::Report;
use agent_core::transport::{Auth, NetworkConfig, StaticResolver};
use agent_core::{Acknowledge, Address, Agent, Bureau, Context, MailboxConfig, ReplyError};
use agent_examples::{Ping, Pong};
use clap::Parser;
use libp2p::Multiaddr;

#[derive(Parser)]
#[command(about = "An Agora node with an echo agent")]
struct Args {
    /// Address to listen on; repeat for several.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// The echo agent's seed.
    #[arg(long, default_value = "echo agent")]
    seed: String,
    /// Secret phrase for the node's libp2p identity (a stable peer id across restarts).
    #[arg(long)]
    node_seed: Option<String>,
    /// Authenticate replies with signatures instead of a session binding.
    #[arg(long)]
    signed: bool,
    /// Print `handled <n>` for each ping.
    #[arg(long)]
    log_handled: bool,
    /// Directory for the node's storage, so that a restarted node knows what it may
    /// already have handled (default: in memory).
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Acknowledge a ping only once it is handled, not once it is queued.
    #[arg(long)]
    ack_when_handled: bool,
    /// Time each ping takes to handle, in milliseconds (default 0).
    #[arg(long, default_value_t = 0)]
    handle_ms: u64,
    #[command(flatten)]
    metrics: agent_examples::MetricsArgs,
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    let mut config = agent_core::Config::default();
    if let Some(dir) = &args.data {
        config = config.with_storage_dir(dir);
    }
    let bureau = Bureau::with_config(config)?;
    let mut mailbox = MailboxConfig::default();
    if args.ack_when_handled {
        mailbox = mailbox.with_acknowledge(Acknowledge::WhenHandled);
    }
    let mut echo = Agent::builder("echo").seed(args.seed.clone()).mailbox(mailbox).build()?;
    let log_handled = args.log_handled;
    let handle_time = std::time::Duration::from_millis(args.handle_ms);
    echo.on_message(move |ctx: Context, _from: Address, Ping(n): Ping| async move {
        if !handle_time.is_zero() {
            tokio::time::sleep(handle_time).await;
        }
        if log_handled {
            let mut out = std::io::stdout().lock();
            // A closed stdout (the parent stopped reading) must not stop the node.
            let _ = writeln!(out, "handled {n}");
            let _ = out.flush();
        }
        if ctx.is_request() {
            ctx.reply(Pong(n)).await?;
        }
        Ok::<(), ReplyError>(())
    });
    let agent = bureau.add(echo)?;
    let mut config = NetworkConfig::new(args.listen.clone(), std::sync::Arc::new(StaticResolver::new()));
    if let Some(seed) = &args.node_seed {
        config = config.with_keypair(agent_core::net::node_keypair(seed));
    }
    if args.signed {
        config = config.with_auth(Auth::Signed);
    }
    let info = bureau.listen(config).await?;
    let metrics = args.metrics.serve().await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "peer_id {}", info.peer_id)?;
        for address in &info.listen_addrs {
            writeln!(out, "listening {address}")?;
        }
        writeln!(out, "agent {agent}")?;
        if let Some(metrics) = &metrics {
            writeln!(out, "metrics http://{}/metrics", metrics.local_addr())?;
        }
        out.flush()?;
    }
    bureau.run_until_ctrl_c().await?;
    Ok(())
}
