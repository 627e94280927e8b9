//! Prints the figures the issues ask for, measured in this run, beside kameo measured in
//! the same run and Python uAgents (measured live with `--uagents`, or a reference figure
//! the output names as such, with the reason it was not measured).
//!
//! `cargo run --release -p agora-benches --bin report -- --help`

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agora_benches::summary::{self, Row};
use agora_benches::{idle_agent, kameo_peer, ping_pong, resident_bytes, Figures};
use clap::Parser;

/// uAgents 0.26.1 Bureau ping-pong on this class of machine (shared/peers/uagents).
const UAGENTS_BUREAU_RT_PER_S: f64 = 2_426.0;
/// uAgents 0.26.1 HTTP ping-pong between two processes on 127.0.0.1 (shared/peers/uagents).
const UAGENTS_HTTP_RT_PER_S: f64 = 84.0;
/// uAgents memory per idle agent, bytes (0.78 MiB).
const UAGENTS_IDLE_AGENT_BYTES: f64 = 0.78 * 1024.0 * 1024.0;

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
    /// Also sweep requests in flight (1 to 256, multi-thread runtime, Agora and kameo) and
    /// draw throughput and latency percentiles against them as an SVG at this path.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Skip the memory measurement.
    #[arg(long)]
    no_memory: bool,
    /// Skip the ledger measurement.
    #[arg(long)]
    no_ledger: bool,
    /// Skip the almanac measurement.
    #[arg(long)]
    no_almanac: bool,
    /// Skip the negotiation protocols measurement.
    #[arg(long)]
    no_protocols: bool,
    /// Skip the simulated-network measurement.
    #[arg(long)]
    no_simulation: bool,
    /// Skip the subnet measurement (one Yuma Consensus epoch).
    #[arg(long)]
    no_subnet: bool,
    /// Install the Prometheus metrics recorder first, to measure what recording costs.
    #[arg(long)]
    metrics: bool,
    /// Skip the durable stores measurement (agent storage and almanac on disk).
    #[arg(long)]
    no_durable: bool,
    /// Seconds each durable store measurement runs.
    #[arg(long, default_value_t = 5)]
    durable_secs: u64,
    /// Run only the storage soak: 64 agents writing and flushing for this many seconds,
    /// printing flushes/s and resident memory every 10 s.
    #[arg(long)]
    soak_secs: Option<u64>,
    /// Skip the cross-process measurement.
    #[arg(long)]
    no_network: bool,
    /// A Python with uagents==0.26.1: measure its HTTP ping-pong between two processes live.
    #[arg(long)]
    uagents_http: Option<PathBuf>,
    /// Internal: measure memory only (the report runs it in a child process, so the
    /// freed agents do not slow the other measurements down).
    #[arg(long, hide = true)]
    memory_only: bool,
    /// Internal: measure the simulated network's memory per agent only, in a fresh process
    /// (in the report's own, the heap freed by earlier sections hides the growth).
    #[arg(long, hide = true)]
    simulation_memory_only: bool,
    /// Internal: run as the far end of the cross-process benchmark.
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Measure only this runtime (current_thread or multi_thread).
    #[arg(long)]
    runtime: Option<String>,
    /// Cross-process: measure only this authentication mode (bound or signed).
    #[arg(long)]
    auth: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.metrics {
        // Everything below is then recorded, as in a node serving `--metrics-addr`.
        agent_core::metrics::install()?;
    }
    if let Some(auth) = &args.serve {
        return serve(auth);
    }
    if let Some(seconds) = args.soak_secs {
        write(&soak(seconds)?);
        return Ok(());
    }
    if args.simulation_memory_only {
        let run = agora_benches::sim_deliveries(100, 100, 0)?;
        let bytes = run.bytes_per_agent.ok_or("resident memory cannot be read here (no /proc)")?;
        write(&format!("{bytes} bytes per agent\n"));
        return Ok(());
    }
    if args.memory_only {
        write(&memory(args.agents)?);
        return Ok(());
    }
    let mut out = String::new();
    if !args.no_memory {
        // In a fresh process: a clean heap for it, and none of its garbage left for the rest.
        let child = Command::new(std::env::current_exe()?)
            .args(["--memory-only", "--agents", &args.agents.to_string()])
            .output()?;
        let text = String::from_utf8_lossy(&child.stdout);
        if let Some(bytes) = bytes_per_agent_in(&text) {
            summary::record(Row {
                figure: format!("memory per idle agent ({} agents)", args.agents),
                value: format!("{bytes:.0} B"),
                reference: format!("uAgents 0.78 MiB, {:.0}x more", UAGENTS_IDLE_AGENT_BYTES / bytes),
                ratio: None,
                target: "<= 2048 B".into(),
                met: Some(bytes <= 2048.0),
            });
        }
        out += &text;
    }
    let uagents = peer_figure(
        "uAgents 0.26.1 Bureau",
        args.uagents.as_ref().map(measure_uagents),
        UAGENTS_BUREAU_RT_PER_S,
        "shared/peers/uagents/README.md",
    );
    out += &format!(
        "\nIn-process request/reply, two agents in one bureau, the requester inside the runtime;\n\
         kameo 0.22 measured beside each row on the same runtime (an `ask` per round trip from a spawned task)\n\
         {}\n\n{:<15} {:<16} {:>12} {:>9} {:>9} {:>12} {:>11} {:>9}\n",
        uagents.line, "runtime", "mode", "rt/s", "p50 us", "p99 us", "kameo rt/s", "x uAgents", "/ kameo"
    );
    for runtime in ["current_thread", "multi_thread"] {
        if args.runtime.as_deref().is_some_and(|only| only != runtime) {
            continue;
        }
        for (mode, in_flight) in [("one at a time", 1), ("pipelined", args.in_flight)] {
            let (figures, kameo) = run(runtime, args.round_trips, in_flight)?;
            let mode = if in_flight > 1 { format!("{mode} ({in_flight})") } else { mode.to_owned() };
            out += &row(runtime, &mode, &figures, uagents.value, &kameo);
            if in_flight == 1 {
                let least = if runtime == "multi_thread" { 1.0 } else { 0.9 };
                let ratio = figures.per_second() / kameo.per_second();
                summary::record(Row {
                    figure: format!("in-process request/reply, {runtime}"),
                    value: format!("{:.0} rt/s", figures.per_second()),
                    reference: format!("kameo {:.0} rt/s", kameo.per_second()),
                    ratio: Some(ratio),
                    target: format!(">= {least:.1} of kameo"),
                    met: Some(ratio >= least),
                });
            }
        }
    }
    if let Some(path) = &args.plot {
        out += &sweep(path, args.round_trips)?;
    }
    if !args.no_ledger {
        out += &ledger()?;
    }
    if !args.no_almanac {
        out += &almanac_section()?;
    }
    if !args.no_simulation {
        out += &simulation_section()?;
    }
    if !args.no_protocols {
        out += &protocols_section()?;
    }
    if !args.no_subnet {
        out += &subnet_section()?;
    }
    if !args.no_durable {
        out += &durable_section(args.durable_secs)?;
    }
    if !args.no_network {
        out += &network(args.uagents_http.as_ref(), args.runtime.as_deref(), args.auth.as_deref())?;
    }
    out += &summary::render();
    write(&out);
    Ok(())
}

