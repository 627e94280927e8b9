//! Metrics in Prometheus' text format, served over HTTP on an address of your choice.
//!
//! The runtime, the transport and the ledger and almanac clients record through the
//! [`metrics`](https://docs.rs/metrics) facade. Nothing is recorded until a recorder is
//! installed, by [`install`] or [`serve`]: until then each instrumented place costs one
//! relaxed atomic load. [`serve`] installs the Prometheus recorder and answers
//! `GET /metrics` on its address:
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = agent_core::metrics::serve("127.0.0.1:9100".parse()?).await?;
//! println!("metrics at http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```
//!
//! Every metric is named by a constant in this module, with its type and labels.
//! `docs/metrics.md` lists them with what each means. Label values are bounded: agent
//! kinds (see [`AgentBuilder::kind`](crate::AgentBuilder::kind)) are capped at
//! [`MAX_KINDS`], message and request names come from code, causes from enums, and peers
//! (the nodes this one talks to) are capped at [`MAX_PEERS`].
//!
//! Gauges (mailbox depth, agents, link queues) are computed when scraped, from every
//! bureau and network node alive in the process, so keeping them costs nothing per
//! message.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::{Cause, Unroutable};
use crate::transport::Outcome;

/// Gauge `{kind}`: messages waiting in the mailboxes of the agents of each kind.
pub const MAILBOX_DEPTH: &str = "agora_mailbox_depth";
/// Gauge `{kind}`: agents of each kind running in this process.
pub const AGENTS: &str = "agora_agents";
/// Counter `{kind}`: messages refused because the receiving agent's mailbox was full
/// (at once, or once the wait for room ran out), from this process or another.
pub const MAILBOX_FULL: &str = "agora_mailbox_full_total";
/// Histogram `{kind, message}`, seconds: how long handlers took, from the call to the
/// end of the returned future (time spent awaiting inside the handler included).
pub const HANDLER_SECONDS: &str = "agora_handler_seconds";
/// Counter `{kind, message}`: handlers that returned an error or panicked.
pub const HANDLER_FAILURES: &str = "agora_handler_failures_total";
/// Counter `{peer, outcome, cause}`: final outcomes of envelopes sent to other nodes.
/// `outcome` is `delivered`, `rejected`, `unroutable`, `unreachable` or `timed_out`;
/// `cause` is the rejection's cause or why it was unroutable (empty otherwise); `peer` is
/// the receiving node's peer id (empty when no peer was resolved).
pub const OUTCOMES: &str = "agora_outcomes_total";
/// Gauge `{peer}`: envelopes waiting in the queue of the link to each node, not yet taken
/// by the link. A peer whose link is gone reads zero.
pub const LINK_QUEUE_DEPTH: &str = "agora_link_queue_depth";
/// Gauge: open links to other nodes.
pub const LINKS: &str = "agora_links";
/// Counter `{peer}`: envelopes written again after a connection to their peer broke
/// before they were acknowledged.
pub const LINK_RESENDS: &str = "agora_link_resends_total";
/// Counter `{reason}`: envelopes refused by the replay defences. `reason` is `restart`
/// (sealed before this node restarted), `forgotten` (a copy whose first copy's verdict is
/// no longer remembered), `pending` (a copy arriving while its first copy is still being
/// delivered, with no room to wait), `below_window` (a nonce older than the sender's
/// window) or `capacity` (the replay guard is full).
pub const REPLAY_REFUSALS: &str = "agora_replay_refusals_total";
/// Counter `{quota}`: work refused because a peer reached a limit. `quota` is
/// `requests_in_flight`, `streams_per_peer`, `banned_peer`, `waiting_envelopes` or
/// `rpc_in_flight`.
pub const QUOTA_REFUSALS: &str = "agora_quota_refusals_total";
/// Counter: peers banned for sending envelopes or bindings that failed authentication.
pub const PEER_BANS: &str = "agora_peer_bans_total";
/// Histogram `{request, result}`, seconds: requests to a ledger service, as its client
/// saw them; `result` is `ok` (answered) or `error` (no answer).
pub const LEDGER_CLIENT_SECONDS: &str = "agora_ledger_client_request_seconds";
/// Histogram `{request}`, seconds: requests a ledger service answered, as it handled them.
pub const LEDGER_SERVER_SECONDS: &str = "agora_ledger_server_request_seconds";
/// Histogram `{request, result}`, seconds: requests to an almanac service, as its client
/// saw them; `result` is `ok` (answered) or `error` (no answer).
pub const ALMANAC_CLIENT_SECONDS: &str = "agora_almanac_client_request_seconds";
/// Histogram `{request}`, seconds: requests an almanac service answered.
pub const ALMANAC_SERVER_SECONDS: &str = "agora_almanac_server_request_seconds";

