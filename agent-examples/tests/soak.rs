//! The soak: many agents in several processes exchanging requests over loopback while
//! receivers, the almanac and the ledger node are killed with SIGKILL and restarted on a
//! seeded schedule (same data directories, addresses and keys). At the end every
//! acknowledged request was handled exactly once (read from the receivers' storage on
//! disk), every acknowledged ledger transfer is in the restarted ledger, and the senders'
//! tasks and connections are back at their idle level; the senders' resident memory and
//! open descriptors are sampled from /proc and printed at each quarter of the churn, with
//! their growth per hour over its first half (warm-up: the replay guard fills for one
//! envelope lifetime, about a minute) and over its second (steady state, where a leak
//! shows and a filled cache does not).
//!
//! `soak_in_ci` churns for 20 s (`AGORA_SOAK_SECS` changes it) and checks correctness
//! only. The long run also bounds growth:
//!
//! ```text
//! cargo build --release -p almanac --bin almanac
//! AGORA_SOAK_SECS=3600 cargo test --release -p agent-examples --test soak -- --ignored --nocapture
//! ```
//!
//! The `almanac` binary is the almanac crate's; it is taken from the same target directory
//! as this crate's binaries (`cargo test --workspace` builds it; so does the command above).

#![allow(clippy::print_stdout)] // The soak prints its figures (docs/reliability.md quotes them).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use agent_core::ledger::{Ledger, LocalLedger, LocalLedgerConfig, RemoteLedger, TxHash};
use agent_core::Wallet;
use agent_examples::soak::{self, Acknowledged, SenderReport};
use common::free_tcp_port;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const SOAK: &str = env!("CARGO_BIN_EXE_soak");
const LEDGER_NODE: &str = env!("CARGO_BIN_EXE_ledger-node");