/// The figure in the memory section's line "... N bytes per agent ...".
fn bytes_per_agent_in(text: &str) -> Option<f64> {
    let before = &text[..text.find(" bytes per agent")?];
    before.rsplit([' ', ',']).next()?.parse().ok()
}

fn simulation_section() -> Result<String, Box<dyn std::error::Error>> {
    // Each agent starts a chain of 20 hops: 200,000 deliveries across hosts.
    let run = agora_benches::sim_deliveries(100, 100, 20)?;
    let per_second = run.deliveries as f64 / run.wall.as_secs_f64();
    let child = Command::new(std::env::current_exe()?).arg("--simulation-memory-only").output()?;
    let memory = match bytes_per_agent_in(&String::from_utf8_lossy(&child.stdout)) {
        Some(bytes) => format!("{:.1} KiB (hosts and agents set up in a fresh process)", bytes / 1024.0),
        None => format!("not measured: {}", String::from_utf8_lossy(&child.stderr).trim()),
    };
    // The whole simulation runs on one thread: its CPU time is what the run would take on
    // an otherwise idle core, whatever else the machine is doing.
    let cpu = run.cpu.map_or("CPU time not measured (no /proc)".to_owned(), |cpu| {
        let per_cpu_second = run.deliveries as f64 / cpu.as_secs_f64();
        format!(
            "{:.2} s of CPU time on the simulation's thread: {per_cpu_second:.0} deliveries per CPU second ({:.2}x)",
            cpu.as_secs_f64(),
            per_cpu_second / 500_000.0
        )
    });
    summary::record(Row {
        figure: "simulated deliveries, 10,000 agents on 100 hosts".into(),
        value: format!("{per_second:.0}/s"),
        reference: run
            .cpu
            .map_or("-".to_owned(), |cpu| format!("{:.0} per CPU second", run.deliveries as f64 / cpu.as_secs_f64())),
        ratio: Some(per_second / 500_000.0),
        target: ">= 500,000/s".into(),
        met: Some(per_second >= 500_000.0),
    });
    Ok(format!(
        "\nSimulated network: 10,000 agents on 100 hosts, links of 5-15 ms with 1% loss, paused clock\n\
         {} deliveries ({} copies lost and resent) in {:.2} s of wall time for {:.1} s simulated: {:.0} deliveries/s \
         (target >= 500,000/s = {:.2}x); {cpu}; memory per simulated agent: {memory}\n",
        run.deliveries,
        run.lost,
        run.wall.as_secs_f64(),
        run.simulated.as_secs_f64(),
        per_second,
        per_second / 500_000.0
    ))
}