/// Distinct agent kinds labelled, at most; agents of further kinds are counted as `other`.
pub const MAX_KINDS: usize = 256;

/// Distinct peers labelled, at most; envelopes to further peers are counted under the peer
/// `other`.
pub const MAX_PEERS: usize = 256;

/// Histogram buckets, in seconds: from a microsecond (an in-process handler) to ten
/// seconds (a request that waited for its deadline).
const BUCKETS: &[f64] = &[
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// How often histograms are folded into their buckets between scrapes, so that the
/// samples of a process nobody scrapes do not pile up.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Scrapes served at once, at most; more connections wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// Longest request head read from a scraper, and how long it may take to send it.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

static ENABLED: AtomicBool = AtomicBool::new(false);
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Whether a recorder is installed: the instrumented places check this first, so that
/// without one they neither read clocks nor build labels.
#[inline]
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Why metrics could not be installed or served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another metrics recorder was installed in this process first (by something other
    /// than this module).
    #[error("another metrics recorder is already installed in this process")]
    RecorderTaken,
    /// The HTTP address could not be bound.
    #[error("cannot serve metrics on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Installs the Prometheus recorder for this process, if not installed yet, and starts
/// recording. Idempotent. [`render`] then gives the text; [`serve`] does this and serves
/// it over HTTP.
pub fn install() -> Result<(), MetricsError> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _once = INSTALLING.lock();
    if HANDLE.get().is_some() {
        return Ok(());
    }
    // Refused only for an empty list, which this is not; were it refused, histograms would
    // be rendered as summaries rather than the process panic.
    let builder = PrometheusBuilder::new().set_buckets(BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
    let handle = builder.install_recorder().map_err(|_| MetricsError::RecorderTaken)?;
    let upkeep = handle.clone();
    // A plain thread: the recorder outlives any one runtime, and upkeep takes microseconds.
    let spawned = std::thread::Builder::new().name("agora-metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_PERIOD);
        upkeep.run_upkeep();
    });
    if let Err(err) = spawned {
        // Rendering folds the samples too: a scraped process stays bounded without it.
        tracing::warn!(error = %err, "cannot start the metrics upkeep thread; samples are folded when scraped");
    }
    // Set only here, under the lock, after the check above: it cannot be set yet.
    let _ = HANDLE.set(handle);
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// The metrics of this process in Prometheus' text format, or `None` before [`install`].
pub fn render() -> Option<String> {
    let handle = HANDLE.get()?;
    collect();
    let mut text = handle.render();
    render_latencies(&mut text);
    Some(text)
}

/// A running metrics endpoint. Dropping it stops serving (recording goes on).
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address bound (with the port actually chosen when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Installs the recorder ([`install`]) and serves `GET /metrics` on `addr` in
/// Prometheus' text format (version 0.0.4) until the returned server is dropped. Must be
/// called inside a tokio runtime.
pub async fn serve(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
    install()?;
    let listener = TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
    let task = tokio::spawn(accept(listener));
    tracing::info!(%local_addr, "serving metrics");
    Ok(MetricsServer { local_addr, task })
}

/// [`serve`] when an address is given: what binaries do with `--metrics-addr`.
pub async fn serve_if(addr: Option<SocketAddr>) -> Result<Option<MetricsServer>, MetricsError> {
    match addr {
        Some(addr) => serve(addr).await.map(Some),
        None => Ok(None),
    }
}

async fn accept(listener: TcpListener) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The semaphore is never closed: acquiring only waits.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(REQUEST_TIMEOUT, answer(stream)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => tracing::debug!(%peer, error = %err, "metrics scrape failed"),
                        Err(_) => tracing::debug!(%peer, "metrics scraper too slow; closed"),
                    }
                    drop(permit);
                });
            }
            Err(err) => {
                // Out of descriptors, typically: wait rather than spin.
                tracing::warn!(error = %err, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(mut stream: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "request head too large\n").await;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(()); // Closed before a full request: nothing to answer.
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    if path != b"/metrics" {
        return respond(&mut stream, "404 Not Found", "metrics are served at /metrics\n").await;
    }
    if method != b"GET" {
        return respond(&mut stream, "405 Method Not Allowed", "only GET is served\n").await;
    }
    let body = render().unwrap_or_default();
    respond(&mut stream, "200 OK", &body).await
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

// ---- Capped labels -----------------------------------------------------------------

/// The values one label has taken, at most a fixed number: each value keeps a series (and
/// its memory) for the life of the process, so a label whose values come from outside
/// (agent names, peers that come and go) must stop taking new ones somewhere.
struct CappedLabel {
    known: Mutex<Option<HashSet<Arc<str>>>>,
    max: usize,
}

impl CappedLabel {
    const fn new(max: usize) -> Self {
        CappedLabel { known: Mutex::new(None), max }
    }

    /// `value`, if it is known or fewer than the maximum are; `other` otherwise.
    fn label(&self, value: &str) -> Arc<str> {
        let mut known = self.known.lock();
        let known = known.get_or_insert_with(HashSet::new);
        if let Some(label) = known.get(value) {
            return Arc::clone(label);
        }
        if known.len() >= self.max {
            return Arc::from("other");
        }
        let label: Arc<str> = Arc::from(value);
        known.insert(Arc::clone(&label));
        label
    }
}

/// The label of an agent kind: `given` without a trailing number (`trader-17` and
/// `trader 3` are both `trader`), or `other` once [`MAX_KINDS`] kinds are known.
pub(crate) fn kind_label(given: &str) -> Arc<str> {
    static KINDS: CappedLabel = CappedLabel::new(MAX_KINDS);
    let trimmed = given.trim_end_matches(|c: char| c.is_ascii_digit() || " -_#.:/".contains(c));
    KINDS.label(if trimmed.is_empty() { "agent" } else { trimmed })
}

/// The label of `peer`: its id, or `other` once [`MAX_PEERS`] peers are known. A node
/// started without a fixed key has a new peer id each time, so a long-running node sees an
/// unbounded number of them.
fn peer_label(peer: &libp2p::PeerId) -> metrics::SharedString {
    static PEERS: CappedLabel = CappedLabel::new(MAX_PEERS);
    metrics::SharedString::from(PEERS.label(&peer.to_string()))
}

// ---- Recording ----------------------------------------------------------------------

/// A message refused for a full mailbox of an agent of `kind`.
pub(crate) fn mailbox_full(kind: &Arc<str>) {
    if enabled() {
        metrics::counter!(MAILBOX_FULL, "kind" => metrics::SharedString::from(Arc::clone(kind))).increment(1);
    }
}

/// The latency histogram of the handlers of one kind for one message.
///
/// Kept here rather than in the recorder: the recorder's histograms keep every sample
/// until it folds them, which cost about 300 instructions per handled message (measured
/// with callgrind, a 5% longer in-process round trip); this costs a few relaxed atomic
/// additions, and is rendered into buckets when scraped.
pub(crate) struct Latency {
    /// Samples at or below each of [`BUCKETS`], not cumulated.
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Latency {
    pub(crate) fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// An agent kind and a message type's name.
type KindAndMessage = (Arc<str>, &'static str);

/// Every handler latency histogram, by kind and message.
static LATENCIES: Mutex<BTreeMap<KindAndMessage, Arc<Latency>>> = Mutex::new(BTreeMap::new());

/// The latency histogram of the handlers of `kind` for `message`, shared by every agent
/// of the kind.
pub(crate) fn handler_latency(kind: &Arc<str>, message: &'static str) -> Arc<Latency> {
    let mut latencies = LATENCIES.lock();
    let latency = latencies.entry((Arc::clone(kind), message)).or_insert_with(|| {
        Arc::new(Latency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        })
    });
    Arc::clone(latency)
}

/// Appends the handler latency histograms to `text`, in Prometheus' text format.
fn render_latencies(text: &mut String) {
    use std::fmt::Write;
    let latencies = LATENCIES.lock();
    if latencies.is_empty() {
        return;
    }
    // Writing to a `String` cannot fail: the results below are `Ok` by construction.
    let _ = writeln!(text, "# TYPE {HANDLER_SECONDS} histogram");
    for ((kind, message), latency) in latencies.iter() {
        let labels = format!("kind=\"{}\",message=\"{}\"", escape(kind), escape(message));
        // Read first: a sample being recorded meanwhile may already be in a bucket read
        // after it, so buckets are capped at it and stay consistent.
        let count = latency.count.load(Ordering::Relaxed);
        let mut cumulated = 0u64;
        for (bound, bucket) in BUCKETS.iter().zip(&latency.buckets) {
            cumulated += bucket.load(Ordering::Relaxed);
            let _ = writeln!(text, "{HANDLER_SECONDS}_bucket{{{labels},le=\"{bound}\"}} {}", cumulated.min(count));
        }
        let _ = writeln!(text, "{HANDLER_SECONDS}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(text, "{HANDLER_SECONDS}_sum{{{labels}}} {sum}");
        let _ = writeln!(text, "{HANDLER_SECONDS}_count{{{labels}}} {count}");
    }
    text.push('\n');
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A handler of `kind` for `message` that failed.
pub(crate) fn handler_failed(kind: &Arc<str>, message: &'static str) {
    if enabled() {
        metrics::counter!(HANDLER_FAILURES, "kind" => metrics::SharedString::from(Arc::clone(kind)), "message" => message)
            .increment(1);
    }
}

/// The final outcome of an envelope sent to `peer`.
pub(crate) fn outcome(peer: Option<&libp2p::PeerId>, outcome: &Outcome) {
    if !enabled() {
        return;
    }
    let (kind, cause) = match outcome {
        Outcome::Delivered => ("delivered", ""),
        Outcome::Rejected(rejection) => ("rejected", cause_label(rejection.cause)),
        Outcome::Unroutable(reason) => ("unroutable", unroutable_label(reason)),
        Outcome::Unreachable { .. } => ("unreachable", ""),
        Outcome::TimedOut { .. } => ("timed_out", ""),
    };
    let peer = peer.map(peer_label).unwrap_or_default();
    metrics::counter!(OUTCOMES, "peer" => peer, "outcome" => kind, "cause" => cause).increment(1);
}

/// `count` envelopes written again to `peer` after a broken connection.
pub(crate) fn resends(peer: &libp2p::PeerId, count: u64) {
    if enabled() && count > 0 {
        metrics::counter!(LINK_RESENDS, "peer" => peer_label(peer)).increment(count);
    }
}

/// An envelope refused by the replay defences, for `reason` (see [`REPLAY_REFUSALS`]).
pub(crate) fn replay_refused(reason: &'static str) {
    if enabled() {
        metrics::counter!(REPLAY_REFUSALS, "reason" => reason).increment(1);
    }
}

/// Work refused for a peer's `quota` (see [`QUOTA_REFUSALS`]).
pub(crate) fn quota_refused(quota: &'static str) {
    if enabled() {
        metrics::counter!(QUOTA_REFUSALS, "quota" => quota).increment(1);
    }
}

/// A peer banned.
pub(crate) fn peer_banned() {
    if enabled() {
        metrics::counter!(PEER_BANS).increment(1);
    }
}

/// Times a request of a service's client or server: `None` when metrics are off.
pub fn start_timer() -> Option<std::time::Instant> {
    enabled().then(std::time::Instant::now)
}

/// Records a request timed with [`start_timer`] in the histogram `name` (one of this
/// module's `*_SECONDS` constants), labelled with the request's name and, when given, its
/// result (`ok` or `error`).
pub fn record_request(
    name: &'static str,
    started: Option<std::time::Instant>,
    request: &'static str,
    result: Option<bool>,
) {
    let Some(started) = started else { return };
    let elapsed = started.elapsed();
    match result {
        Some(ok) => {
            metrics::histogram!(name, "request" => request, "result" => if ok { "ok" } else { "error" }).record(elapsed)
        }
        None => metrics::histogram!(name, "request" => request).record(elapsed),
    }
}

/// The label of a rejection's cause.
fn cause_label(cause: Cause) -> &'static str {
    match cause {
        Cause::NoHandler => "no_handler",
        Cause::MailboxFull => "mailbox_full",
        Cause::AgentStopped => "agent_stopped",
        Cause::UnknownAgent => "unknown_agent",
        Cause::Expired => "expired",
        Cause::ClockSkew => "clock_skew",
        Cause::BadSignature => "bad_signature",
        Cause::NoBinding => "no_binding",
        Cause::Replayed => "replayed",
        Cause::QuotaExceeded => "quota_exceeded",
        Cause::TooLarge => "too_large",
        Cause::MayHaveBeenHandled => "may_have_been_handled",
        Cause::Malformed => "malformed",
        Cause::NotAwaited => "not_awaited",
        Cause::NodeStopped => "node_stopped",
        Cause::Unavailable => "unavailable",
        Cause::Unknown(_) => "unknown",
    }
}

fn unroutable_label(reason: &Unroutable) -> &'static str {
    match reason {
        Unroutable::UnknownAddress => "unknown_address",
        Unroutable::NoEndpoint => "no_endpoint",
        Unroutable::Expired { .. } => "registration_expired",
        Unroutable::ProtocolMismatch { .. } => "protocol_mismatch",
        Unroutable::ResolverUnavailable(_) => "resolver_unavailable",
        Unroutable::BadRecord(_) => "bad_record",
    }
}

// ---- Gauges computed when scraped ---------------------------------------------------

/// The bureaus and network nodes of this process, for the gauges computed when scraped.
#[derive(Default)]
struct Live {
    routers: Vec<Weak<crate::router::Router>>,
    networks: Vec<Weak<crate::transport::Network>>,
    /// Every kind given a gauge so far: a kind whose agents are gone reads zero.
    kinds: BTreeSet<Arc<str>>,
    /// Every peer label given a queue gauge so far, likewise.
    peers: BTreeSet<metrics::SharedString>,
}

static LIVE: Mutex<Live> =
    Mutex::new(Live { routers: Vec::new(), networks: Vec::new(), kinds: BTreeSet::new(), peers: BTreeSet::new() });

/// Counts `router`'s agents and mailboxes in the gauges, while it lives.
pub(crate) fn watch_router(router: &Arc<crate::router::Router>) {
    let mut live = LIVE.lock();
    live.routers.retain(|router| router.strong_count() > 0);
    live.routers.push(Arc::downgrade(router));
}

/// Counts `network`'s links in the gauges, while it lives.
pub(crate) fn watch_network(network: &Arc<crate::transport::Network>) {
    let mut live = LIVE.lock();
    live.networks.retain(|network| network.strong_count() > 0);
    live.networks.push(Arc::downgrade(network));
}

/// Sets the gauges from the bureaus and nodes alive now.
fn collect() {
    let (routers, networks) = {
        let mut live = LIVE.lock();
        live.routers.retain(|router| router.strong_count() > 0);
        live.networks.retain(|network| network.strong_count() > 0);
        let routers: Vec<_> = live.routers.iter().filter_map(Weak::upgrade).collect();
        let networks: Vec<_> = live.networks.iter().filter_map(Weak::upgrade).collect();
        (routers, networks)
    };
    // Per kind: (agents, messages waiting).
    let mut kinds: BTreeMap<Arc<str>, (u64, u64)> = BTreeMap::new();
    for router in &routers {
        for entry in router.agents.read().values() {
            let counts = kinds.entry(Arc::clone(&entry.cell.kind.label)).or_default();
            counts.0 += 1;
            counts.1 += (entry.tx.max_capacity() - entry.tx.capacity()) as u64;
        }
    }
    // Per peer label (peers past the cap share `other`): envelopes waiting.
    let mut queued: BTreeMap<metrics::SharedString, u64> = BTreeMap::new();
    let mut links = 0u64;
    for network in &networks {
        for (peer, link) in network.links.lock().iter() {
            if !link.queue.is_closed() {
                links += 1;
                *queued.entry(peer_label(peer)).or_default() +=
                    (link.queue.max_capacity() - link.queue.capacity()) as u64;
            }
        }
    }
    let mut live = LIVE.lock();
    live.kinds.extend(kinds.keys().cloned());
    for kind in &live.kinds {
        let (agents, waiting) = kinds.get(kind).copied().unwrap_or_default();
        let label = metrics::SharedString::from(Arc::clone(kind));
        metrics::gauge!(AGENTS, "kind" => label.clone()).set(agents as f64);
        metrics::gauge!(MAILBOX_DEPTH, "kind" => label).set(waiting as f64);
    }
    live.peers.extend(queued.keys().cloned());
    for peer in &live.peers {
        let waiting = queued.get(peer).copied().unwrap_or_default();
        metrics::gauge!(LINK_QUEUE_DEPTH, "peer" => peer.clone()).set(waiting as f64);
    }
    metrics::gauge!(LINKS).set(links as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_render_cumulative_buckets_with_escaped_labels() {
        let kind: Arc<str> = Arc::from("say \"hi\"\\");
        let latency = handler_latency(&kind, "Test");
        latency.record(Duration::from_micros(3));
        latency.record(Duration::from_millis(2));
        latency.record(Duration::from_secs(60));
        let mut text = String::new();
        render_latencies(&mut text);
        let labels = r#"kind="say \"hi\"\\",message="Test""#;
        for (le, count) in [("0.0000025", 0), ("0.000005", 1), ("0.0025", 2), ("10", 2), ("+Inf", 3)] {
            let line = format!("agora_handler_seconds_bucket{{{labels},le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "no {line:?} in\n{text}");
        }
        assert!(text.contains(&format!("agora_handler_seconds_count{{{labels}}} 3\n")), "{text}");
        assert!(text.contains(&format!("agora_handler_seconds_sum{{{labels}}} 60.002003\n")), "{text}");
    }

    #[test]
    fn peers_past_the_cap_share_one_label() {
        install().unwrap();
        // Peers that come and go, each with a new id, as nodes started without a fixed key.
        for _ in 0..MAX_PEERS + 50 {
            outcome(Some(&libp2p::PeerId::random()), &Outcome::Delivered);
        }
        let text = render().unwrap();
        let peers: HashSet<&str> = text
            .lines()
            .filter(|line| line.starts_with(OUTCOMES))
            .filter_map(|line| line.split("peer=\"").nth(1)?.split('"').next())
            .collect();
        assert!(peers.len() <= MAX_PEERS + 1, "{} peer labels, at most {MAX_PEERS} and `other`", peers.len());
        assert!(peers.contains("other"), "the peers past the cap are counted as other");
    }

    #[test]
    fn kinds_drop_a_trailing_number() {
        assert_eq!(&*kind_label("trader-17"), "trader");
        assert_eq!(&*kind_label("writer 3"), "writer");
        assert_eq!(&*kind_label("airline"), "airline");
        assert_eq!(&*kind_label("42"), "agent");
    }
}
