//! The simulated-network benchmark alone in its process: for profilers.
//!
//! `cargo run --release -p agora-benches --example sim_run -- 100 100 20` runs 100 hosts of
//! 100 agents, each starting a chain of 20 hops, as the report does.

use std::process::ExitCode;

fn main() -> ExitCode {
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|n| n.parse().ok()).collect();
    let [hosts, agents_per_host, hops] = numbers[..] else {
        eprintln!("usage: sim_run HOSTS AGENTS_PER_HOST HOPS");
        return ExitCode::FAILURE;
    };
    match agora_benches::sim_deliveries(hosts, agents_per_host, hops as u32) {
        Ok(run) => {
            eprintln!(
                "{} deliveries in {:.2} s: {:.0}/s, {:?} bytes per agent",
                run.deliveries,
                run.wall.as_secs_f64(),
                run.deliveries as f64 / run.wall.as_secs_f64(),
                run.bytes_per_agent
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("simulation failed: {err}");
            ExitCode::FAILURE
        }
    }
}
