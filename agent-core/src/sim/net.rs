//! The simulated network: hosts, links, partitions, and how one message crosses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Directory, SimError, Stats, EPOCH_UNIX_MS};
use crate::agent::DigestMap;
use crate::bureau::{Bureau, Config};
use crate::delivery::{Blocked, Body, Delivery, ReplyTo, RequestFailure};
use crate::envelope::Header;
use crate::error::{ReplyError, RequestError, SendFailure, Unroutable};
use crate::identity::{Address, Identity};
use crate::message::{ProtocolDigest, SchemaDigest};
use crate::remote::{Incoming, Outgoing, RemoteSend, ReplyPath};
use crate::store::{Database, WriteBehind};
use crate::transport::{Resolver, Sink};

/// How one direction of a pair of hosts behaves. Built from a latency, then adjusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    latency: Duration,
    jitter: Duration,
    loss: f64,
    duplicate: f64,
    bytes_per_second: Option<u64>,
    reorder: bool,
}

impl Default for Link {
    fn default() -> Self {
        Link::with_latency(Duration::from_millis(1))
    }
}

impl Link {
    /// A link that takes `latency` one way, with no faults.
    pub fn with_latency(latency: Duration) -> Link {
        Link { latency, jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0, bytes_per_second: None, reorder: false }
    }

    /// Each copy takes up to `jitter` more, drawn uniformly.
    pub fn jitter(mut self, jitter: Duration) -> Link {
        self.jitter = jitter;
        self
    }

    /// Each copy (message, reply or acknowledgement) is lost with this probability; a
    /// lost message is sent again after a retransmission timeout, until the deadline.
    pub fn loss(mut self, probability: f64) -> Link {
        self.loss = probability.clamp(0.0, 1.0);
        self
    }

    /// Each delivered message arrives a second time with this probability; the receiver
    /// answers the copy with the first copy's verdict and does not handle it again.
    pub fn duplicate(mut self, probability: f64) -> Link {
        self.duplicate = probability.clamp(0.0, 1.0);
        self
    }

    /// At most this many payload bytes per second cross the link; messages queue behind
    /// each other.
    pub fn bandwidth(mut self, bytes_per_second: u64) -> Link {
        self.bytes_per_second = Some(bytes_per_second.max(1));
        self
    }

    /// Lets jitter reorder messages between two agents. The real transport keeps them in
    /// order, so by default the simulated one does too.
    pub fn reordering(mut self) -> Link {
        self.reorder = true;
        self
    }

    /// How long a sender waits for an acknowledgement before it sends again.
    fn retransmit_after(&self) -> Duration {
        ((self.latency + self.jitter) * 4).max(Duration::from_millis(20))
    }
}

pub(super) struct Partition {
    pub(super) a: Vec<usize>,
    pub(super) b: Vec<usize>,
    pub(super) from: Duration,
    pub(super) until: Duration,
}

pub(super) struct HostState {
    pub(super) name: String,
    config: Config,
    db: Database,
    pub(super) bureau: Option<Bureau>,
    sink: Option<Arc<dyn Sink>>,
}

#[derive(Default)]
pub(super) struct Trace {
    pub(super) enabled: bool,
    pub(super) lines: Vec<String>,
}

pub(super) struct Net {
    pub(super) seed: u64,
    started: Instant,
    rng: Mutex<StdRng>,
    pub(super) hosts: Mutex<Vec<HostState>>,
    pub(super) directory: RwLock<Directory>,
    pub(super) default_link: Mutex<Link>,
    pub(super) links: Mutex<HashMap<(usize, usize), Link>>,
    pub(super) partitions: Mutex<Vec<Partition>>,
    pub(super) trace: Mutex<Trace>,
    pub(super) stats: Mutex<Stats>,
    /// When the last message between two agents arrives, to keep them in order. Keyed by
    /// addresses, which are uniform already: a [`DigestMap`] spares the SipHash of 64
    /// bytes per copy.
    last_arrival: Mutex<DigestMap<(Address, Address), Instant>>,
    /// When each directed link is free again, for bandwidth limits.
    busy_until: Mutex<HashMap<(usize, usize), Instant>>,
    /// Asked for each target before a send, as the transport asks the almanac.
    pub(super) resolver: RwLock<Option<Arc<dyn Resolver>>>,
}

