//! Bad input over the network: a real `echo-node`, `almanac` server and `ledger-node`,
//! each sent a corpus of malformed traffic at every layer (raw TCP; streams opened after a
//! real noise and yamux handshake; connections by the hundred) while a legitimate client
//! of each keeps making requests through the real client APIs.
//!
//! Checked: every legitimate request succeeds (at most three tries of 10 s each); every
//! bad input ends in a refusal (multistream `na`, a typed rejection or error reply) or a
//! disconnect within a bounded time; afterwards the stored data reads back identically
//! (almanac records, ledger balances, nonces, histories and log file, the echo agent's
//! handled pings) and each node is alive with no panic in its log. The table of inputs
//! and answers goes to stderr; `docs/reliability.md` has the command and one run.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_core::envelope::{unix_now_ms, Header};
use agent_core::ledger::{Ledger, Operation, RemoteLedger, Transaction};
use agent_core::transport::{Endpoint, NetworkConfig, StaticResolver};
use agent_core::{Address, Agent, Bureau, Cause, Envelope, Identity, Message, Wallet};
use agent_examples::{Ping, Pong};
use almanac::{Query, Registration, RemoteAlmanac, WeightedEndpoint};
use common::{args, Node};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use rand::RngCore;

/// Longest a node may take to close a connection or stream that stopped mid-handshake or
/// mid-frame: its own timeouts are 10 s (handshake, request) and 15 s (three heartbeats),
/// plus room for a busy machine.
const SLOW_CLOSE: Duration = Duration::from_secs(25);
/// Longest a node may take to answer or close on a bad input it can judge at once.
const QUICK: Duration = Duration::from_secs(10);
/// The echo node's frame limit (`NetworkConfig` default: 1 MiB + 4 KiB).
const ECHO_MAX_FRAME: usize = (1 << 20) + 4096;
/// The valid ping an attacker sends and then replays: it must be handled exactly once.
const ATTACKER_PING: u64 = 1_000_000_000;
/// Pings of the legitimate newcomers are numbered from here (below [`ATTACKER_PING`]).
const NEWCOMER_PINGS: u64 = 500_000_000;
/// Connections held open without a byte sent, per node.
const IDLE_TCP: usize = 300;
/// Connections that finish the handshake and then open no stream, per node.
const IDLE_HANDSHAKEN: usize = 300;
/// Short connections in the flood, per node.
const FLOOD: usize = 1000;

/// The `almanac` binary of this workspace, in this test's target directory: it belongs to
/// another package, so Cargo does not build it for this test. `cargo test --workspace`
/// (the README's command) builds it, for the almanac's own tests, before any test runs;
/// it is used as found then. Otherwise (this test run alone) it is built here, with the
/// almanac package's own feature set, which costs a rebuild of part of the tree once.
fn almanac_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test runs from <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("a target directory");
    let built = profile_dir.join("almanac");
    if std::env::var_os("AGORA_REBUILD_ALMANAC").is_none() && built.is_file() {
        return built;
    }
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "--quiet", "-p", "almanac", "--bin", "almanac", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    // Cargo set these for this test's run; they are not the environment the workspace was
    // built in. A build script watching one (ring's watches CARGO_MANIFEST_DIR) would
    // otherwise see it change and rebuild most of the tree, twice a run.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_for_the_test = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
            );
        if set_for_the_test {
            build.env_remove(key);
        }
    }
    let output = build.output().expect("cargo runs");
    assert!(output.status.success(), "building the almanac binary failed: {}", String::from_utf8_lossy(&output.stderr));
    profile_dir.join("almanac")
}

/// A node under attack: the process, where it listens, its log.
struct Target {
    name: &'static str,
    node: Node,
    tcp: SocketAddr,
    addr: Multiaddr,
    log: PathBuf,
}

impl Target {
    fn start(name: &'static str, binary: &Path, node_args: &[String], dir: &Path) -> Target {
        let log = dir.join(format!("{name}.stderr"));
        let stderr = std::fs::File::create(&log).unwrap();
        let node = Node::spawn_with_stderr(binary.to_str().unwrap(), node_args, Stdio::from(stderr));
        let addr = node.addrs[0].clone();
        let tcp = socket_of(&addr);
        Target { name, node, tcp, addr, log }
    }

    fn peer(&self) -> PeerId {
        self.node.peer_id
    }
}