fn protocols_section() -> Result<String, Box<dyn std::error::Error>> {
    let rt = runtime("multi_thread")?;
    // Each round in a fresh market: the figure is one round, not one on a store that
    // earlier rounds have filled.
    let rounds = rt.block_on(async {
        let mut rounds = Vec::new();
        for i in 0..10 {
            let market = agora_benches::ContractNetMarket::new(1_000).await?;
            let (call, award) = market.round().await?;
            if i > 0 {
                rounds.push((call + award, call, award)); // The first is a warm-up.
            }
            market.shutdown().await?;
        }
        Ok::<_, Box<dyn std::error::Error>>(rounds)
    })?;
    let mut rounds = rounds;
    rounds.sort_by_key(|(total, _, _)| *total);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (median, call, award) = rounds[4];
    summary::record(Row {
        figure: "contract-net round, 1,000 participants".into(),
        value: format!("{:.1} ms", ms(median)),
        reference: "-".into(),
        ratio: None,
        target: "< 20 ms".into(),
        met: Some(ms(median) < 20.0),
    });
    Ok(format!(
        "\nContract-net, one round with 1,000 participants in one bureau, call to the winner's report, called from a task of the runtime as an agent calls\n\
         median of 9 rounds, each in a fresh market: {:.1} ms (call {:.1} + award {:.1}; min {:.1}, max {:.1}; target < 20 ms)\n",
        ms(median),
        ms(call),
        ms(award),
        ms(rounds[0].0),
        ms(rounds[8].0)
    ))
}

fn subnet_section() -> Result<String, Box<dyn std::error::Error>> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut out = String::from(
        "\nSubnet: one Yuma Consensus epoch, 256 validators and 4,096 miners, bonds from the epoch before\n",
    );
    for (dense, label) in
        [(false, "each validator weighting 10-20% of the miners"), (true, "every validator weighting every miner")]
    {
        let run = agora_benches::yuma_epoch(256, 4_096, dense, 21, 15)?;
        let median = ms(run.median());
        out += &format!(
            "{label} ({} uids, {} weights, bonds of {} validators; {} miners paid)\n\
             median of {} epochs, one workspace reused: {median:.2} ms (min {:.2}, max {:.2}; target < 50 ms: {:.2} of it); \
             processor time per epoch, all threads: {}\n",
            run.uids,
            run.weights_set,
            run.bond_holders,
            run.paid_miners,
            run.times.len(),
            ms(run.times.first().copied().unwrap_or_default()),
            ms(run.times.last().copied().unwrap_or_default()),
            median / 50.0,
            run.cpu_per_epoch.map_or("not measured".to_string(), |cpu| format!("{:.1} ms", ms(cpu)))
        );
        summary::record(Row {
            figure: format!("subnet epoch, 256 x 4,096, {}", if dense { "dense" } else { "sparse" }),
            value: format!("{median:.1} ms"),
            reference: run.cpu_per_epoch.map_or("-".to_string(), |cpu| format!("processor {:.1} ms", ms(cpu))),
            ratio: Some(median / 50.0),
            target: "< 50 ms".into(),
            met: Some(median < 50.0),
        });
    }
    Ok(out)
}

