//! The supply chain: a manufacturer procures a bill of materials from tiers of suppliers
//! by contract-net, paying through escrow on delivery; suppliers fail at random and their
//! orders are placed again. Prints each part's orders, cost and arrival, the total against
//! the brute-force optimum, and the invariants; exits non-zero if one is broken.
//!
//! ```text
//! cargo run -p agent-examples --bin supply
//! cargo run -p agent-examples --bin supply -- --parts 20 --suppliers-per-part 4 --failure 0.2
//! cargo run -p agent-examples --bin supply -- --scenario my-chain.json --json
//! cargo run -p agent-examples --bin supply -- --distributed       # across processes
//! ```
#![allow(clippy::print_stdout)] // A demo binary talks to its user on stdout.

use std::path::PathBuf;

use agent_core::error::Report;
use agent_examples::supply::{self, Options, Scenario};
use clap::Parser;

#[derive(Parser)]
#[command(about = "A manufacturer buying a bill of materials from tiers of suppliers (contract-net, escrow)")]
struct Args {
    /// The chain, as JSON (docs/markets.md); default: the built-in one.
    #[arg(long, conflicts_with_all = ["parts", "suppliers_per_part"])]
    scenario: Option<PathBuf>,
    /// Generate a chain with this many top-level parts.
    #[arg(long)]
    parts: Option<usize>,
    /// Suppliers of each part in a generated chain.
    #[arg(long)]
    suppliers_per_part: Option<usize>,
    /// The highest failure probability of a generated chain's suppliers.
    #[arg(long, default_value_t = 0.2)]
    failure: f64,
    /// The seed of the generated chain, of the suppliers' failures and of the network.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Market hours after which buyers start no new round (parts still missing are
    /// reported short).
    #[arg(long)]
    duration: Option<u64>,
    /// Rounds a buyer runs for one part (default: the scenario's).
    #[arg(long)]
    rounds: Option<u32>,
    /// Share of messages lost on the simulated network (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Run across OS processes over libp2p instead of on the simulation kit.
    #[arg(long, conflicts_with = "loss")]
    distributed: bool,
    /// Supplier processes with --distributed.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Milliseconds of real time per market hour with --distributed.
    #[arg(long, default_value_t = 100)]
    ms_per_hour: u64,
    /// Run one node of a distributed chain (started by --distributed).
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
    Suppliers,
}

/// Runs one node of a distributed chain: announces where it listens, then serves until
/// stopped.
async fn serve(args: &Args, scenario: Scenario, role: Role) -> Result<(), Report> {
    use agent_examples::market::distributed::{announce_and_serve, serve_service, NodeAddress, Service};
    let (_keep, address): (Box<dyn std::any::Any>, NodeAddress) = match role {
        Role::Almanac => {
            return Ok(serve_service(
                &args.node,
                Service::Almanac { max_ttl: std::time::Duration::from_secs(31 * 24 * 3600) },
            )
            .await?)
        }
        Role::Ledger => {
            return Ok(serve_service(&args.node, Service::Ledger { mint: supply::distributed::mint().address() }).await?)
        }
        Role::Suppliers => {
            let (almanac, ledger) = (args.node.almanac()?, args.node.ledger()?);
            let served = supply::distributed::serve_suppliers(
                &scenario,
                args.seed,
                args.node.shard,
                args.shards,
                &almanac,
                &ledger,
            );
            let (bureau, address) = served.await?;
            (Box::new(bureau), address)
        }
    };
    announce_and_serve(&address).await?;
    Ok(())
}

fn main() -> Result<std::process::ExitCode, Report> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    if let Some(addr) = args.metrics.serve_in_background()? {
        // On stderr: stdout carries the summary, which may be JSON.
        eprintln!("metrics http://{addr}/metrics");
    }
    if !(0.0..=1.0).contains(&args.loss) || !(0.0..=1.0).contains(&args.failure) {
        return Err(anyhow::anyhow!("--loss and --failure must be between 0 and 1").into());
    }
    let mut scenario = match (&args.scenario, args.parts, args.suppliers_per_part) {
        (Some(path), ..) => Scenario::load(path)?,
        (None, None, None) => Scenario::built_in()?,
        (None, parts, per_part) => {
            Scenario::generate(args.seed, parts.unwrap_or(5), per_part.unwrap_or(3), args.failure)
        }
    };
    if let Some(rounds) = args.rounds {
        scenario.terms.rounds = rounds.max(1);
    }
    if let Some(role) = args.role {
        tokio::runtime::Runtime::new()?.block_on(serve(&args, scenario, role))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.distributed {
        scenario.terms.ms_per_hour = args.ms_per_hour.clamp(1, 3_600_000);
    }
    let options =
        Options { loss: args.loss, progress: !args.json, duration_hours: args.duration, ..Options::default() };
    if !args.json {
        println!(
            "Supply chain: {} parts, {} suppliers, seed {}\n",
            scenario.bom.parts.len(),
            scenario.suppliers.len(),
            args.seed
        );
    }
    let summary = match args.distributed {
        true => {
            let exe = std::env::current_exe()?;
            let run = supply::distributed::run(&exe, &scenario, args.seed, args.shards, &options);
            tokio::runtime::Runtime::new()?.block_on(run)?
        }
        false => agent_examples::market::simulated_runtime()?.block_on(supply::run(&scenario, args.seed, &options))?,
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
