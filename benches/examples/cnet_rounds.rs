//! Contract-net rounds with 1,000 participants, alone in their process: for profilers.
//!
//! `cargo run --release -p agora-benches --example cnet_rounds -- 10 [reuse|ahead]`, or under `perf record`
//! or `valgrind --tool=callgrind`. Each round runs in a fresh market, as the report's do;
//! prints each round's time (call + award), the CPU time it took in the round and with its
//! storage commit (all threads, a figure the machine's load does not inflate), each busy
//! thread's time on a CPU and waiting for one during the round, and the median.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let rounds = std::env::args().nth(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(10).max(1);
    // `reuse`: every round in one market, so a profile is not mostly the markets' setup.
    // `ahead`: every round in a fresh market, all made (and settled) before the first
    // round and stopped after the last, so a profiler started late (`perf record -D`) and
    // stopped at "rounds done" sees the rounds alone.
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
        let mut ran = Vec::new();
        for _ in 0..rounds {
            let market = match (kept.take(), made.pop()) {
                (Some(market), _) | (None, Some(market)) => market,
                (None, None) => agora_benches::ContractNetMarket::new(1_000).await?,
            };
            let before = agora_benches::cpu_time();
            let threads_before = threads();
            let (call, award) = market.round().await?;
            let by_thread = on_and_off_cpu(&threads_before, &threads());
            let in_round = agora_benches::cpu_time().zip(before).map(|(after, before)| ms(after - before));
            // The storage commits the round's writes within 50 ms, on its own thread: counted.
            tokio::time::sleep(Duration::from_millis(150)).await;
            let cpu = agora_benches::cpu_time().zip(before).map(|(after, before)| ms(after - before));
            eprintln!(
                "round: {:.1} ms (call {:.1} + award {:.1}); cpu {:.1} ms in the round, {:.1} ms with its commit;{by_thread}",
                ms(call + award),
                ms(call),
                ms(award),
                in_round.unwrap_or(f64::NAN),
                cpu.unwrap_or(f64::NAN)
            );
            timed.push(call + award);
            if reuse {
                kept = Some(market);
            } else if ahead {
                // Stopped after the last round, so the profile of the rounds holds no shutdown.
                ran.push(market);
            } else {
                market.shutdown().await?;
            }
        }
        if ahead {
            eprintln!("rounds done");
        }
        for market in kept.into_iter().chain(ran) {
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

/// Each thread's time on a CPU and time runnable but waiting for one, in nanoseconds, by
/// thread id (the first two fields of its schedstat); empty where they cannot be read.
fn threads() -> HashMap<String, (String, u64, u64)> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return threads };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_owned();
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else { continue };
        let mut fields = stat.split_whitespace().map(|field| field.parse::<u64>().unwrap_or(0));
        let (on_cpu, waiting) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
        threads.insert(task.file_name().to_string_lossy().into_owned(), (name, on_cpu, waiting));
    }
    threads
}

/// The threads that ran or waited between `before` and `after`: ` name run R wait W;` (ms)
/// each. A round on two cores whose workers wait long for a CPU was slowed by other
/// threads (the storage committer's, or other processes'), not by its own work.
fn on_and_off_cpu(before: &HashMap<String, (String, u64, u64)>, after: &HashMap<String, (String, u64, u64)>) -> String {
    let mut line = String::new();
    for (id, (name, on_cpu, waiting)) in after {
        let (on_before, waiting_before) = before.get(id).map_or((0, 0), |(_, on, wait)| (*on, *wait));
        let (ran, waited) = (on_cpu.saturating_sub(on_before), waiting.saturating_sub(waiting_before));
        if ran + waited > 100_000 {
            line += &format!(" {name} run {:.1} wait {:.1};", ran as f64 / 1e6, waited as f64 / 1e6);
        }
    }
    line
}