fn ledger() -> Result<String, Box<dyn std::error::Error>> {
    let rt = runtime("multi_thread")?;
    let verify = agora_benches::verify_rate(20_000);
    let flushed = agora_benches::durable::storage_flushes(1, 3)?.mean();
    let mut out = format!(
        "\nLocal ledger: pre-signed transfers applied (signature verified, one log write per group)\n\
         ed25519 strict verification on one core, measured in this run: {verify:.0}/s\n\
         store's flushed writes, 1 writer (agent storage set + flush), measured in this run: {flushed:.0}/s\n\n\
         {:<34} {:>12} {:>14} {:>15} {:>9} {:>9} {:>12}\n",
        "mode", "transfers/s", "/ verify rate", "/ flushed write", "p50 ms", "p99 ms", "replay tx/s"
    );
    for (label, count, senders, durable) in [
        ("durable, 1 sender (fsync per ack)", 3_000, 1, true),
        ("durable, 64 senders (group fsync)", 64_000, 64, true),
        ("not durable, 1 sender", 20_000, 1, false),
        ("not durable, 64 senders", 64_000, 64, false),
    ] {
        let mut run = rt.block_on(agora_benches::ledger_transfers(count, senders, durable))?;
        run.latencies.sort_unstable();
        let at = |q: f64| {
            run.latencies.get((run.latencies.len() as f64 * q) as usize).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let replay = run.height as f64 / run.reopen.as_secs_f64();
        if durable {
            let (reference, limit) =
                if senders == 1 { ("store's flushed writes", flushed) } else { ("ed25519 verify rate", verify) };
            summary::record(Row {
                figure: format!("ledger, durable, {senders} sender(s)"),
                value: format!("{:.0} tx/s", run.rate),
                reference: format!("{reference} {limit:.0}/s"),
                ratio: Some(run.rate / limit),
                target: ">= 1.0".into(),
                met: Some(run.rate >= limit),
            });
        }
        out += &format!(
            "{label:<34} {:>12.0} {:>14.2} {:>15.2} {:>9.2} {:>9.2} {replay:>12.0}\n",
            run.rate,
            run.rate / verify,
            run.rate / flushed,
            at(0.5),
            at(0.99)
        );
    }
    Ok(out)
}

fn durable_section(seconds: u64) -> Result<String, Box<dyn std::error::Error>> {
    use agora_benches::durable::{almanac_registrations, storage_flushes, Series};
    let mut out = format!(
        "\nDurable stores on disk, {seconds} s each: every write below is on disk when it is counted\n\n\
         {:<44} {:>10} {:>12} {:>9}\n",
        "what", "mean /s", "last second", "RSS MiB"
    );
    let line = |label: &str, series: &Series| {
        let hung = if series.shut_down { "" } else { "  (hung: did not shut down)" };
        format!(
            "{label:<44} {:>10.0} {:>12} {:>9.1}{hung}\n",
            series.mean(),
            series.last(),
            series.resident_bytes.last().copied().unwrap_or(0) as f64 / (1024.0 * 1024.0)
        )
    };
    for agents in [1, 64] {
        out += &line(&format!("agent storage, {agents} agents set + flush"), &storage_flushes(agents, seconds)?);
    }
    for registrants in [1, 64] {
        out += &line(
            &format!("almanac on disk, {registrants} registrants"),
            &almanac_registrations(registrants, seconds)?,
        );
    }
    Ok(out)
}

/// The storage soak: 64 agents writing and flushing for `seconds`.
fn soak(seconds: u64) -> Result<String, Box<dyn std::error::Error>> {
    let series = agora_benches::durable::storage_flushes(64, seconds)?;
    let mut out = format!(
        "Storage soak: 64 agents set + flush for {seconds} s\n{:>8} {:>12} {:>9}\n",
        "second", "flushes/s", "RSS MiB"
    );
    for (i, chunk) in series.per_second.chunks(10).enumerate() {
        let at = (i * 10 + chunk.len()).min(series.resident_bytes.len()) - 1;
        out += &format!(
            "{:>8} {:>12.0} {:>9.1}\n",
            at + 1,
            chunk.iter().sum::<u64>() as f64 / chunk.len() as f64,
            series.resident_bytes[at] as f64 / (1024.0 * 1024.0)
        );
    }
    let min = series.per_second.iter().min().copied().unwrap_or(0);
    out += &format!(
        "mean {:.0} flushes/s, slowest second {min}, database file {:.1} MiB, shut down cleanly: {}\n",
        series.mean(),
        series.disk_bytes as f64 / (1024.0 * 1024.0),
        series.shut_down
    );
    Ok(out)
}

fn runtime(kind: &str) -> std::io::Result<tokio::runtime::Runtime> {
    match kind {
        "current_thread" => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
    }
}

/// Agora's ping-pong and kameo's on one runtime of `kind`, each warmed up, measured in
/// alternation (Agora, kameo, Agora, kameo) so a burst of load on a shared machine falls
/// on both; the better of each pair is kept.
fn run(kind: &str, round_trips: u64, in_flight: u64) -> Result<(Figures, Figures), Box<dyn std::error::Error>> {
    let rt = runtime(kind)?;
    rt.block_on(ping_pong(round_trips / 10 + 1, in_flight))?;
    rt.block_on(kameo_peer::ping_pong(round_trips / 10 + 1, in_flight))?;
    let mut agora: Option<Figures> = None;
    let mut kameo: Option<Figures> = None;
    let faster = |best: Option<Figures>, new: Figures| match best {
        Some(best) if best.per_second() >= new.per_second() => best,
        _ => new,
    };
    for _ in 0..2 {
        agora = Some(faster(agora, rt.block_on(ping_pong(round_trips / 2, in_flight))?));
        kameo = Some(faster(kameo, rt.block_on(kameo_peer::ping_pong(round_trips / 2, in_flight))?));
    }
    Ok((agora.ok_or("no Agora run")?, kameo.ok_or("no kameo run")?))
}

fn row(runtime: &str, mode: &str, f: &Figures, uagents: f64, kameo: &Figures) -> String {
    let rate = f.per_second();
    format!(
        "{:<15} {:<16} {:>12.0} {:>9.2} {:>9.2} {:>12.0} {:>10.0}x {:>9.2}\n",
        runtime,
        mode,
        rate,
        f.p50_ns as f64 / 1e3,
        f.p99_ns as f64 / 1e3,
        kameo.per_second(),
        rate / uagents,
        rate / kameo.per_second()
    )
}

/// The in-flight sweep behind `--plot`: one row per load, and the SVG.
fn sweep(path: &std::path::Path, round_trips: u64) -> Result<String, Box<dyn std::error::Error>> {
    let mut points = Vec::new();
    let mut out = format!(
        "\nIn-process request/reply against requests in flight, multi_thread runtime (plotted to {})\n\
         {:>9} {:>12} {:>9} {:>9} {:>12} {:>9}\n",
        path.display(),
        "in flight",
        "rt/s",
        "p50 us",
        "p99 us",
        "kameo rt/s",
        "/ kameo"
    );
    for in_flight in [1, 2, 4, 8, 16, 32, 64, 128, 256] {
        let (agora, kameo) = run("multi_thread", round_trips / 2, in_flight)?;
        out += &format!(
            "{in_flight:>9} {:>12.0} {:>9.2} {:>9.2} {:>12.0} {:>9.2}\n",
            agora.per_second(),
            agora.p50_ns as f64 / 1e3,
            agora.p99_ns as f64 / 1e3,
            kameo.per_second(),
            agora.per_second() / kameo.per_second()
        );
        points.push(agora_benches::plot::SweepPoint { in_flight, agora, kameo });
    }
    agora_benches::plot::sweep_svg(
        path,
        "In-process request/reply, Agora and kameo 0.22, multi-thread runtime, same run",
        &points,
    )?;
    Ok(out)
}

/// A peer's figure for a ratio: measured in this run when it could be, otherwise the
/// reference figure, with a line saying which and why.
struct PeerFigure {
    value: f64,
    line: String,
}

fn peer_figure(peer: &str, measured: Option<Result<f64, String>>, reference: f64, source: &str) -> PeerFigure {
    match measured {
        Some(Ok(value)) => PeerFigure { value, line: format!("{peer}: {value:.0} rt/s, measured in this run") },
        Some(Err(why)) => PeerFigure {
            value: reference,
            line: format!("{peer}: not measured ({why}); reference figure {reference:.0} rt/s from {source}"),
        },
        None => PeerFigure {
            value: reference,
            line: format!(
                "{peer}: not measured (no Python with uagents given: --uagents PYTHON); \
                 reference figure {reference:.0} rt/s from {source}"
            ),
        },
    }
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
         (target <= 2048; uAgents about 0.78 MiB per agent: {:.0}x less here)\n",
        after.saturating_sub(before) as f64 / (1024.0 * 1024.0),
        per_agent,
        UAGENTS_IDLE_AGENT_BYTES / per_agent
    ))
}

