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
}

fn scenario(args: &Args) -> Result<Scenario, grid::ScenarioError> {
    match (&args.scenario, args.households) {
        (Some(path), _) => Scenario::load(path),
        (None, None) => Scenario::built_in(),
        (None, Some(households)) => Ok(Scenario::generate(args.seed, households)),
    }
}

fn main() -> Result<std::process::ExitCode, Report> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
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
    let summary = agent_examples::market::simulated_runtime()?.block_on(grid::run(&scenario, args.seed, &options))?;
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&summary)?),
        false => print!("{summary}"),
    }
    if let Some(path) = &args.plot {
        grid::plot::plot_day_svg(path, &summary.plot_points()).map_err(|e| anyhow::anyhow!("cannot plot: {e}"))?;
        if !args.json {
            println!("\nPlot of the clearing prices and traded energy: {}", path.display());
        }
    }
    if !summary.invariants.all_hold() {
        eprintln!("invariants broken: {}", summary.invariants.broken().len());
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
