//! The flight market: airlines and travellers negotiate seats with contract-net, find each
//! other in the almanac and pay through escrow. Prints each traveller's booking, seats sold
//! per flight, revenue per airline and the market's invariants; exits non-zero if one is
//! broken.
//!
//! ```text
//! cargo run -p agent-examples --bin flights                      # the built-in market
//! cargo run -p agent-examples --bin flights -- --travellers 1000 --airlines 100
//! cargo run -p agent-examples --bin flights -- --scenario my-market.json --json
//! cargo run -p agent-examples --bin flights -- --distributed       # across processes
//! ```
//!
//! With `--distributed`, the demo starts an almanac node, a ledger node and `--shards`
//! airline nodes as child processes (itself, with `--role`), talking over libp2p on
//! loopback, and runs the travellers in its own process (`docs/markets.md`).
#![allow(clippy::print_stdout)] // A demo binary talks to its user on stdout.

use std::path::PathBuf;
use std::time::Duration;

use agent_core::error::Report;
use agent_examples::flights::{self, Options, Scenario};
use clap::Parser;

#[derive(Parser)]
#[command(about = "A market of airlines and travellers negotiating seats (contract-net, escrow)")]
struct Args {
    /// The market, as JSON (docs/markets.md); default: the built-in one.
    #[arg(long, conflicts_with_all = ["travellers", "airlines"])]
    scenario: Option<PathBuf>,
    /// Generate a market with this many travellers (instead of the built-in one).
    #[arg(long)]
    travellers: Option<usize>,
    /// Airlines in a generated market.
    #[arg(long)]
    airlines: Option<usize>,
    /// Routes in a generated market.
    #[arg(long, default_value_t = 20)]
    routes: usize,
    /// The seed of the generated market and of the simulated network.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Market time, in seconds, after which travellers still shopping give up.
    #[arg(long)]
    duration: Option<u64>,
    /// Serve travellers one after another in scenario order.
    #[arg(long)]
    sequential: bool,
    /// Share of messages lost on the simulated network (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Run across OS processes over libp2p instead of on the simulation kit.
    #[arg(long, conflicts_with = "loss")]
    distributed: bool,
    /// Airline processes with --distributed.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Run one node of a distributed market (started by --distributed).
    #[arg(long, hide = true, value_enum)]
    role: Option<Role>,
    #[command(flatten)]
    node: agent_examples::market::distributed::NodeArgs,
    #[command(flatten)]
    metrics: agent_examples::MetricsArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Almanac,
    Ledger,
    Airlines,
}

/// Runs one node of a distributed market: announces where it listens on stdout, then
/// serves until stopped.
async fn serve(args: &Args, role: Role) -> Result<(), Report> {
    use agent_examples::flights::distributed;
    use agent_examples::market::distributed::{announce_and_serve, serve_service, NodeAddress, Service};
    let (_keep, address): (Box<dyn std::any::Any>, NodeAddress) = match role {
        Role::Almanac => {
            return Ok(serve_service(&args.node, Service::Almanac { max_ttl: Duration::from_secs(24 * 3600) }).await?)
        }
        Role::Ledger => {
            return Ok(serve_service(&args.node, Service::Ledger { mint: distributed::mint().address() }).await?)
        }
        Role::Airlines => {
            let scenario = scenario(args)?;
            let (almanac, ledger) = (args.node.almanac()?, args.node.ledger()?);
            let (bureau, address) =
                distributed::serve_airlines(&scenario, args.node.shard, args.shards, &almanac, &ledger).await?;
            (Box::new(bureau), address)
        }
    };
    announce_and_serve(&address).await?;
    Ok(())
}

fn scenario(args: &Args) -> Result<Scenario, flights::ScenarioError> {
    match (&args.scenario, args.travellers, args.airlines) {
        (Some(path), _, _) => Scenario::load(path),
        (None, None, None) => Scenario::built_in(),
        (None, travellers, airlines) => {
            Ok(Scenario::generate(args.seed, travellers.unwrap_or(100), airlines.unwrap_or(10), args.routes))
        }
    }
}

fn main() -> Result<std::process::ExitCode, Report> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    if let Some(addr) = args.metrics.serve_in_background()? {
        // On stderr: stdout carries the summary, which may be JSON.
        eprintln!("metrics http://{addr}/metrics");
    }
    if let Some(role) = args.role {
        tokio::runtime::Runtime::new()?.block_on(serve(&args, role))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if !(0.0..=1.0).contains(&args.loss) {
        return Err(anyhow::anyhow!("--loss must be between 0 and 1, not {}", args.loss).into());
    }
    let scenario = scenario(&args)?;
    let options = Options {
        sequential: args.sequential,
        loss: args.loss,
        progress: !args.json,
        duration: args.duration.map(Duration::from_secs),
        ..Options::default()
    };
    if !args.json {
        let place = match args.distributed {
            true => format!("across {} processes over libp2p", args.shards.max(1) + 2),
            false => format!("simulated, seed {}", args.seed),
        };
        let order = if args.sequential { "served in order" } else { "shopping at once" };
        println!(
            "Flight market: {} airlines, {} travellers, {place}, {order}\n",
            scenario.airlines.len(),
            scenario.travellers.len(),
        );
    }
    let summary = match args.distributed {
        true => {
            let exe = std::env::current_exe()?;
            let run = flights::distributed::run(&exe, &scenario, args.shards, &options);
            tokio::runtime::Runtime::new()?.block_on(run)?
        }
        false => agent_examples::market::simulated_runtime()?.block_on(flights::run(&scenario, args.seed, &options))?,
    };
    match args.json {
        true => agent_examples::market::write_stdout(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?,
        false => agent_examples::market::write_stdout(&summary.to_string())?,
    }
    if !summary.invariants.all_hold() {
        eprintln!("invariants broken: {}", summary.invariants.broken().len());
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
