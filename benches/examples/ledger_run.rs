//! The local ledger's transfers, alone in their process: for profilers.
//!
//! `cargo run --release -p agora-benches --example ledger_run -- 64000 64 [durable]`: applies
//! that many pre-signed transfers from that many senders (see
//! `agora_benches::ledger_transfers`) and prints the rate and the CPU time of the process.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let count = args.next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(64_000);
    let senders = args.next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(64).max(1);
    let durable = args.next().as_deref() == Some("durable");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let before = agora_benches::cpu_time();
    match runtime.block_on(agora_benches::ledger_transfers(count, senders, durable)) {
        Ok(run) => {
            let cpu = agora_benches::cpu_time().zip(before).map(|(after, before)| after - before);
            eprintln!(
                "{:.0} transfers/s; height {}; CPU time of the process, signing and reopening included: {:?}",
                run.rate, run.height, cpu
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ledger run failed: {err}");
            ExitCode::FAILURE
        }
    }
}