fn measure_uagents(python: &PathBuf) -> Result<f64, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/uagents/bureau_pingpong.py");
    let output = Command::new(python)
        .arg(&script)
        .arg("2000")
        .output()
        .map_err(|e| format!("cannot run {} {}: {e}", python.display(), script.display()))?;
    rate_in(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        format!(
            "{} printed no \"rt/s\" line (exit {}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
        )
    })
}

/// The figure in a uAgents script's result line: "... = 2426.1 rt/s; ...".
fn rate_in(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.contains(" rt/s"))?;
    line.rsplit(" = ").next()?.split(" rt/s").next()?.trim().parse().ok()
}

fn write(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// The far end of the cross-process benchmark, in its own process.
fn serve(auth: &str) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write;
    let rt = runtime(&std::env::var("AGORA_BENCH_RUNTIME").unwrap_or_else(|_| "current_thread".into()))?;
    let busy_poll = Duration::from_micros(
        std::env::var("AGORA_BENCH_BUSY_POLL_US").ok().and_then(|us| us.parse().ok()).unwrap_or(100),
    );
    rt.block_on(async {
        let auth =
            if auth == "signed" { agent_core::transport::Auth::Signed } else { agent_core::transport::Auth::Bound };
        let config = agent_core::transport::NetworkConfig::new(
            vec![std::env::var("AGORA_BENCH_LISTEN").unwrap_or_else(|_| "/ip4/127.0.0.1/tcp/0".into()).parse()?],
            std::sync::Arc::new(agent_core::transport::StaticResolver::new()),
        )
        .with_auth(auth)
        .with_busy_poll(busy_poll);
        let (bureau, info, agent) = agora_benches::serve_echo(config).await?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let tcp_addr = tcp.local_addr()?;
        tokio::spawn(agora_benches::tcp_limit::serve_echo(tcp, busy_poll));
        let mut out = std::io::stdout().lock();
        writeln!(out, "{} {} {} {tcp_addr}", info.peer_id, info.listen_addrs[0], agent)?;
        out.flush()?;
        drop(out);
        // Serve until the parent closes our stdin; answer each line with our CPU time.
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
                let cpu = agora_benches::cpu_time().map_or(0, |cpu| cpu.as_nanos());
                let mut out = std::io::stdout().lock();
                if writeln!(out, "{cpu}").and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        })
        .await;
        bureau.shutdown().await?;
        Ok(())
    })
}

