//! Prints the figures the issues ask for, measured in this run, beside the reference
//! figures of Python uAgents and kameo (or uAgents measured live with `--uagents`).
//!
//! `cargo run --release -p agora-benches --bin report -- --help`

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agora_benches::{idle_agent, ping_pong, resident_bytes, Figures};
use clap::Parser;

/// uAgents 0.26.1 Bureau ping-pong on this class of machine (shared/peers/uagents).
const UAGENTS_BUREAU_RT_PER_S: f64 = 2_426.0;
/// uAgents memory per idle agent, bytes (0.78 MiB).
const UAGENTS_IDLE_AGENT_BYTES: f64 = 0.78 * 1024.0 * 1024.0;
/// kameo 0.22 `ask` from a spawned task: current-thread and 2-worker runtimes.
const KAMEO_CURRENT_THREAD: f64 = 2_000_000.0;
const KAMEO_MULTI_THREAD: f64 = 1_600_000.0;

#[derive(Parser)]
#[command(about = "Agora's benchmark figures, with ratios to uAgents and kameo")]
struct Args {
    /// Round trips per ping-pong measurement.
    #[arg(long, default_value_t = 1_000_000)]
    round_trips: u64,
    /// Requests in flight in the pipelined variant.
    #[arg(long, default_value_t = 64)]
    in_flight: u64,
    /// Idle agents in the memory measurement.
    #[arg(long, default_value_t = 100_000)]
    agents: usize,
    /// A Python with uagents==0.26.1 installed: measure uAgents live in this run instead
    /// of quoting the reference figures.
    #[arg(long)]
    uagents: Option<PathBuf>,
    /// Skip the memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Skip the ledger measurement.
    #[arg(long)]
    no_ledger: bool,
    /// Measure only this runtime (current_thread or multi_thread).
    #[arg(long)]
    runtime: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut out = String::new();
    if !args.no_memory {
        // First, while the heap is fresh.
        out += &memory(args.agents)?;
    }
    let uagents = match &args.uagents {
        Some(python) => measure_uagents(python).map(|rt| (rt, "measured in this run")),
        None => None,
    }
    .unwrap_or((UAGENTS_BUREAU_RT_PER_S, "reference, shared/peers/uagents"));
    out += &format!(
        "\nIn-process request/reply, two agents in one bureau, the requester inside the runtime\n\
         uAgents 0.26.1 Bureau: {:.0} rt/s ({}); kameo 0.22: 2.0M/s current-thread, 1.6M/s 2 workers\n\n\
         {:<15} {:<16} {:>12} {:>9} {:>9} {:>11} {:>9}\n",
        uagents.0, uagents.1, "runtime", "mode", "rt/s", "p50 us", "p99 us", "x uAgents", "/ kameo"
    );
    for (runtime, kameo) in [("current_thread", KAMEO_CURRENT_THREAD), ("multi_thread", KAMEO_MULTI_THREAD)] {
        if args.runtime.as_deref().is_some_and(|only| only != runtime) {
            continue;
        }
        for (mode, in_flight) in [("one at a time", 1), ("pipelined", args.in_flight)] {
            let figures = run(runtime, args.round_trips, in_flight)?;
            let mode = if in_flight > 1 { format!("{mode} ({in_flight})") } else { mode.to_owned() };
            out += &row(runtime, &mode, &figures, uagents.0, kameo);
        }
    }
    if !args.no_ledger {
        out += &ledger()?;
    }
    write(&out);
    Ok(())
}

fn ledger() -> Result<String, Box<dyn std::error::Error>> {
    let rt = runtime("multi_thread")?;
    let verify = agora_benches::verify_rate(20_000);
    let mut out = format!(
        "\nLocal ledger: pre-signed transfers applied (signature verified, sled transaction)\n\
         ed25519 strict verification on one core, measured in this run: {verify:.0}/s\n\n\
         {:<34} {:>12} {:>14}\n",
        "mode", "transfers/s", "/ verify rate"
    );
    for (label, count, senders, durable) in [
        ("durable, 1 sender (fsync per ack)", 300, 1, true),
        ("durable, 64 senders (group fsync)", 6_400, 64, true),
        ("not durable, 1 sender", 20_000, 1, false),
        ("not durable, 64 senders", 64_000, 64, false),
    ] {
        let rate = rt.block_on(agora_benches::ledger_transfers(count, senders, durable))?;
        out += &format!("{label:<34} {rate:>12.0} {:>14.2}\n", rate / verify);
    }
    Ok(out)
}

fn runtime(kind: &str) -> std::io::Result<tokio::runtime::Runtime> {
    match kind {
        "current_thread" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}

fn run(kind: &str, round_trips: u64, in_flight: u64) -> Result<Figures, Box<dyn std::error::Error>> {
    let rt = runtime(kind)?;
    // Warm up allocator and caches, then measure.
    rt.block_on(ping_pong(round_trips / 10 + 1, in_flight))?;
    rt.block_on(ping_pong(round_trips, in_flight))
}

fn row(runtime: &str, mode: &str, f: &Figures, uagents: f64, kameo: f64) -> String {
    let rate = f.per_second();
    format!(
        "{:<15} {:<16} {:>12.0} {:>9.2} {:>9.2} {:>10.0}x {:>9.2}\n",
        runtime,
        mode,
        rate,
        f.p50_ns as f64 / 1e3,
        f.p99_ns as f64 / 1e3,
        rate / uagents,
        rate / kameo
    )
}

fn memory(agents: usize) -> Result<String, Box<dyn std::error::Error>> {
    let rt = runtime("multi_thread")?;
    let before = resident_bytes().ok_or("cannot read /proc/self/statm")?;
    let after = rt.block_on(async {
        let bureau = agent_core::Bureau::new()?;
        let template = idle_agent()?;
        for i in 0..agents {
            bureau.add(template.sibling(format!("idle-{i}"), agent_core::Identity::generate()))?;
        }
        // Let every agent start and park on its empty mailbox.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = resident_bytes().ok_or("cannot read /proc/self/statm")?;
        bureau.shutdown().await?;
        Ok::<_, Box<dyn std::error::Error>>(after)
    })?;
    let per_agent = after.saturating_sub(before) as f64 / agents as f64;
    Ok(format!(
        "Memory: {agents} idle agents in one bureau: {:.1} MiB resident, {:.0} bytes per agent \
         (target < 4096; uAgents about 0.78 MiB per agent: {:.0}x less here)\n",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
        per_agent,
        UAGENTS_IDLE_AGENT_BYTES / per_agent
    ))
}

fn measure_uagents(python: &PathBuf) -> Option<f64> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/uagents/bureau_pingpong.py");
    let output = Command::new(python).arg(script).arg("2000").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "... = 2426.1 rt/s; ..."
    let rate = text.split(" = ").nth(1)?.split(" rt/s").next()?.trim().parse().ok()?;
    Some(rate)
}

fn write(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}
