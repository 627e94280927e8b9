//! The DeFi arbitrage market: market makers hold constant-product pools, traders move
//! prices, arbitrageurs trade profitable cycles through the token ledgers. Prints every
//! arbitrage (predicted and realised profit), the pools' reserves and the invariants,
//! writes a plot of the best cycle's spread over time, and exits non-zero if an invariant
//! is broken.
//!
//! ```text
//! cargo run -p agent-examples --bin defi
//! cargo run -p agent-examples --bin defi -- --tokens 5 --pools 10 --traders 20 --arbitrageurs 4
//! cargo run -p agent-examples --bin defi -- --scenario my-market.json --json --plot spread.svg
//! cargo run -p agent-examples --bin defi -- --distributed --duration 20   # across processes
//! ```
#![allow(clippy::print_stdout)] // A demo binary talks to its user on stdout.

use std::path::PathBuf;

use agent_core::error::Report;
use agent_examples::defi::{self, Options, Scenario};
use clap::Parser;

#[derive(Parser)]
#[command(about = "A market of constant-product pools, traders and arbitrageurs")]
struct Args {
    /// The market, as JSON (docs/markets.md); default: the built-in one.
    #[arg(long, conflicts_with_all = ["tokens", "pools", "traders", "arbitrageurs"])]
    scenario: Option<PathBuf>,
    /// Generate a market with this many tokens (2 to 8).
    #[arg(long)]
    tokens: Option<usize>,
    /// Pools in a generated market.
    #[arg(long)]
    pools: Option<usize>,
    /// Traders in a generated market.
    #[arg(long)]
    traders: Option<usize>,
    /// Arbitrageurs in a generated market.
    #[arg(long)]
    arbitrageurs: Option<usize>,
    /// The seed of the generated market and of the simulated network.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of market time the traders trade (the arbitrageurs go on for the calm
    /// period after); default: the scenario's.
    #[arg(long)]
    duration: Option<u64>,
    /// Share of messages lost on the simulated network (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Where to write the plot of the spread over time (SVG).
    #[arg(long, default_value = "defi-spread.svg")]
    plot: PathBuf,
    /// Print the summary as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Run across OS processes over libp2p (in real time) instead of on the simulation kit.
    #[arg(long, conflicts_with = "loss")]
    distributed: bool,
    /// Seconds of calm after trading (default: the scenario's).
    #[arg(long)]
    calm: Option<u64>,
    /// Run one node of a distributed market (started by --distributed).
    #[arg(long, hide = true, value_enum)]
    role: Option<Role>,
    #[command(flatten)]
    node: agent_examples::market::distributed::NodeArgs,
    #[command(flatten)]
    metrics: agent_examples::MetricsArgs,
    /// When the traders stop (--role traders), Unix ms.
    #[arg(long, hide = true)]
    until_ms: Option<u64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Role {
    Almanac,
    Ledger,
    Pools,
    Traders,
}

/// Runs one node of a distributed market: announces where it listens, then serves until
/// stopped.
async fn serve(args: &Args, scenario: &Scenario, role: Role) -> Result<(), Report> {
    use agent_examples::defi::distributed::{self, Part};
    use agent_examples::market::distributed::{announce_and_serve, serve_service, NodeAddress, Service};
    let ledgers = args.node.ledgers()?;
    let (_keep, address): (Box<dyn std::any::Any>, NodeAddress) = match role {
        Role::Almanac => {
            return Ok(serve_service(
                &args.node,
                Service::Almanac { max_ttl: std::time::Duration::from_secs(24 * 3600) },
            )
            .await?)
        }
        Role::Ledger => {
            return Ok(serve_service(&args.node, Service::Ledger { mint: distributed::mint().address() }).await?)
        }
        Role::Pools | Role::Traders => {
            let part = match role {
                Role::Pools => Part::Pools,
                _ => Part::Traders {
                    until_ms: args.until_ms.ok_or_else(|| anyhow::anyhow!("--role traders needs --until-ms"))?,
                },
            };
            let served = distributed::serve(scenario, part, args.seed, &args.node.almanac()?, &ledgers).await?;
            let address = served.address.clone();
            (Box::new(served), address)
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
    if !(0.0..=1.0).contains(&args.loss) {
        return Err(anyhow::anyhow!("--loss must be between 0 and 1, not {}", args.loss).into());
    }
    let mut scenario = match (&args.scenario, args.tokens, args.pools, args.traders, args.arbitrageurs) {
        (Some(path), ..) => Scenario::load(path)?,
        (None, None, None, None, None) => Scenario::built_in()?,
        (None, tokens, pools, traders, arbitrageurs) => Scenario::generate(
            args.seed,
            tokens.unwrap_or(4),
            pools.unwrap_or(6),
            traders.unwrap_or(10),
            arbitrageurs.unwrap_or(2),
        ),
    };
    if let Some(seconds) = args.duration {
        scenario.terms.trading_ms = seconds.saturating_mul(1000);
    }
    if let Some(seconds) = args.calm {
        scenario.terms.calm_ms = seconds.saturating_mul(1000);
    }
    if let Some(role) = args.role {
        tokio::runtime::Runtime::new()?.block_on(serve(&args, &scenario, role))?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let options = Options { loss: args.loss, progress: !args.json, ..Options::default() };
    if !args.json {
        println!(
            "DeFi market: {} tokens, {} pools, {} traders, {} arbitrageurs, seed {}\n",
            scenario.tokens.len(),
            scenario.pools.len(),
            scenario.traders.len(),
            scenario.arbitrageurs.len(),
            args.seed
        );
    }
    let summary = match args.distributed {
        true => {
            let exe = std::env::current_exe()?;
            let run = defi::distributed::run(&exe, &scenario, args.seed, &options);
            tokio::runtime::Runtime::new()?.block_on(run)?
        }
        false => agent_examples::market::simulated_runtime()?.block_on(defi::run(&scenario, args.seed, &options))?,
    };
    defi::spread::plot_svg(&args.plot, &summary.spread)
        .map_err(|e| anyhow::anyhow!("cannot write the plot {}: {e}", args.plot.display()))?;
    match args.json {
        true => agent_examples::market::write_stdout(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?,
        false => {
            let plotted = format!("\nThe spread over time is plotted in {}\n", args.plot.display());
            agent_examples::market::write_stdout(&format!("{summary}{plotted}"))?;
        }
    }
    if !summary.invariants.all_hold() {
        eprintln!("invariants broken: {}", summary.invariants.broken().len());
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}