fn network(
    uagents_python: Option<&PathBuf>,
    only_runtime: Option<&str>,
    only_auth: Option<&str>,
) -> Result<String, Box<dyn std::error::Error>> {
    use agent_core::transport::Auth;
    let uagents = peer_figure(
        "uAgents 0.26.1 over HTTP",
        uagents_python.map(measure_uagents_http),
        UAGENTS_HTTP_RT_PER_S,
        "shared/peers/uagents/README.md",
    );
    let verify = agora_benches::verify_rate(20_000);
    let over = if std::env::var("AGORA_BENCH_LISTEN").is_ok_and(|addr| addr.contains("quic")) { "QUIC" } else { "TCP" };
    let mut out = format!(
        "\nCross-process over {over} on 127.0.0.1 (two OS processes)\n\
         {}; ed25519 verification here: {verify:.0}/s on one core\n\
         busy poll: how long a stream polls for an answer before its thread sleeps (NetworkConfig::with_busy_poll)\n\
         cpu us: CPU time of both processes per round trip or message\n\n\
         {:<20} {:<5} {:<31} {:>9} {:>8} {:>8} {:>7} {:>11}\n",
        uagents.line, "authentication", "poll", "mode", "per s", "p50 us", "p99 us", "cpu us", "ratio"
    );
    let default_poll = agent_core::transport::NetworkConfig::DEFAULT_BUSY_POLL;
    let modes = [
        ("session binding (b)", "bound", Auth::Bound, default_poll),
        ("session binding (b)", "bound", Auth::Bound, Duration::ZERO),
        ("signature (a)", "signed", Auth::Signed, default_poll),
    ];
    for runtime_kind in ["current_thread", "multi_thread"] {
        if only_runtime.is_some_and(|only| only != runtime_kind) {
            continue;
        }
        out += &format!("-- both processes on a {runtime_kind} runtime\n");
        for (label, auth, mode, busy_poll) in modes {
            if only_auth.is_some_and(|only| only != auth) {
                continue;
            }
            let poll = if busy_poll.is_zero() { "off".to_string() } else { format!("{}us", busy_poll.as_micros()) };
            let (one, pipelined, bare_tcp) = remote_run(runtime_kind, auth, mode, busy_poll)?;
            let limit = bare_tcp.iter().map(Figures::per_second).fold(0.0, f64::max);
            if auth == "bound" && busy_poll == default_poll {
                for (what, measured, least) in [("one at a time", &one, 100.0), ("pipelined", &pipelined, 600.0)] {
                    let ratio = measured.figures.per_second() / uagents.value;
                    summary::record(Row {
                        figure: format!("cross-process {what}, {runtime_kind}"),
                        value: format!("{:.0}/s", measured.figures.per_second()),
                        reference: format!("uAgents HTTP {:.0}/s", uagents.value),
                        ratio: Some(ratio),
                        target: format!(">= {least:.0}x uAgents"),
                        met: Some(ratio >= least),
                    });
                }
                summary::record(Row {
                    figure: format!("cross-process one at a time, {runtime_kind}"),
                    value: format!("{:.0}/s", one.figures.per_second()),
                    reference: format!("bare tokio TCP {limit:.0}/s"),
                    ratio: Some(one.figures.per_second() / limit),
                    target: "(physical limit)".into(),
                    met: None,
                });
            }
            let row = |mode: &str, m: &Measured, ratio: String| {
                format!(
                    "{label:<20} {poll:<5} {mode:<31} {:>9.0} {:>8.1} {:>8.1} {:>7.1} {ratio}\n",
                    m.figures.per_second(),
                    m.figures.p50_ns as f64 / 1e3,
                    m.figures.p99_ns as f64 / 1e3,
                    m.cpu_us,
                )
            };
            let x_uagents = |m: &Measured| format!("{:>10.0}x uAgents", m.figures.per_second() / uagents.value);
            out += &row(
                "request/reply, one at a time",
                &one,
                format!("{}; {:.2} of bare TCP", x_uagents(&one), one.figures.per_second() / limit),
            );
            let ratio = if auth == "signed" {
                format!("{:>10.2} of verify", pipelined.figures.per_second() / verify)
            } else {
                x_uagents(&pipelined)
            };
            out += &row("messages, 256 in flight, acked", &pipelined, ratio);
            for (bare, poll) in bare_tcp.iter().zip([poll.as_str(), "off"]) {
                out += &format!(
                    "{:<20} {poll:<5} {:<31} {:>9.0} {:>8.1} {:>8.1} {:>7} physical limit, same processes\n",
                    "bare tokio TCP",
                    "8-byte ping-pong, one at a time",
                    bare.per_second(),
                    bare.p50_ns as f64 / 1e3,
                    bare.p99_ns as f64 / 1e3,
                    "-"
                );
            }
        }
    }
    Ok(out)
}

