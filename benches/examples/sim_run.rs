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
            // CPU time of the simulation's thread does not grow when other processes share
            // the cores; the lost count and simulated time show a run repeats exactly.
            let cpu = run.cpu.map_or_else(
                || "CPU time unknown".to_owned(),
                |cpu| format!("{:.2} s CPU: {:.0}/CPU s", cpu.as_secs_f64(), run.deliveries as f64 / cpu.as_secs_f64()),
            );
            eprintln!(
                "{} deliveries in {:.2} s: {:.0}/s ({cpu}); {} lost, {:.3} s simulated; {:?} bytes per agent",
                run.deliveries,
                run.wall.as_secs_f64(),
                run.deliveries as f64 / run.wall.as_secs_f64(),
                run.lost,
                run.simulated.as_secs_f64(),
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