/// What became of one copy on its way.
enum Way {
    Arrives(Instant),
    Lost,
    Blocked,
}

impl Net {
    pub(super) fn new(seed: u64) -> Net {
        Net {
            seed,
            started: Instant::now(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            hosts: Mutex::default(),
            directory: RwLock::default(),
            default_link: Mutex::new(Link::default()),
            links: Mutex::default(),
            partitions: Mutex::default(),
            trace: Mutex::new(Trace { enabled: true, lines: Vec::new() }),
            stats: Mutex::default(),
            last_arrival: Mutex::default(),
            busy_until: Mutex::default(),
            resolver: RwLock::default(),
        }
    }

    pub(super) fn started(&self) -> Instant {
        self.started
    }

    pub(super) fn elapsed(&self) -> Duration {
        Instant::now() - self.started
    }

    pub(super) fn unix_ms(&self) -> u64 {
        EPOCH_UNIX_MS + self.elapsed().as_millis() as u64
    }

    pub(super) fn add_host(self: &Arc<Self>, name: &str, config: Config) -> Result<usize, SimError> {
        let db =
            Database::temporary().map_err(|e| SimError::Bureau { host: name.into(), source: Box::new(e.into()) })?;
        let mut hosts = self.hosts.lock();
        let id = hosts.len();
        hosts.push(HostState { name: name.into(), config, db, bureau: None, sink: None });
        drop(hosts);
        self.start(id);
        Ok(id)
    }

    fn start(self: &Arc<Self>, id: usize) {
        let mut hosts = self.hosts.lock();
        let host = &mut hosts[id];
        let bureau = Bureau::with_storage(host.config.clone(), WriteBehind::on_flush(host.db.clone()));
        let send_timeout = host.config.send_timeout;
        bureau.attach_remote(Arc::new(SimRemote { net: Arc::clone(self), host: id, send_timeout }));
        host.sink = Some(bureau.sink());
        host.bureau = Some(bureau);
    }

    pub(super) fn crash(&self, id: usize) {
        let bureau = {
            let mut hosts = self.hosts.lock();
            hosts[id].sink = None;
            hosts[id].bureau.take()
        };
        let lost_writes = bureau.map_or(0, Bureau::crash);
        self.record(|| {
            format!("crash {} ({lost_writes} storage writes not flushed, lost)", self.hosts.lock()[id].name)
        });
    }

    pub(super) fn restart(self: &Arc<Self>, id: usize) -> Result<(), SimError> {
        if self.hosts.lock()[id].bureau.is_some() {
            return Ok(());
        }
        self.record(|| format!("restart {}", self.hosts.lock()[id].name));
        self.start(id);
        Ok(())
    }

    fn record(&self, line: impl FnOnce() -> String) {
        let mut trace = self.trace.lock();
        if trace.enabled {
            let ms = self.elapsed().as_millis();
            let line = format!("{ms:>9} {}", line());
            trace.lines.push(line);
        }
    }

    fn name_of(&self, address: &Address) -> String {
        self.directory.read().get(address).map_or_else(|| address.to_string(), |(_, name)| name.clone())
    }

    fn link(&self, from: usize, to: usize) -> Link {
        let links = self.links.lock();
        // Most simulations set no link of their own: skip hashing the pair then.
        if !links.is_empty() {
            if let Some(link) = links.get(&(from, to)) {
                return link.clone();
            }
        }
        drop(links);
        self.default_link.lock().clone()
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        if self.hosts.lock()[b].sink.is_none() {
            return true;
        }
        let partitions = self.partitions.lock();
        if partitions.is_empty() {
            return false;
        }
        let now = self.elapsed();
        partitions.iter().any(|p| {
            now >= p.from
                && now < p.until
                && ((p.a.contains(&a) && p.b.contains(&b)) || (p.b.contains(&a) && p.a.contains(&b)))
        })
    }

    /// Draws the fate of one copy of `size` bytes from host `a` to host `b`, carrying a
    /// message from `sender` to `receiver` (kept in order unless the link reorders).
    fn way(&self, a: usize, b: usize, size: usize, pair: Option<(Address, Address)>) -> Way {
        if self.cut(a, b) {
            self.stats.lock().blocked += 1;
            return Way::Blocked;
        }
        let link = self.link(a, b);
        let (lost, extra) = {
            let mut rng = self.rng.lock();
            let lost = link.loss > 0.0 && rng.gen_bool(link.loss);
            let extra = if link.jitter.is_zero() { Duration::ZERO } else { link.jitter.mul_f64(rng.gen::<f64>()) };
            (lost, extra)
        };
        let now = Instant::now();
        let mut sent = now;
        if let Some(rate) = link.bytes_per_second {
            let mut busy = self.busy_until.lock();
            let free = busy.entry((a, b)).or_insert(now);
            sent = (*free).max(now) + Duration::from_secs_f64(size as f64 / rate as f64);
            *free = sent;
        }
        if lost {
            self.stats.lock().lost += 1;
            return Way::Lost;
        }
        let mut arrives = sent + link.latency + extra;
        if let (false, Some(pair)) = (link.reorder, pair) {
            let mut last = self.last_arrival.lock();
            let previous = last.entry(pair).or_insert(arrives);
            arrives = arrives.max(*previous);
            *previous = arrives;
        }
        Way::Arrives(arrives)
    }

    fn duplicates(&self, a: usize, b: usize) -> bool {
        let link = self.link(a, b);
        link.duplicate > 0.0 && self.rng.lock().gen_bool(link.duplicate)
    }

    fn sink(&self, host: usize) -> Option<Arc<dyn Sink>> {
        self.hosts.lock()[host].sink.clone()
    }

    /// Carries a message from `from` (on host `src`) to `to` until `deadline`: sent again
    /// after each loss, answered once, its acknowledgement carried back. `reply` goes with
    /// the first copy handed over, for a request.
    #[allow(clippy::too_many_arguments)]
    async fn carry(
        &self,
        src: usize,
        from: Address,
        to: Address,
        mut message: Outgoing,
        mut reply: Option<Box<dyn ReplyPath>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<usize, SendFailure> {
        let resolver = self.resolver.read().clone();
        if let Some(resolver) = resolver {
            if let Err(reason) = resolver.resolve(&to).await {
                self.stats.lock().failed += 1;
                self.record(|| format!("unroutable {} -> {}: {reason}", self.name_of(&from), self.name_of(&to)));
                return Err(SendFailure::Unroutable { to, reason });
            }
        }
        let Some(dst) = self.directory.read().get(&to).map(|(host, _)| *host) else {
            return Err(SendFailure::Unroutable { to, reason: Unroutable::UnknownAddress });
        };
        let names = || (self.name_of(&from), self.name_of(&to));
        let what = message.name;
        let link = self.link(src, dst);
        let endpoint = || format!("sim/{}", self.hosts.lock()[dst].name);
        let size = message.payload.len();
        let mut verdict: Option<Result<(), SendFailure>> = None;
        let mut reached = false;
        while Instant::now() < deadline {
            match self.way(src, dst, size, Some((from, to))) {
                Way::Blocked => {
                    self.record(|| {
                        let (sender, receiver) = names();
                        format!("blocked {sender} -> {receiver} {what}")
                    });
                    sleep_until_or(deadline, link.retransmit_after()).await;
                    continue;
                }
                Way::Lost => {
                    reached = true;
                    self.record(|| {
                        let (sender, receiver) = names();
                        format!("lost {sender} -> {receiver} {what}")
                    });
                    sleep_until_or(deadline, link.retransmit_after()).await;
                    continue;
                }
                Way::Arrives(at) => {
                    reached = true;
                    tokio::time::sleep_until(at.min(deadline)).await;
                    if at > deadline {
                        break;
                    }
                }
            }
            let Some(sink) = self.sink(dst) else { continue };
            let outcome = match &verdict {
                Some(first) => {
                    self.stats.lock().duplicates += 1;
                    self.record(|| {
                        let (sender, receiver) = names();
                        format!("again {sender} -> {receiver} {what}")
                    });
                    first.clone()
                }
                None => {
                    let payload = std::mem::take(&mut message.payload);
                    let outcome = hand_over(&sink, from, to, &message, payload, reply.take(), deadline, timeout).await;
                    match &outcome {
                        Ok(()) => {
                            self.stats.lock().delivered += 1;
                            self.record(|| {
                                let (sender, receiver) = names();
                                format!("delivered {sender} -> {receiver} {what}")
                            });
                        }
                        Err(e) => self.record(|| {
                            let (sender, receiver) = names();
                            format!("refused {sender} -> {receiver} {what}: {e}")
                        }),
                    }
                    verdict = Some(outcome.clone());
                    outcome
                }
            };
            if self.duplicates(src, dst) {
                self.stats.lock().duplicates += 1;
                self.record(|| {
                    let (sender, receiver) = names();
                    format!("duplicate {sender} -> {receiver} {what}")
                });
            }
            // The acknowledgement travels back, and may be lost too.
            match self.way(dst, src, 16, None) {
                Way::Arrives(at) if at <= deadline => {
                    tokio::time::sleep_until(at).await;
                    return outcome.map(|()| dst);
                }
                Way::Arrives(_) => break,
                Way::Lost | Way::Blocked => {
                    self.record(|| {
                        let (sender, receiver) = names();
                        format!("ack lost {receiver} -> {sender} {what}")
                    });
                    sleep_until_or(deadline, link.retransmit_after()).await;
                }
            }
        }
        self.stats.lock().failed += 1;
        self.record(|| {
            let (sender, receiver) = names();
            format!("failed {sender} -> {receiver} {what}")
        });
        if reached {
            Err(SendFailure::NotAcknowledged { to, after: timeout, endpoint: endpoint() })
        } else {
            let reason = "no route to the host (partitioned or down)".to_owned();
            Err(SendFailure::Unreachable { to, after: timeout, endpoint: endpoint(), reason })
        }
    }

    /// Carries a reply (or a failure report) from host `src` back to `requester` on host
    /// `dst` until `deadline`; true if it arrived.
    async fn carry_back(
        &self,
        src: usize,
        dst: usize,
        replier: Address,
        requester: Address,
        deadline: Instant,
    ) -> bool {
        let link = self.link(src, dst);
        let names = || (self.name_of(&replier), self.name_of(&requester));
        while Instant::now() < deadline {
            match self.way(src, dst, 64, Some((replier, requester))) {
                Way::Arrives(at) if at <= deadline => {
                    tokio::time::sleep_until(at).await;
                    if self.sink(dst).is_some() {
                        self.stats.lock().delivered += 1;
                        self.record(|| {
                            let (sender, receiver) = names();
                            format!("replied {sender} -> {receiver}")
                        });
                        return true;
                    }
                }
                Way::Arrives(_) => break,
                Way::Lost | Way::Blocked => {
                    self.record(|| {
                        let (sender, receiver) = names();
                        format!("reply lost {sender} -> {receiver}")
                    });
                    sleep_until_or(deadline, link.retransmit_after()).await;
                }
            }
        }
        self.stats.lock().failed += 1;
        self.record(|| {
            let (sender, receiver) = names();
            format!("reply failed {sender} -> {receiver}")
        });
        false
    }
}

async fn sleep_until_or(deadline: Instant, pause: Duration) {
    tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
}

/// Hands a message to the receiving host's agents, as the transport's inbound side does.
#[allow(clippy::too_many_arguments)]
async fn hand_over(
    sink: &Arc<dyn Sink>,
    from: Address,
    to: Address,
    message: &Outgoing,
    payload: Vec<u8>,
    reply: Option<Box<dyn ReplyPath>>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), SendFailure> {
    let when_handled = sink.acknowledges_when_handled(&to) == Some(true);
    let (handled, was_handled) = if when_handled {
        let (tx, rx) = oneshot::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let delivery = Box::new(Delivery {
        from,
        schema: message.schema,
        name: message.name,
        session: message.header.session,
        trace_id: message.header.trace_id,
        body: Body::Json(payload),
        reply: reply.map(ReplyTo::Remote),
        handled,
    });
    match sink.offer(to, delivery) {
        Ok(()) => {}
        Err(Blocked::Failed(failure, _)) => return Err(failure),
        Err(Blocked::Full(tx, delivery)) => {
            crate::router::wait_for_space(tx, to, delivery, Some(deadline), timeout).await.map_err(|(f, _)| f)?
        }
    }
    if let Some(was_handled) = was_handled {
        // Dropped unhandled (the agent stopped first) counts as not acknowledged.
        if tokio::time::timeout_at(deadline, was_handled).await.map(|r| r.is_ok()) != Ok(true) {
            return Err(SendFailure::NotAcknowledged { to, after: timeout, endpoint: "sim".into() });
        }
    }
    Ok(())
}

/// The simulated network as one host's way out.
struct SimRemote {
    net: Arc<Net>,
    host: usize,
    send_timeout: Duration,
}

#[async_trait::async_trait]
impl RemoteSend for SimRemote {
    async fn send(
        &self,
        from: &Identity,
        to: Address,
        message: Outgoing,
        timeout: Duration,
    ) -> Result<(), SendFailure> {
        let deadline = Instant::now() + timeout;
        self.net.carry(self.host, from.address(), to, message, None, deadline, timeout).await.map(drop)
    }

    async fn request(
        &self,
        from: &Identity,
        to: Address,
        message: Outgoing,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Incoming, RequestError> {
        let (back, answer) = oneshot::channel();
        let path = SimReply { net: Arc::clone(&self.net), requester: from.address(), host: self.host, deadline, back };
        let message = Outgoing { header: Header { expects_reply: true, ..message.header }, ..message };
        self.net
            .carry(self.host, from.address(), to, message, Some(Box::new(path)), deadline, timeout)
            .await
            .map_err(RequestError::Send)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            // The replier's host crashed with the request: nothing comes back.
            Ok(Err(_)) => {
                tokio::time::sleep_until(deadline).await;
                Err(RequestError::Timeout { to, after: timeout })
            }
            Err(_) => Err(RequestError::Timeout { to, after: timeout }),
        }
    }

    fn delivery_timeout(&self) -> Duration {
        self.send_timeout
    }
}

/// The way back to a requester on another simulated host.
struct SimReply {
    net: Arc<Net>,
    requester: Address,
    /// The requester's host.
    host: usize,
    deadline: Instant,
    back: oneshot::Sender<Result<Incoming, RequestError>>,
}

impl SimReply {
    async fn answer(self, from: Address, answer: Result<Incoming, RequestError>) -> bool {
        let Some(src) = self.net.directory.read().get(&from).map(|(host, _)| *host) else { return false };
        if !self.net.carry_back(src, self.host, from, self.requester, self.deadline).await {
            return false;
        }
        self.back.send(answer).is_ok()
    }
}

#[async_trait::async_trait]
impl ReplyPath for SimReply {
    fn requester(&self) -> Address {
        self.requester
    }

    async fn reply(
        self: Box<Self>,
        from: &Identity,
        schema: SchemaDigest,
        payload: Vec<u8>,
        _protocol: Option<ProtocolDigest>,
        timeout: Duration,
    ) -> Result<(), ReplyError> {
        let to = self.requester;
        let endpoint = format!("sim/{}", self.net.hosts.lock()[self.host].name);
        if self.answer(from.address(), Ok(Incoming { schema, payload })).await {
            Ok(())
        } else {
            Err(ReplyError::Send(SendFailure::NotAcknowledged { to, after: timeout, endpoint }))
        }
    }

    async fn fail(self: Box<Self>, from: &Identity, failure: RequestFailure, _timeout: Duration) {
        let error = match failure {
            RequestFailure::NoReply => RequestError::NoReply { to: from.address() },
            RequestFailure::HandlerFailed(reason) => RequestError::HandlerFailed { to: from.address(), reason },
        };
        // A failure report lost on the way back ends the request as timed out, which is
        // what the requester would see on a real network: nothing more to do here.
        self.answer(from.address(), Err(error)).await;
    }
}