/// Figures of one cross-process measurement and the CPU time both processes spent per
/// operation in it.
struct Measured {
    figures: Figures,
    cpu_us: f64,
}

/// Starts the echo end in a child process and measures against it from this one.
fn remote_run(
    runtime_kind: &str,
    auth: &str,
    mode: agent_core::transport::Auth,
    busy_poll: Duration,
) -> Result<(Measured, Measured, Vec<Figures>), Box<dyn std::error::Error>> {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", auth])
        .env("AGORA_BENCH_RUNTIME", runtime_kind)
        .env("AGORA_BENCH_BUSY_POLL_US", busy_poll.as_micros().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut child_out = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    child_out.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let peer_id: libp2p::PeerId = parts.next().ok_or("no peer id")?.parse()?;
    let addr = parts.next().ok_or("no address")?.parse()?;
    let echo: agent_core::Address = parts.next().ok_or("no agent")?.parse()?;
    let tcp_echo: std::net::SocketAddr = parts.next().ok_or("no TCP echo address")?.parse()?;
    let endpoint = agent_core::transport::Endpoint { peer_id, addrs: vec![addr] };
    let rt = runtime(runtime_kind)?;
    let (one, pipelined) = rt.block_on(agora_benches::remote_figures(
        endpoint,
        echo,
        mode,
        busy_poll,
        remote_round_trips(),
        remote_messages(),
        256,
        &mut || -> Option<Duration> {
            // Both processes' CPU time so far: ours, and the child's as it reports it.
            let ours = agora_benches::cpu_time()?;
            let mut theirs = String::new();
            writeln!(child.stdin.as_ref()?, "cpu").ok()?;
            child_out.read_line(&mut theirs).ok()?;
            Some(ours + Duration::from_nanos(theirs.trim().parse().ok()?))
        },
    ))?;
    // The limit with this mode's busy poll and without it; the faster is the limit.
    let bare_tcp = rt.block_on(async {
        let mut limit = Vec::new();
        for poll in [busy_poll, Duration::ZERO] {
            agora_benches::tcp_limit::ping_pong(tcp_echo, remote_round_trips() / 10 + 1, poll).await?;
            limit.push(agora_benches::tcp_limit::ping_pong(tcp_echo, remote_round_trips(), poll).await?);
        }
        Ok::<_, std::io::Error>(limit)
    })?;
    drop(child.stdin.take());
    let _ = child.wait();
    let per_op = |(figures, cpu): (Figures, Option<Duration>)| Measured {
        cpu_us: cpu.map_or(f64::NAN, |cpu| cpu.as_secs_f64() * 1e6 / figures.round_trips as f64),
        figures,
    };
    Ok((per_op(one), per_op(pipelined), bare_tcp))
}

fn measure_uagents_http(python: &PathBuf) -> Result<f64, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/uagents");
    let script = dir.join("http_pingpong.py");
    let mut bob = Command::new(python)
        .arg(&script)
        .arg("bob")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {} {}: {e}", python.display(), script.display()))?;
    std::thread::sleep(Duration::from_secs(5));
    let output = Command::new(python).arg(&script).args(["alice", "500"]).output();
    // Bob may already have exited; either way it is gone after this.
    let _ = bob.kill();
    let _ = bob.wait();
    let output = output.map_err(|e| format!("cannot run {} alice: {e}", script.display()))?;
    rate_in(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
        format!(
            "{} alice printed no \"rt/s\" line (exit {}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or("")
        )
    })
}