/// The almanac crate's server, next to this crate's binaries.
fn almanac_binary() -> PathBuf {
    let path = Path::new(LEDGER_NODE).with_file_name(format!("almanac{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it first (cargo build -p almanac --bin almanac, with --release for a release run)",
        path.display()
    );
    path
}

/// The shape of a run.
struct Plan {
    /// How long the churn lasts.
    churn: Duration,
    /// Mean time between two kills.
    kill_every: Duration,
    receivers: usize,
    receiver_agents: usize,
    senders: usize,
    sender_agents: usize,
    pace_ms: u64,
    /// How often the senders' memory and descriptors are sampled.
    sample_every: Duration,
    seed: u64,
}

/// A child process; its stdout lines arrive on `lines`. Killed with SIGKILL when dropped.
struct Process {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Process {
    /// Starts `binary` and waits (at most 60 s) for a line starting with `ready`; returns
    /// the process and the lines before that one.
    fn start(name: &str, binary: &Path, args: &[String], ready: &str, with_stdin: bool) -> (Process, Vec<String>) {
        let mut child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (sink, lines) = mpsc::channel();
        // Drains the pipe for the process's lifetime; ends at its exit.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sink.send(line).is_err() {
                    return;
                }
            }
        });
        let mut process = Process { name: name.to_owned(), child, stdin, lines };
        let before = process.until(ready, Duration::from_secs(60));
        (process, before)
    }

    /// Waits (at most `within`) for a line starting with `prefix`; returns the lines
    /// before it and then that line, last.
    fn until(&mut self, prefix: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with(prefix);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(e) => panic!("{}: no `{prefix}` line within {within:?} ({e}); it said {seen:?}", self.name),
            }
        }
    }

    /// Sends `command` and returns the answer, the first line starting with one of
    /// `answers` (within `within`).
    fn ask(&mut self, command: &str, answers: &[&str], within: Duration) -> String {
        let stdin = self.stdin.as_mut().expect("a process that takes commands");
        writeln!(stdin, "{command}").and_then(|()| stdin.flush()).unwrap();
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("{}: no answer to {command} within {within:?} ({e})", self.name));
            if answers.iter().any(|a| line.starts_with(a)) {
                return line;
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node the driver kills and restarts: how to start it again as the same node.
struct Restartable {
    kind: &'static str,
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    ready: &'static str,
    process: Option<Process>,
}

impl Restartable {
    fn start(&mut self) -> Vec<String> {
        let (process, lines) = Process::start(&self.name, &self.binary, &self.args, self.ready, false);
        self.process = Some(process);
        lines
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

/// `/ip4/127.0.0.1/tcp/PORT/p2p/PEER` of a server that printed `peer_id PEER`.
fn server_address(port: u16, lines: &[String]) -> String {
    let peer = lines.iter().find_map(|l| l.strip_prefix("peer_id ")).expect("the server printed its peer id");
    format!("/ip4/127.0.0.1/tcp/{port}/p2p/{peer}")
}

/// Resident memory in KiB and open descriptors of process `pid`.
fn resources(pid: u32) -> Option<Resources> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// Least-squares slope of `(seconds, value)`, per hour.
fn growth_per_hour(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_v = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let covariance: f64 = samples.iter().map(|(t, v)| (t - mean_t) * (v - mean_v)).sum();
    let variance: f64 = samples.iter().map(|(t, _)| (t - mean_t) * (t - mean_t)).sum();
    if variance == 0.0 {
        return 0.0;
    }
    covariance / variance * 3600.0
}

/// `status tasks=… connections=… …` as numbers by name.
fn parse_status(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Samples of one sender process.
#[derive(Default)]
struct Samples {
    rss_kib: Vec<(f64, f64)>,
    fds: Vec<(f64, f64)>,
}

/// Resident KiB and open descriptors of one process at one moment.
type Resources = (u64, u64);

/// How one sampled figure of a process moved over the churn.
#[derive(Debug, Clone, Copy)]
struct Trend {
    /// Least-squares slope over the first half of the churn, per hour: warm-up (caches,
    /// pools and the replay guard filling up) and any steady growth together.
    first_half_per_hour: f64,
    /// The same over the second half: what is left once it warmed up, the figure a leak
    /// shows in and a filling cache does not.
    second_half_per_hour: f64,
    /// The samples nearest to the start, each quarter and the end of the churn.
    quarters: [f64; 5],
}

impl Trend {
    fn of(series: &[(f64, f64)], churned: Duration) -> Trend {
        let half = churned.as_secs_f64() / 2.0;
        let first: Vec<(f64, f64)> = series.iter().copied().filter(|(t, _)| *t < half).collect();
        let second: Vec<(f64, f64)> = series.iter().copied().filter(|(t, _)| *t >= half).collect();
        let at = |t: f64| series.iter().find(|(s, _)| *s >= t).or(series.last()).map(|(_, v)| *v).unwrap_or(0.0);
        let quarter = churned.as_secs_f64() / 4.0;
        Trend {
            first_half_per_hour: growth_per_hour(&first),
            second_half_per_hour: growth_per_hour(&second),
            quarters: [at(0.0), at(quarter), at(2.0 * quarter), at(3.0 * quarter), at(4.0 * quarter)],
        }
    }
}

/// How one sender process grew over the churn.
struct Growth {
    /// Resident memory, KiB.
    rss_kib: Trend,
    /// Open descriptors.
    fds: Trend,
}

struct Outcome {
    kills: BTreeMap<&'static str, u32>,
    growth: Vec<Growth>,
}

async fn soak(plan: Plan) -> Outcome {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let mint = soak::mint();

    // The almanac and the ledger node: the real servers, on fixed ports with fixed keys.
    let almanac_port = free_tcp_port();
    let mut almanac = Restartable {
        kind: "almanac",
        name: "almanac".into(),
        binary: almanac_binary(),
        args: common::args(&[
            "--data-dir",
            &path("almanac"),
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{almanac_port}"),
            "--node-seed",
            "soak almanac",
        ]),
        ready: "listening ",
        process: None,
    };
    let almanac_address = server_address(almanac_port, &almanac.start());
    let ledger_port = free_tcp_port();
    let mut ledger_node = Restartable {
        kind: "ledger",
        name: "ledger-node".into(),
        binary: LEDGER_NODE.into(),
        args: common::args(&[
            "--data-dir",
            &path("ledger"),
            "--listen",
            &format!("/ip4/127.0.0.1/tcp/{ledger_port}"),
            "--node-seed",
            "soak ledger",
            "--authority",
            &mint.address().to_string(),
        ]),
        ready: "listening ",
        process: None,
    };
    let ledger_address = server_address(ledger_port, &ledger_node.start());

    let mut receivers: Vec<Restartable> = (0..plan.receivers)
        .map(|node| Restartable {
            kind: "receiver",
            name: format!("receiver {node}"),
            binary: SOAK.into(),
            args: common::args(&[
                "--role",
                "receiver",
                "--node",
                &node.to_string(),
                "--agents",
                &plan.receiver_agents.to_string(),
                "--data-dir",
                &path(&format!("receiver-{node}")),
                "--listen",
                &format!("/ip4/127.0.0.1/tcp/{}", free_tcp_port()),
                "--almanac",
                &almanac_address,
            ]),
            ready: "ready",
            process: None,
        })
        .collect();
    for receiver in &mut receivers {
        receiver.start();
    }

    // Every sender wallet is funded before anyone sends.
    let ledger_node_address = agent_examples::market::distributed::NodeAddress::parse(&ledger_address).unwrap();
    let ledger =
        std::sync::Arc::new(RemoteLedger::new(ledger_node_address.peer_id, ledger_node_address.addrs.clone()).unwrap());
    let faucet = Wallet::new(mint.clone(), ledger.clone());
    for node in 0..plan.senders {
        for agent in 0..plan.sender_agents {
            faucet.mint(soak::sender_wallet(node, agent), 1_000_000_000).await.unwrap();
        }
    }

    let mut senders: Vec<Process> = (0..plan.senders)
        .map(|node| {
            let args = common::args(&[
                "--role",
                "sender",
                "--node",
                &node.to_string(),
                "--agents",
                &plan.sender_agents.to_string(),
                "--receivers",
                &plan.receivers.to_string(),
                "--receiver-agents",
                &plan.receiver_agents.to_string(),
                "--almanac",
                &almanac_address,
                "--ledger",
                &ledger_address,
                "--pace-ms",
                &plan.pace_ms.to_string(),
                "--seed",
                &(plan.seed + node as u64).to_string(),
                "--journal",
                &path(&format!("sender-{node}.journal")),
            ]);
            Process::start(&format!("sender {node}"), Path::new(SOAK), &args, "ready", true).0
        })
        .collect();
    let ask_all = |senders: &mut Vec<Process>, command: &str, answers: &[&str]| -> Vec<String> {
        senders.iter_mut().map(|s| s.ask(command, answers, Duration::from_secs(30))).collect()
    };

    // Warm up: every sender reaches every receiver node, the almanac and the ledger; then
    // the idle level of tasks and connections, with nothing in flight.
    ask_all(&mut senders, "run", &["running"]);
    std::thread::sleep(Duration::from_secs(3));
    for answer in ask_all(&mut senders, "pause", &["paused", "busy"]) {
        assert_eq!(answer, "paused", "the senders went idle after the warm-up");
    }
    std::thread::sleep(Duration::from_secs(1));
    let baseline: Vec<BTreeMap<String, u64>> =
        ask_all(&mut senders, "status", &["status"]).iter().map(|l| parse_status(l)).collect();
    let warmed: u64 = baseline.iter().map(|s| s["acknowledged"]).sum();
    assert!(warmed > 0, "requests were answered in the warm-up: {baseline:?}");

    // The churn: kill and restart on a seeded schedule, one node down at a time, each kind
    // in every round (a round kills each receiver, the almanac and the ledger once, in a
    // seeded order); sample the senders' memory and descriptors meanwhile.
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
    let mut kills: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut samples: Vec<Samples> = (0..plan.senders).map(|_| Samples::default()).collect();
    ask_all(&mut senders, "run", &["running"]);
    let churn_started = Instant::now();
    let mut round: Vec<usize> = Vec::new();
    let mut next_kill = churn_started + plan.kill_every.mul_f64(rng.gen_range(0.5..1.5));
    let mut next_sample = churn_started;
    while churn_started.elapsed() < plan.churn {
        let now = Instant::now();
        if now >= next_sample {
            let t = churn_started.elapsed().as_secs_f64();
            for (i, sender) in senders.iter().enumerate() {
                let (rss, fds) = resources(sender.pid()).expect("a sender is alive");
                samples[i].rss_kib.push((t, rss as f64));
                samples[i].fds.push((t, fds as f64));
            }
            next_sample = now + plan.sample_every;
        }
        if now >= next_kill {
            if round.is_empty() {
                round = (0..plan.receivers + 2).collect();
                round.shuffle(&mut rng);
            }
            let victim = match round.pop() {
                Some(i) if i < plan.receivers => &mut receivers[i],
                Some(i) if i == plan.receivers => &mut almanac,
                _ => &mut ledger_node,
            };
            victim.kill();
            *kills.entry(victim.kind).or_insert(0) += 1;
            std::thread::sleep(Duration::from_millis(rng.gen_range(50..1000)));
            victim.start();
            next_kill = Instant::now() + plan.kill_every.mul_f64(rng.gen_range(0.5..1.5));
        }
        std::thread::sleep(
            Duration::from_millis(50).min(next_sample.min(next_kill).saturating_duration_since(Instant::now())),
        );
    }
    let churned = churn_started.elapsed();

    // Quiet: nothing new is started, every request ends (answered or timed out).
    for answer in ask_all(&mut senders, "pause", &["paused", "busy"]) {
        assert_eq!(answer, "paused", "every request in flight ended within its timeout");
    }
    // Back to the idle level (bounded wait): a leak would keep a task or a connection.
    let mut end = Vec::new();
    for _ in 0..40 {
        end = ask_all(&mut senders, "status", &["status"]).iter().map(|l| parse_status(l)).collect::<Vec<_>>();
        let settled = end
            .iter()
            .zip(&baseline)
            .all(|(e, b)| e["tasks"] <= b["tasks"] && e["connections"] <= b["connections"] && e["pending"] == 0);
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let reports: Vec<SenderReport> = ask_all(&mut senders, "report", &["report "])
        .iter()
        .map(|l| serde_json::from_str(l.strip_prefix("report ").unwrap()).unwrap())
        .collect();
    let sender_pids: Vec<u32> = senders.iter().map(Process::pid).collect();
    let last_resources: Vec<Option<Resources>> = sender_pids.iter().map(|pid| resources(*pid)).collect();
    drop(senders);

    // Exactly once: the receivers' storage, read after they stopped.
    let mut handled: BTreeMap<u64, u32> = BTreeMap::new();
    for (node, receiver) in receivers.iter_mut().enumerate() {
        receiver.kill();
        let data_dir = dir.path().join(format!("receiver-{node}"));
        for (id, times) in soak::read_handled(node, plan.receiver_agents, &data_dir).await.unwrap() {
            *handled.entry(id).or_insert(0) += times;
        }
    }
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut transactions: Vec<(agent_core::Address, TxHash)> = Vec::new();
    for node in 0..plan.senders {
        for entry in soak::read_journal(&dir.path().join(format!("sender-{node}.journal"))).unwrap() {
            match entry {
                Acknowledged::Request(id) => acknowledged.push(id),
                Acknowledged::Transfer(wallet, hash) => transactions.push((wallet, hash)),
            }
        }
    }
    let reported: u64 = reports.iter().map(|r| r.acknowledged).sum();
    assert_eq!(acknowledged.len() as u64, reported, "the journals hold every answered request");
    let reported: u64 = reports.iter().map(|r| r.transactions).sum();
    assert_eq!(transactions.len() as u64, reported, "the journals hold every acknowledged transfer");
    let lost: Vec<u64> = acknowledged.iter().copied().filter(|id| !handled.contains_key(id)).collect();
    let duplicated: Vec<(u64, u32)> = handled.iter().filter(|(_, times)| **times > 1).map(|(i, t)| (*i, *t)).collect();
    let handled_unacknowledged = handled.len() - (acknowledged.len() - lost.len());
    let mismatched: usize = reports.iter().map(|r| r.mismatched.len()).sum();
    let mut failed: BTreeMap<String, u64> = BTreeMap::new();
    for report in &reports {
        for (cause, n) in &report.failed {
            *failed.entry(cause.clone()).or_insert(0) += n;
        }
    }

    // Every acknowledged transfer is in the ledger, which was killed and restarted too. Read
    // from its files once it answered and was stopped: its service answers at most
    // `service::MAX_HISTORY` (1,000) receipts of a history, and a long run makes thousands
    // per wallet.
    common::until_ledger_answers(&ledger).await;
    ledger_node.kill();
    let stored =
        LocalLedger::open(LocalLedgerConfig::default().with_path(path("ledger")).with_authority(mint.address()))
            .unwrap();
    let mut present: HashSet<TxHash> = HashSet::new();
    for node in 0..plan.senders {
        for agent in 0..plan.sender_agents {
            let wallet = soak::sender_wallet(node, agent);
            present.extend(stored.history(wallet, usize::MAX).await.unwrap().iter().map(|r| r.hash));
        }
    }
    let missing: Vec<TxHash> = transactions.iter().map(|(_, h)| *h).filter(|h| !present.contains(h)).collect();
    let transactions_failed: u64 = reports.iter().map(|r| r.transactions_failed).sum();

    // The figures.
    println!("soak: {churned:.0?} of churn, {:.0?} in all, seed {}", started.elapsed(), plan.seed);
    println!(
        "  processes: {} receiver nodes x {} agents, {} sender nodes x {} agents, an almanac, a ledger node",
        plan.receivers, plan.receiver_agents, plan.senders, plan.sender_agents
    );
    println!("  kills (SIGKILL, then restart): {kills:?}");
    println!(
        "  messages: {} acknowledged, {} handled ({} of them unacknowledged), {} lost, {} duplicated, {} mismatched; failed: {failed:?}",
        acknowledged.len(),
        handled.len(),
        handled_unacknowledged,
        lost.len(),
        duplicated.len(),
        mismatched
    );
    println!(
        "  ledger transfers: {} acknowledged, {} of them present, {} failed or unanswered",
        transactions.len(),
        transactions.len() - missing.len(),
        transactions_failed
    );
    let mut growth = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let (rss, fds) = (Trend::of(&s.rss_kib, churned), Trend::of(&s.fds, churned));
        let mib = rss.quarters.map(|kib| format!("{:.1}", kib / 1024.0)).join(", ");
        let open = fds.quarters.map(|n| format!("{n:.0}")).join(", ");
        println!(
            "  sender {i}: resident MiB at the start, each quarter and the end of the churn: {mib}; \
             growth {:+.1} MiB/h over the first half, {:+.1} MiB/h over the second",
            rss.first_half_per_hour / 1024.0,
            rss.second_half_per_hour / 1024.0,
        );
        println!(
            "  sender {i}: descriptors at the same moments: {open}; growth {:+.1}/h over the first half, \
             {:+.1}/h over the second; at the end {:?} (KiB, descriptors)",
            fds.first_half_per_hour, fds.second_half_per_hour, last_resources[i],
        );
        println!(
            "  sender {i}: idle after the warm-up -> after the churn: tasks {} -> {}, connections {} -> {}, \
             links {} -> {}, pending {} -> {}",
            baseline[i]["tasks"],
            end[i]["tasks"],
            baseline[i]["connections"],
            end[i]["connections"],
            baseline[i]["links"],
            end[i]["links"],
            baseline[i]["pending"],
            end[i]["pending"],
        );
        growth.push(Growth { rss_kib: rss, fds });
    }

    assert_eq!(mismatched, 0, "answers matched their requests");
    assert!(
        lost.is_empty(),
        "{} acknowledged requests never handled, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "{} requests handled more than once: {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged transfers missing from the ledger: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let churn_acknowledged = acknowledged.len() as u64 - warmed;
    assert!(churn_acknowledged > 0, "requests were answered during the churn");
    assert!(!transactions.is_empty(), "transfers were acknowledged");
    for kind in ["receiver", "almanac", "ledger"] {
        assert!(kills.get(kind).copied().unwrap_or(0) >= 1, "a {kind} was killed: {kills:?}");
    }
    for (i, (e, b)) in end.iter().zip(&baseline).enumerate() {
        assert!(e["tasks"] <= b["tasks"], "sender {i}: tasks back to their idle level: {b:?} then {e:?}");
        assert!(
            e["connections"] <= b["connections"],
            "sender {i}: connections back to their idle level: {b:?} then {e:?}"
        );
        assert_eq!(e["pending"], 0, "sender {i}: no request left waiting: {e:?}");
    }
    drop((almanac, ledger_node));
    Outcome { kills, growth }
}

fn seconds_from_env(default: u64) -> Duration {
    let secs = std::env::var("AGORA_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    Duration::from_secs(secs)
}

fn seed_from_env() -> u64 {
    std::env::var("AGORA_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// The short run: correctness only (no memory or timing bound on a shared CI machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_in_ci() {
    let plan = Plan {
        churn: seconds_from_env(20),
        kill_every: Duration::from_millis(2500),
        receivers: 3,
        receiver_agents: 4,
        senders: 2,
        sender_agents: 8,
        pace_ms: 50,
        sample_every: Duration::from_secs(1),
        seed: seed_from_env(),
    };
    soak(plan).await;
}

/// The long run (`AGORA_SOAK_SECS`, default an hour): also bounds the senders' growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with AGORA_SOAK_SECS=3600 cargo test --release -p agent-examples --test soak -- --ignored"]
async fn soak_long() {
    let plan = Plan {
        churn: seconds_from_env(3600),
        kill_every: Duration::from_secs(10),
        receivers: 3,
        receiver_agents: 8,
        senders: 2,
        sender_agents: 16,
        pace_ms: 20,
        sample_every: Duration::from_secs(5),
        seed: seed_from_env(),
    };
    let outcome = soak(plan).await;
    assert!(outcome.kills.values().sum::<u32>() >= 5, "{:?}", outcome.kills);
    for (i, growth) in outcome.growth.iter().enumerate() {
        // Judged on the second half, once caches and the replay guard have filled up.
        // Generous: a leak of one buffer per request, or of a descriptor per kill, is far
        // above these.
        let (rss, fds) = (growth.rss_kib.second_half_per_hour, growth.fds.second_half_per_hour);
        assert!(rss < 64.0 * 1024.0, "sender {i}: resident memory grows {rss:.0} KiB/h");
        assert!(fds < 60.0, "sender {i}: descriptors grow {fds:.1}/h");
        let (first, last) = (growth.fds.quarters[0], growth.fds.quarters[4]);
        assert!(last <= first + 16.0, "sender {i}: descriptors {first} then {last}");
    }
}
