//! Contract-net rounds with 1,000 participants, alone in their process: for profilers.
//!
//! `cargo run --release -p agora-benches --example cnet_rounds -- 10 [reuse|ahead]`, or under `perf record`
//! or `valgrind --tool=callgrind`. Each round runs in a fresh market, as the report's do;
//! prints each round's time (call + award), the CPU time it took with its storage commit
//! (all threads, a figure the machine's load does not inflate), and the median.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let rounds = std::env::args().nth(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(10).max(1);
    // `reuse`: every round in one market, so a profile is not mostly the markets' setup.
    // `ahead`: every round in a fresh market, all made (and settled) before the first
    // round, so a profiler started late (`perf record -D`) sees the rounds alone.
    let reuse = std::env::args().nth(2).as_deref() == Some("reuse");
    let ahead = std::env::args().nth(2).as_deref() == Some("ahead");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let timed = runtime.block_on(async {
        let mut timed = Vec::with_capacity(rounds);
        let mut kept = None;
        let mut made = Vec::new();
        if ahead {
            for _ in 0..rounds {
                made.push(agora_benches::ContractNetMarket::new(1_000).await?);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            eprintln!("markets made");
        }
        for _ in 0..rounds {
            let market = match (kept.take(), made.pop()) {
                (Some(market), _) | (None, Some(market)) => market,
                (None, None) => agora_benches::ContractNetMarket::new(1_000).await?,
            };
            let before = agora_benches::cpu_time();
            let (call, award) = market.round().await?;
            // The storage commits the round's writes within 50 ms, on its own thread: counted.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let cpu = agora_benches::cpu_time().zip(before).map(|(after, before)| ms(after - before));
            eprintln!(
                "round: {:.1} ms (call {:.1} + award {:.1}); cpu {:.1} ms with its commit",
                ms(call + award),
                ms(call),
                ms(award),
                cpu.unwrap_or(f64::NAN)
            );
            timed.push(call + award);
            if reuse {
                kept = Some(market);
            } else {
                market.shutdown().await?;
            }
        }
        if let Some(market) = kept {
            market.shutdown().await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(timed)
    });
    match timed {
        Ok(mut timed) => {
            timed.sort();
            eprintln!("median of {}: {:.1} ms (min {:.1})", timed.len(), ms(timed[timed.len() / 2]), ms(timed[0]));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("contract-net rounds: {err}");
            ExitCode::FAILURE
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