fn almanac_section() -> Result<String, Box<dyn std::error::Error>> {
    let rt = runtime("multi_thread")?;
    let verify = agora_benches::verify_rate(20_000);
    let figures = rt.block_on(agora_benches::almanac_figures(20_000, 1_000_000))?;
    let p99_us = figures.protocol_query_ns.1 as f64 / 1e3;
    summary::record(Row {
        figure: "almanac query by protocol p99, 1M records".into(),
        value: format!("{p99_us:.1} us"),
        reference: "-".into(),
        ratio: None,
        target: "< 50 us".into(),
        met: Some(p99_us < 50.0),
    });
    Ok(format!(
        "\nAlmanac, embedded, 1,000,000 stored records over 1,000 protocols\n\
         registrations (signature verified): {:.0}/s = {:.2} of the ed25519 verify rate measured here ({verify:.0}/s)\n\
         query by protocol (first 10): p50 {:.1} us, p99 {:.1} us (target p99 < 50 us)\n\
         lookup by address: p50 {:.2} us, p99 {:.2} us\n\
         unfiltered query (10 from a random point): p50 {:.1} us, p99 {:.1} us\n",
        figures.registrations_per_s,
        figures.registrations_per_s / verify,
        figures.protocol_query_ns.0 as f64 / 1e3,
        figures.protocol_query_ns.1 as f64 / 1e3,
        figures.lookup_ns.0 as f64 / 1e3,
        figures.lookup_ns.1 as f64 / 1e3,
        figures.unfiltered_query_ns.0 as f64 / 1e3,
        figures.unfiltered_query_ns.1 as f64 / 1e3,
    ))
}

/// Round trips in the cross-process one-at-a-time measurement (`AGORA_BENCH_REMOTE_RT`).
fn remote_round_trips() -> u64 {
    std::env::var("AGORA_BENCH_REMOTE_RT").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// Messages in the cross-process pipelined measurement (`AGORA_BENCH_REMOTE_MSGS`).
fn remote_messages() -> u64 {
    std::env::var("AGORA_BENCH_REMOTE_MSGS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000)
}
