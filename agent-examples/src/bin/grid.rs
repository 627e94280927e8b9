//! The energy-grid market: households with solar panels, a battery and the grid operator
//! trade energy in a double auction every 15 minutes of a simulated day, settle through
//! escrow, and the operator covers what the auction leaves at its tariff. Prints the day
//! per hour, each household's energy and money, and the market's invariants; exits
//! non-zero if one is broken.
//!
//! ```text
//! cargo run -p agent-examples --bin grid                          # the built-in market
//! cargo run -p agent-examples --bin grid -- --households 200 --seed 3 --plot grid.svg
//! cargo run -p agent-examples --bin grid -- --scenario my-grid.json --json
//! cargo run -p agent-examples --bin grid -- --distributed --first 40 --intervals 16   # across processes
//! ```
#![allow(clippy::print_stdout)] // A demo binary talks to its user on stdout.

use std::path::PathBuf;

use agent_core::error::Report;
use agent_examples::grid::{self, Options, Scenario};
use clap::Parser;

#[derive(Parser)]
#[command(about = "An energy market: households, a battery and the grid operator in a double auction every 15 minutes")]
struct Args {
    /// The market, as JSON (docs/markets.md); default: the built-in one.
    #[arg(long, conflicts_with = "households")]
    scenario: Option<PathBuf>,
    /// Generate a market with this many households (instead of the built-in one).
    #[arg(long)]
    households: Option<usize>,
    /// The seed of the generated market and of the simulated network.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The first interval to run (0 starts at midnight, 40 at 10:00).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// How many 15-minute intervals to run (96 is a day).
    #[arg(long, default_value_t = 96)]
    intervals: usize,
    /// Share of messages lost on the simulated network (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Write an SVG chart of the clearing prices and traded energy to this file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Run across OS processes over libp2p (in real time) instead of on the simulation kit.
    #[arg(long, conflicts_with = "loss")]
    distributed: bool,
    /// Household processes with --distributed.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Milliseconds of real time per 15-minute interval with --distributed (250 to 900000).
    #[arg(long, default_value_t = 1000)]
    ms_per_interval: u64,
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
    Households,
}

/// Runs one node of a distributed market: announces where it listens, then serves until
/// stopped.
async fn serve(args: &Args, scenario: &Scenario, role: Role) -> Result<(), Report> {
    use agent_examples::market::distributed::{announce_and_serve, serve_service, NodeAddress, Service};
    let (_keep, address): (Box<dyn std::any::Any>, NodeAddress) = match role {
        Role::Almanac => {
            return Ok(serve_service(&args.node, Service::Almanac { max_ttl: grid::distributed::REGISTERED_FOR }).await?)
        }
        Role::Ledger => {
            return Ok(serve_service(&args.node, Service::Ledger { mint: grid::distributed::mint().address() }).await?)
        }
        Role::Households => {
            let (almanac, ledger) = (args.node.almanac()?, args.node.ledger()?);
            if args.shards == 0 || args.node.shard >= args.shards {
                return Err(
                    anyhow::anyhow!("--shard {} of --shards {}: no such shard", args.node.shard, args.shards).into()
                );
            }
            let end = args.first.saturating_add(args.intervals);
            let shard = (args.node.shard, args.shards);
            let served =
                grid::distributed::serve_households(scenario, end, args.ms_per_interval, shard, &almanac, &ledger);
            let households = served.await?;
            let address = households.address.clone();
            (Box::new(households), address)
        }
    };
    announce_and_serve(&address).await?;
    Ok(())
}

fn scenario(args: &Args) -> Result<Scenario, grid::ScenarioError> {
    match (&args.scenario, args.households) {
        (Some(path), _) => Scenario::load(path),
        (None, None) => Scenario::built_in(),
        (None, Some(households)) => Ok(Scenario::generate(args.seed, households)),
    }
}

fn main() -> Result<std::process::ExitCode, Report> {
    agent_examples::log_to_stderr();
    let args = Args::parse();
    if let Some(addr) = args.metrics.serve_in_background()? {
        // On stderr: stdout carries the summary, which may be JSON.
        eprintln!("metrics http://{addr}/metrics");
    }
    if !(0.0..=1.0).contains(&args.loss) {
        return Err(anyhow::anyhow!("--loss must be between 0 and 1, not {}", args.loss).into());
    }
    if args.intervals == 0 || args.first.saturating_add(args.intervals) > grid::MAX_INTERVALS {
        let (first, intervals, max) = (args.first, args.intervals, grid::MAX_INTERVALS);
        return Err(
            anyhow::anyhow!("--first {first} --intervals {intervals}: at least one interval, ending by {max}").into()
        );
    }
    let scenario = scenario(&args)?;
    if let Some(role) = args.role {
        tokio::runtime::Runtime::new()?.block_on(serve(&args, &scenario, role))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if args.distributed && !grid::distributed::MS_PER_INTERVAL.contains(&args.ms_per_interval) {
        let ms = args.ms_per_interval;
        return Err(anyhow::anyhow!("--ms-per-interval must be 250 to 900000, not {ms}").into());
    }
    let options = Options {
        first: args.first,
        intervals: args.intervals,
        loss: args.loss,
        progress: !args.json,
        ..Options::default()
    };
    if !args.json {
        println!(
            "Energy market: {} households, {}, operator {} (tariff {} µT/Wh, feed-in {}), seed {}, {} intervals\n",
            scenario.households.len(),
            scenario.battery.as_ref().map_or("no battery".to_owned(), |b| format!("battery {}", b.name)),
            scenario.operator.name,
            scenario.operator.tariff,
            scenario.operator.feed_in,
            args.seed,
            args.intervals
        );
    }
    let summary = match args.distributed {
        true => {
            let exe = std::env::current_exe()?;
            let run = grid::distributed::run(&exe, &scenario, args.shards, args.ms_per_interval, &options);
            tokio::runtime::Runtime::new()?.block_on(run)?
        }
        false => agent_examples::market::simulated_runtime()?.block_on(grid::run(&scenario, args.seed, &options))?,
    };
    match args.json {
        true => agent_examples::market::write_stdout(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?,
        false => agent_examples::market::write_stdout(&summary.to_string())?,
    }
    if let Some(path) = &args.plot {
        grid::plot::plot_day_svg(path, &summary.plot_points()).map_err(|e| anyhow::anyhow!("cannot plot: {e}"))?;
        if !args.json {
            let plotted = format!("\nPlot of the clearing prices and traded energy: {}\n", path.display());
            agent_examples::market::write_stdout(&plotted)?;
        }
    }
    if !summary.invariants.all_hold() {
        eprintln!("invariants broken: {}", summary.invariants.broken().len());
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