fn socket_of(addr: &Multiaddr) -> SocketAddr {
    let mut ip = None;
    let mut port = None;
    for part in addr.iter() {
        match part {
            Protocol::Ip4(v4) => ip = Some(std::net::IpAddr::V4(v4)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    SocketAddr::new(ip.expect("an ip4 address"), port.expect("a tcp port"))
}

/// What an attacker saw after one bad input.
#[derive(Debug, Clone)]
enum Answer {
    /// The node closed the connection or stream, this long after the input was sent.
    Closed(Duration),
    /// The node answered, saying this: a refusal, or for a replay the answer its first
    /// copy got.
    Answered(String),
    /// The node neither refused nor closed within the limit, while the attacker waited
    /// for this.
    Silent(&'static str),
}

/// One line of the table.
struct Row {
    node: &'static str,
    input: String,
    sent: usize,
    answered: String,
    legit: u64,
}

/// What the run found: the table, and every broken promise.
#[derive(Default)]
struct Report {
    rows: Mutex<Vec<Row>>,
    problems: Mutex<Vec<String>>,
}

impl Report {
    fn problem(&self, what: String) {
        self.problems.lock().unwrap().push(what);
    }

    /// Records `answers` to `input`: all must be refusals or disconnects.
    fn record(&self, node: &'static str, input: &str, answers: &[Answer], legit: u64) {
        let mut closed = 0;
        let mut slowest = Duration::ZERO;
        let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
        let mut silent = 0;
        for answer in answers {
            match answer {
                Answer::Closed(after) => {
                    closed += 1;
                    slowest = slowest.max(*after);
                }
                Answer::Answered(why) => *refusals.entry(why.clone()).or_default() += 1,
                Answer::Silent(waiting) => {
                    silent += 1;
                    *refusals.entry(format!("NO ANSWER while waiting for {waiting}")).or_default() += 1;
                }
            }
        }
        let mut parts: Vec<String> = refusals.iter().map(|(why, n)| format!("{why} ({n})")).collect();
        if closed > 0 {
            parts.push(format!("closed {closed} (slowest after {:.1} s)", slowest.as_secs_f64()));
        }
        if silent > 0 {
            self.problem(format!(
                "{node}: {input}: {silent} of {} got neither a refusal nor a disconnect",
                answers.len()
            ));
        }
        self.rows.lock().unwrap().push(Row {
            node,
            input: input.to_owned(),
            sent: answers.len(),
            answered: parts.join("; "),
            legit,
        });
    }

    fn note(&self, node: &'static str, input: &str, sent: usize, answered: String, legit: u64) {
        self.rows.lock().unwrap().push(Row { node, input: input.to_owned(), sent, answered, legit });
    }

    fn print(&self, unchanged: &BTreeMap<&'static str, String>) {
        let rows = self.rows.lock().unwrap();
        let mut table = String::from(
            "\n| node | input | sent | what the node answered | legit requests served meanwhile | data unchanged |\n|---|---|---|---|---|---|\n",
        );
        for row in rows.iter() {
            let unchanged = unchanged.get(row.node).map(String::as_str).unwrap_or("?");
            table += &format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                row.node, row.input, row.sent, row.answered, row.legit, unchanged
            );
        }
        eprintln!("{table}");
    }
}

/// A legitimate client's running tally.
#[derive(Default)]
struct Legit {
    served: AtomicU64,
    retried: AtomicU64,
    slowest_ms: AtomicU64,
    stop: AtomicBool,
}

impl Legit {
    fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Tries `request` up to three times, 10 s each; the error of the last try if all fail.
async fn with_retries<F, Fut>(mut request: F) -> Result<u32, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for attempt in 0..3u32 {
        match tokio::time::timeout(Duration::from_secs(10), request()).await {
            Ok(Ok(())) => return Ok(attempt),
            Ok(Err(why)) => last = why,
            Err(_) => last = "no answer within 10 s".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// Makes request after request (every 50 ms, at most 10,000) until told to stop; a
/// request that fails three tries is a problem.
async fn keep_requesting<F, Fut>(name: &'static str, legit: Arc<Legit>, report: Arc<Report>, mut request: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for n in 0..10_000u64 {
        if legit.stop.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        match with_retries(|| request(n)).await {
            Ok(retries) => {
                legit.served.fetch_add(1, Ordering::Relaxed);
                legit.retried.fetch_add(u64::from(retries), Ordering::Relaxed);
                legit.slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            Err(why) => report.problem(format!("{name}: legitimate request {n} failed three tries: {why}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Raw TCP

/// multistream-select's header, as its first message (a varint length, then the line).
fn multistream(line: &str) -> Vec<u8> {
    let mut out = vec![line.len() as u8 + 1];
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
    out
}

/// Connects, writes `bytes`, keeps the write side open, and reads until the node closes
/// the connection or `limit` passes. `na` messages read are counted as refusals.
async fn tcp_attack(to: SocketAddr, bytes: Vec<u8>, limit: Duration) -> Vec<Answer> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = match tokio::time::timeout(QUICK, tokio::net::TcpStream::connect(to)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return vec![Answer::Answered(format!("connection refused: {err}"))],
        Err(_) => return vec![Answer::Silent("the TCP connection")],
    };
    let sent = Instant::now();
    if !bytes.is_empty() && stream.write_all(&bytes).await.is_err() {
        return vec![Answer::Closed(sent.elapsed())];
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    // Bounded by the deadline, and by reads: a node never has 1,000 reads' worth to say.
    let mut end = Answer::Silent("the node to stop talking (1,000 reads)");
    for _ in 0..1000 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                end = Answer::Closed(sent.elapsed());
                break;
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {
                end = Answer::Silent("the node to answer or close");
                break;
            }
        }
    }
    let refusals = count(&received, b"\x03na\n");
    let mut answers = vec![Answer::Answered("multistream `na` (protocol not available)".into()); refusals];
    answers.push(end);
    answers
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Runs `attacks` at most `parallel` at a time.
async fn bounded_parallel<Fut>(attacks: Vec<Fut>, parallel: usize) -> Vec<Answer>
where
    Fut: Future<Output = Vec<Answer>>,
{
    futures::stream::iter(attacks).buffer_unordered(parallel).collect::<Vec<_>>().await.into_iter().flatten().collect()
}

async fn raw_tcp_corpus(target: &Target, legit: &Legit, report: &Report) {
    let to = target.tcp;
    let name = target.name;

    let before = legit.served();
    let attacks = (0..20).map(|_| {
        let mut junk = vec![0u8; 4096];
        rand::thread_rng().fill_bytes(&mut junk);
        tcp_attack(to, junk, SLOW_CLOSE)
    });
    let answers = bounded_parallel(attacks.collect(), 20).await;
    report.record(name, "TCP: 4 KiB of random bytes", &answers, legit.served() - before);

    let before = legit.served();
    let attacks = (0..10).map(|i| {
        let mut bytes = multistream("/multistream/1.0.0");
        for n in 0..20 {
            bytes.extend(multistream(&format!("/garbage/{i}/{n}")));
        }
        // Not a protocol name at all: not UTF-8, no leading slash.
        bytes.extend([5, 0xff, 0xfe, 0x00, 0x80, b'\n']);
        tcp_attack(to, bytes, SLOW_CLOSE)
    });
    let answers = bounded_parallel(attacks.collect(), 10).await;
    let sent: usize = 10 * 21;
    let refused = answers.iter().filter(|a| matches!(a, Answer::Answered(_))).count();
    if refused != 10 * 20 {
        report.problem(format!("{name}: {refused} of 200 garbage protocol names refused with `na`"));
    }
    report.record(
        name,
        &format!("TCP: multistream header, then 20 garbage protocol names and one invalid name (x10, {sent} names)"),
        &answers,
        legit.served() - before,
    );
}

/// Connections that go quiet before the handshake ends: a half-sent header, and idle
/// connections by the hundred. A new legitimate client must get in while they are held.
async fn silent_tcp_corpus<F, Fut>(target: &Target, legit: &Legit, report: &Report, fresh_client: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let to = target.tcp;
    let name = target.name;
    let before = legit.served();
    let half_header = (0..10).map(|_| tcp_attack(to, multistream("/multistream/1.0.0")[..8].to_vec(), SLOW_CLOSE));
    let idle = (0..IDLE_TCP).map(|_| tcp_attack(to, Vec::new(), SLOW_CLOSE));
    let half_header = bounded_parallel(half_header.collect(), 10);
    let idle = bounded_parallel(idle.collect(), IDLE_TCP);
    let newcomer = async {
        // Give the idle connections time to be accepted, then come in fresh.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let arrived = Instant::now();
        with_retries(&fresh_client).await.map(|retries| (retries, arrived.elapsed()))
    };
    let (half_header, idle, newcomer) = tokio::join!(half_header, idle, newcomer);
    let legit_during = legit.served() - before;
    report.record(name, "TCP: half a multistream header, then silence", &half_header, legit_during);
    report.record(name, &format!("TCP: {IDLE_TCP} idle connections held open (nothing sent)"), &idle, legit_during);
    match newcomer {
        Ok((retries, after)) => report.note(
            name,
            "a new legitimate client, while those are held",
            1,
            format!("served after {:.1} s ({retries} retries)", after.as_secs_f64()),
            legit_during,
        ),
        Err(why) => report.problem(format!("{name}: a new client was locked out by idle connections: {why}")),
    }
}

/// A flood of short connections: connect, send the header, hang up.
async fn flood_corpus(target: &Target, legit: &Legit, report: &Report) {
    use tokio::io::AsyncWriteExt as _;
    let to = target.tcp;
    let before = legit.served();
    let started = Instant::now();
    let connected = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let attempts = (0..FLOOD).map(|_| async {
        match tokio::time::timeout(QUICK, tokio::net::TcpStream::connect(to)).await {
            Ok(Ok(mut stream)) => {
                connected.fetch_add(1, Ordering::Relaxed);
                let _ = stream.write_all(&multistream("/multistream/1.0.0")).await;
            }
            _ => {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    futures::stream::iter(attempts).buffer_unordered(32).collect::<Vec<()>>().await;
    let answered = format!(
        "{} connected and hung up, {} refused, in {:.1} s",
        connected.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    report.note(
        target.name,
        "TCP: flood of short connections (header, then hang up)",
        FLOOD,
        answered,
        legit.served() - before,
    );
}

// ---------------------------------------------------------------------------------------
// After a real handshake

/// A libp2p peer of its own (fresh key), connected to the target.
struct Attacker {
    control: libp2p_stream::Control,
    state: tokio::sync::watch::Receiver<Link>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Dialing,
    Up,
    Closed,
    Failed,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Attacker {
    fn connect(target: &Target) -> Attacker {
        let behaviour = libp2p_stream::Behaviour::new();
        let control = behaviour.new_control();
        let mut swarm =
            agent_core::net::swarm(libp2p::identity::Keypair::generate_ed25519(), behaviour).expect("a swarm");
        swarm.dial(target.addr.clone().with(Protocol::P2p(target.peer()))).expect("dialing starts");
        let (tell, state) = tokio::sync::watch::channel(Link::Dialing);
        let task = tokio::spawn(async move {
            // Ends when the attacker is dropped (aborted).
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        let _ = tell.send(Link::Up);
                    }
                    SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                        let _ = tell.send(Link::Closed);
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => {
                        let _ = tell.send(Link::Failed);
                    }
                    _ => {}
                }
            }
        });
        Attacker { control, state, task }
    }

    async fn open(&mut self, target: &Target, protocol: &'static str) -> Result<libp2p::Stream, Answer> {
        // Connected first: libp2p-stream asked for a stream in the instant between a
        // connection's handler and its "established" event dials again, and that dial's
        // failure (already connected) leaves the request waiting forever.
        let started = Instant::now();
        match tokio::time::timeout(QUICK, self.state.wait_for(|s| *s != Link::Dialing)).await {
            Ok(Ok(link)) if *link == Link::Up => {}
            Ok(_) => return Err(Answer::Closed(started.elapsed())),
            Err(_) => return Err(Answer::Silent("the handshake")),
        }
        let opened =
            tokio::time::timeout(QUICK, self.control.open_stream(target.peer(), StreamProtocol::new(protocol)));
        match opened.await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(Answer::Answered(format!("stream refused: {err}"))),
            Err(_) => Err(Answer::Silent("the stream to open")),
        }
    }
}

/// Writes `bytes` (closing the write side after them if `close`), then reads until the
/// node closes the stream or `limit` passes: what came back, and how it ended.
async fn stream_attack(stream: &mut libp2p::Stream, bytes: &[u8], close: bool, limit: Duration) -> (Vec<u8>, Answer) {
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    match tokio::time::timeout_at(deadline, async {
        stream.write_all(bytes).await?;
        stream.flush().await?;
        if close {
            stream.close().await?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await
    {
        Ok(Ok(())) => {}
        // The node hung up while the input was still being written.
        Ok(Err(_)) => return (Vec::new(), Answer::Closed(sent.elapsed())),
        Err(_) => return (Vec::new(), Answer::Silent("the input to be written")),
    }
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded by the deadline, and by reads: the answers here are a few hundred bytes.
    for _ in 0..1000 {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Answer::Closed(sent.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (received, Answer::Silent("the node to answer or close the stream")),
        }
    }
    (received, Answer::Silent("the node to stop talking (1,000 reads)"))
}

/// Runs `cases` attacks of `attack` (each with a fresh peer of its own) side by side.
async fn each_fresh<'a, F, Fut>(target: &'a Target, cases: usize, attack: F) -> Vec<Answer>
where
    F: Fn(usize, Attacker) -> Fut,
    Fut: Future<Output = Vec<Answer>> + 'a,
{
    let attacks: Vec<_> = (0..cases).map(|i| attack(i, Attacker::connect(target))).collect();
    bounded_parallel(attacks, 8).await
}

/// Opens `protocol` and sends `bytes` on it; the answer, if the stream opened.
async fn on_stream(
    target: &Target,
    mut attacker: Attacker,
    protocol: &'static str,
    bytes: Vec<u8>,
    close: bool,
    limit: Duration,
) -> (Vec<u8>, Answer) {
    match attacker.open(target, protocol).await {
        Ok(mut stream) => stream_attack(&mut stream, &bytes, close, limit).await,
        Err(answer) => (Vec::new(), answer),
    }
}

/// One frame of the envelope stream: length, tag, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(tag);
    out.extend_from_slice(body);
    out
}

const ENVELOPE: u8 = 2;
const ACK: u8 = 3;

fn envelope_frame(seq: u64, signed: bool, envelope_bytes: &[u8]) -> Vec<u8> {
    let mut body = seq.to_be_bytes().to_vec();
    body.push(if signed { 0 } else { 1 });
    body.extend_from_slice(envelope_bytes);
    frame(ENVELOPE, &body)
}

/// Reads frames off `stream` until the node's verdict on `seq` and, for a delivered
/// request, the reply to it: a refusal names the cause or the failure the reply reports.
async fn verdict_of(stream: &mut libp2p::Stream, seq: u64, expect_reply: bool, limit: Duration) -> Answer {
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut delivered = false;
    for _ in 0..1000 {
        let mut len = [0u8; 4];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut len)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Answer::Closed(sent.elapsed()),
            Err(_) => return Answer::Silent("a frame length"),
        }
        let len = u32::from_be_bytes(len) as usize;
        assert!(len <= ECHO_MAX_FRAME, "the node sent a frame of {len} bytes");
        let mut body = vec![0u8; len];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut body)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Answer::Closed(sent.elapsed()),
            Err(_) => return Answer::Silent("a frame body"),
        }
        match body.first() {
            Some(&ACK) if body.get(1..9) == Some(&seq.to_be_bytes()[..]) => match body.get(9) {
                Some(0) if expect_reply => delivered = true,
                Some(0) => return Answer::Answered("acknowledged as delivered".into()),
                Some(1) => {
                    let cause = Cause::from_code(body.get(10).copied().unwrap_or(0));
                    let detail = String::from_utf8_lossy(body.get(11..).unwrap_or_default());
                    return Answer::Answered(format!("rejected, {cause:?}: {}", shorten(&detail)));
                }
                _ => panic!("an ack with an unknown verdict"),
            },
            Some(&ENVELOPE) if delivered => {
                // The reply to our request: acknowledge it, then read what it says.
                let reply_seq: [u8; 8] = body[1..9].try_into().unwrap();
                let mut ack = reply_seq.to_vec();
                ack.push(0);
                let _ = stream.write_all(&frame(ACK, &ack)).await;
                let reply = Envelope::decode(&body[10..], ECHO_MAX_FRAME).expect("the node's reply decodes");
                if reply.schema == Pong::digest() {
                    let pong: Pong = reply.open().unwrap();
                    return Answer::Answered(format!("delivered and answered ({:?})", pong));
                }
                let failed: agent_core::transport::RequestFailed = reply.open().expect("a failure report");
                return Answer::Answered(format!("delivered, answered with a failure: {}", shorten(&failed.reason)));
            }
            _ => {}
        }
    }
    Answer::Silent("the verdict (1000 other frames came first)")
}

/// The first line of `text`, cut to 90 characters, without table separators.
fn shorten(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().replace('|', "/");
    match line.char_indices().nth(90) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

fn request_header() -> Header {
    Header { expects_reply: true, session: rand::random(), trace_id: rand::random(), ..Header::default() }
}

/// A signed request to `echo` carrying `payload` as if it were a ping.
fn ping_with_payload(from: &Identity, echo: Address, payload: Vec<u8>) -> Envelope {
    Envelope::seal_raw(from, echo, Ping::digest(), payload, request_header(), unix_now_ms(), 60_000)
}

/// JSON nested `depth` deep: `[[[...]]]`.
fn nested(depth: usize) -> Vec<u8> {
    let mut out = vec![b'['; depth];
    out.extend(std::iter::repeat_n(b']', depth));
    out
}

const PAST_U64: &str = "18446744073709551616";
const PAST_U128: &str = "340282366920938463463374607431768211456";

/// Sends one envelope frame on a fresh stream and reads the verdict.
async fn one_envelope(target: &Target, attacker: Attacker, frame: Vec<u8>, expect_reply: bool) -> Vec<Answer> {
    let mut attacker = attacker;
    let mut stream = match attacker.open(target, agent_core::transport::PROTOCOL).await {
        Ok(stream) => stream,
        Err(answer) => return vec![answer],
    };
    if stream.write_all(&frame).await.is_err() || stream.flush().await.is_err() {
        return vec![Answer::Closed(Duration::ZERO)];
    }
    vec![verdict_of(&mut stream, 0, expect_reply, QUICK).await]
}

async fn echo_corpus(target: &Target, echo: Address, stale: Envelope, legit: &Legit, report: &Report) {
    let name = target.name;
    let proto = agent_core::transport::PROTOCOL;
    let before = legit.served();
    let half_frames = async {
        each_fresh(target, 3, |_, attacker| async move {
            // A length prefix and half the frame it announces, then nothing.
            let mut bytes = 1000u32.to_be_bytes().to_vec();
            bytes.extend([ENVELOPE; 500]);
            vec![on_stream(target, attacker, proto, bytes, false, SLOW_CLOSE).await.1]
        })
        .await
    };
    let others = async {
        let mut rows: Vec<(String, Vec<Answer>, u64)> = Vec::new();
        let mut run = |input: &str, answers: Vec<Answer>, since: u64| {
            rows.push((input.to_owned(), answers, legit.served() - since))
        };

        let since = legit.served();
        let answers = each_fresh(target, 5, |_, attacker| async move {
            let mut bytes = u32::MAX.to_be_bytes().to_vec();
            bytes.extend([ENVELOPE; 64]);
            vec![on_stream(target, attacker, proto, bytes, false, QUICK).await.1]
        })
        .await;
        run("frame: length prefix announcing 4 GiB", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 5, |_, attacker| async move {
            let mut bytes = 1000u32.to_be_bytes().to_vec();
            bytes.extend([ENVELOPE; 500]);
            vec![on_stream(target, attacker, proto, bytes, true, QUICK).await.1]
        })
        .await;
        run("frame: truncated (half of it, then end of stream)", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, attacker| async move {
            let oversized = vec![0u8; ECHO_MAX_FRAME + 1];
            vec![on_stream(target, attacker, proto, frame(ENVELOPE, &oversized), false, QUICK).await.1]
        })
        .await;
        run("frame: one byte over the 1 MiB + 4 KiB limit", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 5, |_, attacker| async move {
            vec![on_stream(target, attacker, proto, frame(99, b"what is this"), false, QUICK).await.1]
        })
        .await;
        run("frame: unknown tag", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 5, |_, attacker| async move {
            let mut junk = vec![0u8; 600];
            rand::thread_rng().fill_bytes(&mut junk);
            one_envelope(target, attacker, envelope_frame(0, true, &junk), false).await
        })
        .await;
        run("envelope frame: 600 random bytes as the envelope", answers, since);

        let payloads: [(&str, Vec<u8>); 5] = [
            ("signed request, payload invalid UTF-8", b"\"\xff\xfe\xfd\"".to_vec()),
            ("signed request, payload JSON nested 100,000 deep", nested(100_000)),
            ("signed request, payload a number past u64", PAST_U64.as_bytes().to_vec()),
            ("signed request, payload a number past u128", PAST_U128.as_bytes().to_vec()),
            ("signed request, payload a number of 100,000 digits", vec![b'9'; 100_000]),
        ];
        for (input, payload) in payloads {
            let since = legit.served();
            let answers = each_fresh(target, 3, |_, attacker| {
                let payload = payload.clone();
                async move {
                    let from = Identity::generate();
                    let envelope = ping_with_payload(&from, echo, payload);
                    one_envelope(target, attacker, envelope_frame(0, true, &envelope.encode()), true).await
                }
            })
            .await;
            run(input, answers, since);
        }

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, attacker| async move {
            let from = Identity::generate();
            let mut envelope = Envelope::seal(&from, echo, &Ping(1), request_header(), unix_now_ms(), 60_000).unwrap();
            envelope.signature[0] ^= 1;
            one_envelope(target, attacker, envelope_frame(0, true, &envelope.encode()), false).await
        })
        .await;
        run("envelope: bad signature", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 1, |_, mut attacker| async move {
            // A forger keeps going: refused, then cut off.
            let from = Identity::generate();
            let mut stream = match attacker.open(target, proto).await {
                Ok(stream) => stream,
                Err(answer) => return vec![answer],
            };
            let mut answers = Vec::new();
            for seq in 0..20u64 {
                let mut envelope =
                    Envelope::seal(&from, echo, &Ping(seq), request_header(), unix_now_ms(), 60_000).unwrap();
                envelope.signature[5] ^= 0x40;
                if stream.write_all(&envelope_frame(seq, true, &envelope.encode())).await.is_err() {
                    answers.push(Answer::Closed(Duration::ZERO));
                    break;
                }
                let answer = verdict_of(&mut stream, seq, false, QUICK).await;
                let closed = matches!(answer, Answer::Closed(_));
                answers.push(answer);
                if closed {
                    break;
                }
            }
            answers
        })
        .await;
        run("envelopes with bad signatures, 20 in a row on one stream", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, attacker| async move {
            let from = Identity::generate();
            let envelope =
                Envelope::unsigned(&from, echo, Ping::digest(), b"1".to_vec(), request_header(), unix_now_ms(), 60_000);
            one_envelope(target, attacker, envelope_frame(0, false, &envelope.encode()), false).await
        })
        .await;
        run("envelope: unsigned, without a session binding", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, attacker| async move {
            let from = Identity::generate();
            // Sealed 11 minutes ago for 10: long expired.
            let sealed = unix_now_ms() - 660_000;
            let envelope = Envelope::seal(&from, echo, &Ping(2), request_header(), sealed, 600_000).unwrap();
            one_envelope(target, attacker, envelope_frame(0, true, &envelope.encode()), false).await
        })
        .await;
        run("envelope: replay of an expired one", answers, since);

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, attacker| {
            let stale = stale.clone();
            async move { one_envelope(target, attacker, envelope_frame(0, true, &stale.encode()), false).await }
        })
        .await;
        run("envelope: replay of one sealed before the node started", answers, since);

        // A valid request, then the very same envelope again on new streams from new
        // peers: each copy is answered as the first was, and the ping is handled once.
        let since = legit.served();
        let from = Identity::generate();
        let original =
            Envelope::seal(&from, echo, &Ping(ATTACKER_PING), request_header(), unix_now_ms(), 60_000).unwrap();
        let first =
            one_envelope(target, Attacker::connect(target), envelope_frame(0, true, &original.encode()), true).await;
        let first_ok = matches!(&first[..], [Answer::Answered(text)] if text.starts_with("delivered and answered"));
        if !first_ok {
            report.problem(format!("{name}: the valid request before the replays was not answered: {first:?}"));
        }
        let replays = each_fresh(target, 3, |_, attacker| {
            let original = original.clone();
            async move { one_envelope(target, attacker, envelope_frame(0, true, &original.encode()), false).await }
        })
        .await;
        run("envelope: replay of a delivered request, on new streams from new peers", replays, since);

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, mut attacker| async move {
            match attacker.open(target, "/garbage/1.0.0").await {
                Ok(mut stream) => vec![stream_attack(&mut stream, b"hello", false, QUICK).await.1],
                Err(answer) => vec![answer],
            }
        })
        .await;
        run("stream for an unknown protocol, after the handshake", answers, since);
        rows
    };
    let (half_frames, rows) = tokio::join!(half_frames, others);
    for (input, answers, served) in rows {
        report.record(name, &input, &answers, served);
    }
    report.record(name, "frame: half of one, then silence (stream kept open)", &half_frames, legit.served() - before);
}

/// The almanac and ledger services: one JSON request per stream, read to its end.
/// `numbered` is a valid request with `LIMIT` where a number goes (the huge numbers are put
/// there); `control` is a valid request, which must be answered, and whose first half
/// makes the truncated ones.
async fn rpc_corpus(
    target: &Target,
    protocol: &'static str,
    numbered: String,
    control: String,
    report: &Report,
    legit: &Legit,
) {
    let name = target.name;
    let before = legit.served();
    let silence = async {
        each_fresh(target, 3, |_, attacker| {
            let half = control.as_bytes()[..control.len() / 2].to_vec();
            async move { vec![on_stream(target, attacker, protocol, half, false, SLOW_CLOSE).await.1] }
        })
        .await
    };
    let others = async {
        let mut rows: Vec<(String, Vec<Answer>, u64)> = Vec::new();

        // The hand-made codec first, on a valid request: the node must answer it.
        let (response, answer) =
            on_stream(target, Attacker::connect(target), protocol, control.clone().into_bytes(), true, QUICK).await;
        let answered =
            matches!(answer, Answer::Closed(_)) && serde_json::from_slice::<serde_json::Value>(&response).is_ok();
        if !answered {
            report.problem(format!(
                "{name}: a valid hand-made request was not answered ({answer:?}); the corpus proves nothing"
            ));
        }

        let mut cases: Vec<(String, usize, Vec<u8>)> = Vec::new();
        let mut junk = vec![0u8; 4096];
        rand::thread_rng().fill_bytes(&mut junk);
        cases.push(("request: 4 KiB of random bytes".into(), 5, junk));
        let mut four_gib = u32::MAX.to_be_bytes().to_vec();
        four_gib.extend_from_slice(control.as_bytes());
        cases.push(("request: a length prefix announcing 4 GiB, then a request".into(), 5, four_gib));
        cases.push((
            "request: truncated (half, then end of stream)".into(),
            5,
            control.as_bytes()[..control.len() / 2].to_vec(),
        ));
        let mut oversized = b"{\"PublishManifest\":\"".to_vec();
        oversized.extend(std::iter::repeat_n(b'a', 2 << 20));
        oversized.extend_from_slice(b"\"}");
        cases.push(("request: 2 MiB (the limit is 1 MiB)".into(), 3, oversized));
        cases.push((
            "request: invalid UTF-8 in a string".into(),
            3,
            b"{\"PublishManifest\":\"\xff\xfe\xfd\"}".to_vec(),
        ));
        let mut deep = b"{\"PublishManifest\":".to_vec();
        deep.extend(nested(100_000));
        deep.push(b'}');
        cases.push(("request: JSON nested 100,000 deep".into(), 3, deep));
        cases.push(("request: a number past u64".into(), 3, numbered.replace("LIMIT", PAST_U64).into_bytes()));
        cases.push(("request: a number past u128".into(), 3, numbered.replace("LIMIT", PAST_U128).into_bytes()));
        let huge = "9".repeat(100_000);
        cases.push(("request: a number of 100,000 digits".into(), 3, numbered.replace("LIMIT", &huge).into_bytes()));
        for (input, sent, bytes) in cases {
            let since = legit.served();
            let answers = each_fresh(target, sent, |_, attacker| {
                let bytes = bytes.clone();
                async move {
                    let (response, end) = on_stream(target, attacker, protocol, bytes, true, QUICK).await;
                    if response.is_empty() {
                        vec![end]
                    } else {
                        vec![Answer::Answered(format!("answered: {}", shorten(&String::from_utf8_lossy(&response))))]
                    }
                }
            })
            .await;
            rows.push((input, answers, legit.served() - since));
        }

        let since = legit.served();
        let answers = each_fresh(target, 3, |_, mut attacker| async move {
            match attacker.open(target, "/garbage/1.0.0").await {
                Ok(mut stream) => vec![stream_attack(&mut stream, b"hello", false, QUICK).await.1],
                Err(answer) => vec![answer],
            }
        })
        .await;
        rows.push(("stream for an unknown protocol, after the handshake".into(), answers, legit.served() - since));
        rows
    };
    let (silence, rows) = tokio::join!(silence, others);
    for (input, answers, served) in rows {
        report.record(name, &input, &answers, served);
    }
    report.record(name, "request: half of one, then silence (stream kept open)", &silence, legit.served() - before);
}

/// Peers that finish the handshake and then open no stream, all held at once; a new
/// legitimate client must get in meanwhile. With `closes_unused_within`, the node must also
/// close every one of them by then (counted from when all dials settled).
async fn idle_handshaken_corpus<F, Fut>(
    target: &Target,
    legit: &Legit,
    report: &Report,
    fresh_client: F,
    closes_unused_within: Option<Duration>,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let before = legit.served();
    let attackers: Vec<Attacker> = (0..IDLE_HANDSHAKEN).map(|_| Attacker::connect(target)).collect();
    // Wait (bounded) until every dial has settled one way or the other.
    let settle = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut states: Vec<_> = attackers.iter().map(|a| a.state.clone()).collect();
    for state in &mut states {
        let _ = tokio::time::timeout_at(settle, state.wait_for(|s| *s != Link::Dialing)).await;
    }
    let settled = Instant::now();
    // Hold them a moment; a connection closed by now was refused over the node's cap.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tally = |states: &[tokio::sync::watch::Receiver<Link>], wanted: Link| {
        states.iter().filter(|s| *s.borrow() == wanted).count()
    };
    let (up, over_cap, failed, dialing) = (
        tally(&states, Link::Up),
        tally(&states, Link::Closed),
        tally(&states, Link::Failed),
        tally(&states, Link::Dialing),
    );
    let arrived = Instant::now();
    let newcomer = with_retries(&fresh_client).await.map(|retries| (retries, arrived.elapsed()));
    let mut answered =
        format!("kept open {up}; closed at once (over the connection cap) {over_cap}; refused at dial {failed}");
    if dialing > 0 {
        report.problem(format!("{}: {dialing} handshaken connections neither up nor refused after 30 s", target.name));
    }
    if let Some(limit) = closes_unused_within {
        let deadline = tokio::time::Instant::from_std(settled + limit);
        for state in &mut states {
            let _ = tokio::time::timeout_at(deadline, state.wait_for(|s| *s != Link::Up)).await;
        }
        let still_up = tally(&states, Link::Up);
        if still_up > 0 {
            report
                .problem(format!("{}: {still_up} connections with no stream still open after {limit:?}", target.name));
        }
        answered += &format!(
            "; the node closed all but {still_up} of them {:.1} s after the dials settled (no stream)",
            settled.elapsed().as_secs_f64()
        );
    }
    drop(attackers);
    let legit_during = legit.served() - before;
    report.note(
        target.name,
        &format!("{IDLE_HANDSHAKEN} peers, each a connection with no stream, held together"),
        IDLE_HANDSHAKEN,
        answered,
        legit_during,
    );
    match newcomer {
        Ok((retries, after)) => report.note(
            target.name,
            "a new legitimate client, while those are held",
            1,
            format!("served after {:.1} s ({retries} retries)", after.as_secs_f64()),
            legit_during,
        ),
        Err(why) => report.problem(format!("{}: a new client was locked out by idle peers: {why}", target.name)),
    }
}

// ---------------------------------------------------------------------------------------
// The nodes and their legitimate clients

async fn echo_client(target: &Target, echo: Address, name: &str) -> (Bureau, agent_core::Context) {
    let resolver = Arc::new(StaticResolver::new());
    resolver.insert(echo, Endpoint { peer_id: target.peer(), addrs: vec![target.addr.clone()] });
    let bureau = Bureau::new().unwrap();
    let me = bureau.add(Agent::builder(name).seed(name).build().unwrap()).unwrap();
    let config = NetworkConfig::new(vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], resolver)
        .with_delivery_timeout(Duration::from_secs(10));
    bureau.listen(config).await.unwrap();
    let ctx = bureau.context(me).unwrap();
    (bureau, ctx)
}

async fn ping(ctx: &agent_core::Context, echo: Address, n: u64) -> Result<(), String> {
    match ctx.request::<_, Pong>(echo, Ping(n), Duration::from_secs(10)).await {
        Ok(Pong(m)) if m == n => Ok(()),
        Ok(other) => Err(format!("answered {other:?} to Ping({n})")),
        Err(err) => Err(err.to_string()),
    }
}

fn registration(identity: &Identity, sequence: u64) -> Registration {
    Registration::sign(
        identity,
        PeerId::random().to_string(),
        vec![WeightedEndpoint { addr: "/ip4/127.0.0.1/tcp/4001".into(), weight: 1 }],
        vec![],
        BTreeMap::from([("service".to_string(), "bad input test".to_string())]),
        sequence,
        unix_now_ms() + 3_600_000,
    )
}

/// Everything the almanac holds, as JSON, for comparing before and after.
async fn almanac_snapshot(almanac: &RemoteAlmanac, agents: &[Address]) -> Result<String, String> {
    let mut out = Vec::new();
    for agent in agents {
        let record = almanac.lookup(agent).await.map_err(|e| e.to_string())?;
        out.push(serde_json::to_string(&record).unwrap());
    }
    let page = almanac.query(Query::default()).await.map_err(|e| e.to_string())?;
    out.push(serde_json::to_string(&page).unwrap());
    Ok(out.join("\n"))
}

/// Everything the ledger says about `accounts`, as JSON, with the log file's bytes.
async fn ledger_snapshot(ledger: &RemoteLedger, accounts: &[Address], log: &Path) -> Result<(String, Vec<u8>), String> {
    let mut out = Vec::new();
    for account in accounts {
        let balance = ledger.balance(*account).await.map_err(|e| e.to_string())?;
        let nonce = ledger.next_nonce(*account).await.map_err(|e| e.to_string())?;
        let history = ledger.history(*account, 100).await.map_err(|e| e.to_string())?;
        out.push(format!("{balance} {nonce} {}", serde_json::to_string(&history).unwrap()));
    }
    Ok((out.join("\n"), std::fs::read(log).map_err(|e| e.to_string())?))
}

fn pings_handled(node: &Node) -> BTreeMap<u64, usize> {
    let mut handled = BTreeMap::new();
    for line in node.lines.lock().unwrap().iter() {
        if let Some(n) = line.strip_prefix("handled ").and_then(|n| n.parse::<u64>().ok()) {
            *handled.entry(n).or_default() += 1;
        }
    }
    handled
}

/// Alive, and no panic in its log.
fn check_alive(target: &mut Target, report: &Report) {
    match target.node.child.try_wait() {
        Ok(None) => {}
        Ok(Some(status)) => report.problem(format!("{}: the node exited: {status}", target.name)),
        Err(err) => report.problem(format!("{}: cannot tell whether the node runs: {err}", target.name)),
    }
    let log = std::fs::read_to_string(&target.log).unwrap_or_default();
    if log.contains("panicked") {
        report.problem(format!("{}: the node's log shows a panic:\n{log}", target.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_survives_a_corpus_of_bad_input_and_keeps_serving() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let report = Arc::new(Report::default());

    // Sealed before the echo node starts: a replay of it must be refused as possibly handled.
    let echo_agent = Identity::from_seed("bad input echo").address();
    let stale =
        Envelope::seal(&Identity::generate(), echo_agent, &Ping(3), request_header(), unix_now_ms(), 300_000).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let echo_data = dir.path().join("echo");
    let ledger_data = dir.path().join("ledger");
    let almanac_data = dir.path().join("almanac");
    let faucet = Identity::from_seed("bad input faucet");
    let mut echo = Target::start(
        "echo-node",
        Path::new(env!("CARGO_BIN_EXE_echo-node")),
        &args(&["--seed", "bad input echo", "--log-handled", "--data", echo_data.to_str().unwrap()]),
        dir.path(),
    );
    assert_eq!(echo.node.agent, Some(echo_agent));
    let mut ledger_node = Target::start(
        "ledger-node",
        Path::new(env!("CARGO_BIN_EXE_ledger-node")),
        &args(&["--data-dir", ledger_data.to_str().unwrap(), "--authority", &faucet.address().to_string()]),
        dir.path(),
    );
    let mut almanac_node =
        Target::start("almanac", &almanac_binary(), &args(&["--data-dir", almanac_data.to_str().unwrap()]), dir.path());

    // The stored data the attacks must leave alone.
    let almanac = RemoteAlmanac::new(almanac_node.peer(), vec![almanac_node.addr.clone()]).unwrap();
    let registrants: Vec<Identity> =
        (0..4).map(|i| Identity::from_seed(&format!("bad input registrant {i}"))).collect();
    let old_record = registration(&registrants[0], 1);
    almanac.register(old_record.clone()).await.unwrap();
    for identity in &registrants {
        almanac.register(registration(identity, 2)).await.unwrap();
    }
    let agents: Vec<Address> = registrants.iter().map(Identity::address).collect();
    let almanac_before = almanac_snapshot(&almanac, &agents).await.unwrap();

    let ledger = Arc::new(RemoteLedger::new(ledger_node.peer(), vec![ledger_node.addr.clone()]).unwrap());
    let alice = Wallet::new(Identity::from_seed("bad input alice"), ledger.clone());
    let bob = Identity::from_seed("bad input bob").address();
    Wallet::new(faucet.clone(), ledger.clone()).mint(alice.address(), 1_000).await.unwrap();
    let paid = alice.transfer(bob, 250, "before the attack").await.unwrap();
    let accounts = [faucet.address(), alice.address(), bob];
    let ledger_log = ledger_data.join("ledger.log");
    let ledger_before = ledger_snapshot(&ledger, &accounts, &ledger_log).await.unwrap();

    let (echo_bureau, echo_ctx) = echo_client(&echo, echo_agent, "bad input legit client").await;

    // The legitimate clients, for the whole run.
    let legit_echo = Arc::new(Legit::default());
    let legit_almanac = Arc::new(Legit::default());
    let legit_ledger = Arc::new(Legit::default());
    let echo_loop = tokio::spawn(keep_requesting("echo-node", legit_echo.clone(), report.clone(), {
        let ctx = echo_ctx.clone();
        move |n| {
            let ctx = ctx.clone();
            async move { ping(&ctx, echo_agent, n).await }
        }
    }));
    let almanac_loop = tokio::spawn(keep_requesting("almanac", legit_almanac.clone(), report.clone(), {
        let (almanac, agents, before) = (almanac.clone(), agents.clone(), almanac_before.clone());
        move |n| {
            let (almanac, agent) = (almanac.clone(), agents[n as usize % agents.len()]);
            let expected = before.lines().nth(n as usize % agents.len()).unwrap().to_owned();
            async move {
                let record = almanac.lookup(&agent).await.map_err(|e| e.to_string())?;
                match serde_json::to_string(&record).unwrap() == expected {
                    true => Ok(()),
                    false => Err(format!("the record of {agent} changed")),
                }
            }
        }
    }));
    let ledger_loop = tokio::spawn(keep_requesting("ledger-node", legit_ledger.clone(), report.clone(), {
        let (ledger, alice) = (ledger.clone(), alice.address());
        move |_| {
            let ledger = ledger.clone();
            async move {
                match ledger.balance(alice).await {
                    Ok(750) => Ok(()),
                    Ok(other) => Err(format!("alice's balance is {other}, not 750")),
                    Err(err) => Err(err.to_string()),
                }
            }
        }
    }));

    // Newcomers: a client that connects afresh for its one request.
    let fresh_echo = || {
        let target = &echo;
        async move {
            let (bureau, ctx) = echo_client(target, echo_agent, "bad input newcomer").await;
            let n = NEWCOMER_PINGS + rand::random::<u64>() % (ATTACKER_PING - NEWCOMER_PINGS);
            let result = ping(&ctx, echo_agent, n).await;
            let _ = bureau.shutdown().await;
            result
        }
    };
    let fresh_almanac = || {
        let (peer, addr, agent) = (almanac_node.peer(), almanac_node.addr.clone(), agents[1]);
        async move {
            let client = RemoteAlmanac::new(peer, vec![addr]).map_err(|e| e.to_string())?;
            client.lookup(&agent).await.map(drop).map_err(|e| e.to_string())
        }
    };
    let fresh_ledger = || {
        let (peer, addr, bob) = (ledger_node.peer(), ledger_node.addr.clone(), bob);
        async move {
            let client = RemoteLedger::new(peer, vec![addr]).map_err(|e| e.to_string())?;
            client.balance(bob).await.map(drop).map_err(|e| e.to_string())
        }
    };

    let numbered_almanac = r#"{"Query":{"protocol":null,"attributes":[],"after":null,"limit":LIMIT}}"#.to_string();
    let numbered_ledger = format!(r#"{{"History":{{"account":"{}","limit":LIMIT}}}}"#, alice.address());

    // Each node's corpus: the inputs whose answer takes a node timeout (10-15 s) run side
    // by side with the rest; then the connections by the hundred, one kind at a time.
    let echo_run = async {
        let phase = Instant::now();
        tokio::join!(
            raw_tcp_corpus(&echo, &legit_echo, &report),
            echo_corpus(&echo, echo_agent, stale.clone(), &legit_echo, &report),
        );
        // Not beside the rest: the idle connections fill the node's places for connections
        // in their handshake (256), so the attackers above could not get in meanwhile.
        silent_tcp_corpus(&echo, &legit_echo, &report, fresh_echo).await;
        eprintln!("echo-node: malformed input done in {:.1} s", phase.elapsed().as_secs_f64());
        let phase = Instant::now();
        let closes_within = NetworkConfig::DEFAULT_UNUSED_CONNECTION_TIMEOUT + Duration::from_secs(10);
        idle_handshaken_corpus(&echo, &legit_echo, &report, fresh_echo, Some(closes_within)).await;
        eprintln!("echo-node: idle peers done in {:.1} s", phase.elapsed().as_secs_f64());
        flood_corpus(&echo, &legit_echo, &report).await;
    };
    let almanac_run = async {
        let phase = Instant::now();
        let control = numbered_almanac.replace("LIMIT", "10");
        tokio::join!(
            raw_tcp_corpus(&almanac_node, &legit_almanac, &report),
            rpc_corpus(
                &almanac_node,
                almanac::service::PROTOCOL,
                numbered_almanac.clone(),
                control,
                &report,
                &legit_almanac
            ),
            silent_tcp_corpus(&almanac_node, &legit_almanac, &report, fresh_almanac),
        );
        // Well-formed requests the almanac must refuse, sent with the real client.
        let since = legit_almanac.served();
        let mut forged = registration(&registrants[1], 7);
        forged.signature[0] ^= 1;
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(match almanac.register(forged.clone()).await {
                Ok(registered) => {
                    report.problem(format!("almanac: a forged registration was accepted: {registered:?}"));
                    Answer::Silent("a refusal (it was accepted)")
                }
                Err(err) => Answer::Answered(format!("typed error: {}", shorten(&err.to_string()))),
            });
        }
        report.record("almanac", "registration with a bad signature", &answers, legit_almanac.served() - since);
        let since = legit_almanac.served();
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(match almanac.register(old_record.clone()).await {
                Ok(registered) => {
                    report.problem(format!("almanac: a replayed old registration was accepted: {registered:?}"));
                    Answer::Silent("a refusal (it was accepted)")
                }
                Err(err) => Answer::Answered(format!("typed error: {}", shorten(&err.to_string()))),
            });
        }
        report.record("almanac", "replay of a superseded registration", &answers, legit_almanac.served() - since);
        eprintln!("almanac: malformed input done in {:.1} s", phase.elapsed().as_secs_f64());
        let phase = Instant::now();
        idle_handshaken_corpus(&almanac_node, &legit_almanac, &report, fresh_almanac, None).await;
        eprintln!("almanac: idle peers done in {:.1} s", phase.elapsed().as_secs_f64());
        flood_corpus(&almanac_node, &legit_almanac, &report).await;
    };
    let ledger_run = async {
        let phase = Instant::now();
        let control = numbered_ledger.replace("LIMIT", "10");
        tokio::join!(
            raw_tcp_corpus(&ledger_node, &legit_ledger, &report),
            rpc_corpus(
                &ledger_node,
                agent_core::ledger::service::PROTOCOL,
                numbered_ledger.clone(),
                control,
                &report,
                &legit_ledger
            ),
            silent_tcp_corpus(&ledger_node, &legit_ledger, &report, fresh_ledger),
        );
        let since = legit_ledger.served();
        let mut answers = Vec::new();
        for i in 0..3u64 {
            let mut forged = Transaction::sign(
                &Identity::from_seed("bad input alice"),
                2 + i,
                Operation::Transfer { to: bob, amount: 1 },
                "forged",
            );
            forged.signature[0] ^= 1;
            answers.push(match ledger.submit(forged).await {
                Ok(receipt) => {
                    report.problem(format!("ledger-node: a forged transaction was applied: {receipt:?}"));
                    Answer::Silent("a refusal (it was applied)")
                }
                Err(err) => Answer::Answered(format!("typed error: {}", shorten(&err.to_string()))),
            });
        }
        report.record("ledger-node", "transaction with a bad signature", &answers, legit_ledger.served() - since);
        let since = legit_ledger.served();
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(match ledger.submit(paid.tx.clone()).await {
                Ok(receipt) => {
                    report.problem(format!("ledger-node: a replayed transaction was applied: {receipt:?}"));
                    Answer::Silent("a refusal (it was applied)")
                }
                Err(err) => Answer::Answered(format!("typed error: {}", shorten(&err.to_string()))),
            });
        }
        report.record("ledger-node", "replay of an applied transaction", &answers, legit_ledger.served() - since);
        eprintln!("ledger-node: malformed input done in {:.1} s", phase.elapsed().as_secs_f64());
        let phase = Instant::now();
        idle_handshaken_corpus(&ledger_node, &legit_ledger, &report, fresh_ledger, None).await;
        eprintln!("ledger-node: idle peers done in {:.1} s", phase.elapsed().as_secs_f64());
        flood_corpus(&ledger_node, &legit_ledger, &report).await;
    };
    eprintln!("set up in {:.1} s", started.elapsed().as_secs_f64());
    tokio::join!(echo_run, almanac_run, ledger_run);

    for legit in [&legit_echo, &legit_almanac, &legit_ledger] {
        legit.stop.store(true, Ordering::Relaxed);
    }
    let _ = tokio::join!(echo_loop, almanac_loop, ledger_loop);

    // The stored data, read back.
    let mut unchanged = BTreeMap::new();
    match almanac_snapshot(&almanac, &agents).await {
        Ok(after) if after == almanac_before => {
            unchanged.insert("almanac", format!("yes: {} records read back identical", agents.len()));
        }
        Ok(_) => report.problem("almanac: the records read back differ".into()),
        Err(err) => report.problem(format!("almanac: cannot read the records back: {err}")),
    }
    match ledger_snapshot(&ledger, &accounts, &ledger_log).await {
        Ok(after) if after == ledger_before => {
            unchanged.insert(
                "ledger-node",
                format!("yes: 3 accounts' balances, nonces, histories and the {}-byte log identical", after.1.len()),
            );
        }
        Ok(_) => report.problem("ledger-node: balances, nonces, histories or the log changed".into()),
        Err(err) => report.problem(format!("ledger-node: cannot read the ledger back: {err}")),
    }
    let handled = pings_handled(&echo.node);
    let legit_pings = handled.range(..NEWCOMER_PINGS).count();
    let handled_twice = handled.range(..NEWCOMER_PINGS).filter(|(_, count)| **count > 1).count();
    let newcomers = handled.range(NEWCOMER_PINGS..ATTACKER_PING).count();
    let attackers: Vec<_> = handled.range(ATTACKER_PING..).collect();
    if attackers != [(&ATTACKER_PING, &1)] {
        report
            .problem(format!("echo-node: attacker pings handled {attackers:?}: the valid one must be, once; no other"));
    } else {
        unchanged.insert(
            "echo-node",
            format!(
                "yes: of the attackers' pings only the valid one handled, once (its replays never); {legit_pings} legit pings handled ({handled_twice} twice, after a retry), {newcomers} from newcomers"
            ),
        );
    }

    for target in [&mut echo, &mut almanac_node, &mut ledger_node] {
        check_alive(target, &report);
    }
    echo_bureau.shutdown().await.unwrap();
    report.print(&unchanged);
    for (name, legit) in [("echo-node", &legit_echo), ("almanac", &legit_almanac), ("ledger-node", &legit_ledger)] {
        eprintln!(
            "{name}: legitimate requests served {}, retried {}, slowest {} ms",
            legit.served(),
            legit.retried.load(Ordering::Relaxed),
            legit.slowest_ms.load(Ordering::Relaxed)
        );
    }
    eprintln!("whole run: {:.1} s", started.elapsed().as_secs_f64());
    let problems = report.problems.lock().unwrap();
    if !problems.is_empty() {
        for target in [&echo, &almanac_node, &ledger_node] {
            let log = std::fs::read_to_string(&target.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- {} stderr, last 40 lines (newest first):\n{}", target.name, tail.join("\n"));
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}
