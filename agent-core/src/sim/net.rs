//! The simulated network: hosts, links, partitions, and how one message crosses.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::flight::{Flight, Outcome};
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
    pub(super) config: Config,
    db: Database,
    pub(super) bureau: Option<Bureau>,
    /// Its storage refuses writes ([`Host::fail_storage`](super::Host::fail_storage)),
    /// across restarts until healed.
    pub(super) storage_down: bool,
}

#[derive(Default)]
pub(super) struct Trace {
    pub(super) lines: Vec<String>,
}

pub(super) struct Net {
    pub(super) seed: u64,
    started: Instant,
    pub(super) hosts: Mutex<Vec<HostState>>,
    pub(super) directory: RwLock<Directory>,
    /// Everything a copy's way reads or changes, under one lock taken once per copy.
    pub(super) wire: Mutex<Wire>,
    /// Whether [`trace`](Self::trace) records: read on every event, so not behind its lock.
    pub(super) tracing: AtomicBool,
    pub(super) trace: Mutex<Trace>,
    /// Asked for each target before a send, as the transport asks the almanac.
    pub(super) resolver: RwLock<Option<Arc<dyn Resolver>>>,
    /// The task that moves messages in flight (see [`flight`](super::flight)).
    pub(super) driver: Mutex<Option<tokio::task::AbortHandle>>,
    /// Wakes the driver when a message is scheduled earlier than the driver sleeps to.
    pub(super) wake: tokio::sync::Notify,
}

/// The network's mutable state: links, partitions, the seeded generator, the counters,
/// and the messages in flight.
pub(super) struct Wire {
    rng: StdRng,
    pub(super) stats: Stats,
    pub(super) default_link: Link,
    pub(super) links: HashMap<(usize, usize), Link>,
    pub(super) partitions: Vec<Partition>,
    /// Each host's way in; none while it is down.
    sinks: Vec<Option<Arc<dyn Sink>>>,
    /// When the last message in flight between two agents arrives, to keep them in order;
    /// an entry goes once that message has arrived, so the map holds only pairs with a
    /// message in flight. Keyed by addresses, which are uniform already: a [`DigestMap`]
    /// spares the SipHash of 64 bytes per copy.
    last_arrival: DigestMap<(Address, Address), Instant>,
    /// When each directed link is free again, for bandwidth limits.
    busy_until: HashMap<(usize, usize), Instant>,
    pub(super) flights: super::flight::Flights,
}

/// The link from host `from` to host `to`.
fn link_between<'a>(links: &'a HashMap<(usize, usize), Link>, default: &'a Link, from: usize, to: usize) -> &'a Link {
    // Most simulations set no link of their own: skip hashing the pair then.
    if links.is_empty() {
        return default;
    }
    links.get(&(from, to)).unwrap_or(default)
}

/// What became of one copy on its way.
pub(super) enum Way {
    Arrives(Instant),
    Lost,
    Blocked,
}

impl Wire {
    fn link(&self, from: usize, to: usize) -> &Link {
        link_between(&self.links, &self.default_link, from, to)
    }

    /// How long a sender on `a` waits for an acknowledgement from `b` before it sends again.
    pub(super) fn retransmit_after(&self, a: usize, b: usize) -> Duration {
        self.link(a, b).retransmit_after()
    }

    /// How long a sender on `a` waits before it sends to `b` again, if the copy went `way`:
    /// nothing to wait for when it arrives (most copies, so the link is not looked up).
    pub(super) fn pause_after(&self, way: &Way, a: usize, b: usize) -> Duration {
        match way {
            Way::Arrives(_) => Duration::ZERO,
            Way::Lost | Way::Blocked => self.retransmit_after(a, b),
        }
    }

    fn cut(&self, a: usize, b: usize, elapsed: Duration) -> bool {
        if self.sinks[b].is_none() {
            return true;
        }
        self.partitions.iter().any(|p| {
            elapsed >= p.from
                && elapsed < p.until
                && ((p.a.contains(&a) && p.b.contains(&b)) || (p.b.contains(&a) && p.a.contains(&b)))
        })
    }

    /// Draws the fate of one copy of `size` bytes from host `a` to host `b` sent at `now`
    /// (`elapsed` into the simulation), carrying a message from `sender` to `receiver`
    /// (kept in order unless the link reorders).
    pub(super) fn way(
        &mut self,
        now: Instant,
        elapsed: Duration,
        a: usize,
        b: usize,
        size: usize,
        pair: Option<(Address, Address)>,
    ) -> Way {
        if self.cut(a, b, elapsed) {
            self.stats.blocked += 1;
            return Way::Blocked;
        }
        let link = link_between(&self.links, &self.default_link, a, b);
        let lost = link.loss > 0.0 && self.rng.gen_bool(link.loss);
        let extra = if link.jitter.is_zero() { Duration::ZERO } else { link.jitter.mul_f64(self.rng.gen::<f64>()) };
        let (latency, reorder) = (link.latency, link.reorder);
        let mut sent = now;
        if let Some(rate) = link.bytes_per_second {
            let free = self.busy_until.entry((a, b)).or_insert(now);
            sent = (*free).max(now) + Duration::from_secs_f64(size as f64 / rate as f64);
            *free = sent;
        }
        if lost {
            self.stats.lost += 1;
            return Way::Lost;
        }
        let mut arrives = sent + latency + extra;
        if let (false, Some(pair)) = (reorder, pair) {
            let previous = self.last_arrival.entry(pair).or_insert(arrives);
            arrives = arrives.max(*previous);
            *previous = arrives;
        }
        Way::Arrives(arrives)
    }

    /// A message between `pair` that [`way`](Self::way) said arrives `at` has arrived: if
    /// no later one is in flight, the pair needs no ordering entry any more.
    pub(super) fn arrived(&mut self, pair: (Address, Address), at: Instant) {
        if self.last_arrival.get(&pair) == Some(&at) {
            self.last_arrival.remove(&pair);
        }
    }

    /// Whether a copy delivered from `a` to `b` arrives a second time.
    pub(super) fn duplicates(&mut self, a: usize, b: usize) -> bool {
        let duplicate = self.link(a, b).duplicate;
        duplicate > 0.0 && self.rng.gen_bool(duplicate)
    }

    pub(super) fn sink(&self, host: usize) -> Option<Arc<dyn Sink>> {
        self.sinks[host].clone()
    }
}

impl Net {
    pub(super) fn new(seed: u64) -> Net {
        Net {
            seed,
            started: Instant::now(),
            hosts: Mutex::default(),
            directory: RwLock::default(),
            wire: Mutex::new(Wire {
                rng: StdRng::seed_from_u64(seed),
                stats: Stats::default(),
                default_link: Link::default(),
                links: HashMap::new(),
                partitions: Vec::new(),
                sinks: Vec::new(),
                last_arrival: DigestMap::default(),
                busy_until: HashMap::new(),
                flights: super::flight::Flights::default(),
            }),
            tracing: AtomicBool::new(true),
            trace: Mutex::default(),
            resolver: RwLock::default(),
            driver: Mutex::default(),
            wake: tokio::sync::Notify::new(),
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
        hosts.push(HostState { name: name.into(), config, db, bureau: None, storage_down: false });
        self.wire.lock().sinks.push(None);
        drop(hosts);
        self.start(id);
        Ok(id)
    }

    fn start(self: &Arc<Self>, id: usize) {
        let mut hosts = self.hosts.lock();
        let host = &mut hosts[id];
        let storage = WriteBehind::on_flush(host.db.clone());
        storage.refuse_writes(host.storage_down);
        let bureau = Bureau::with_storage(host.config.clone(), storage);
        let send_timeout = host.config.send_timeout;
        bureau.attach_remote(Arc::new(SimRemote { net: Arc::clone(self), host: id, send_timeout }));
        self.wire.lock().sinks[id] = Some(bureau.sink());
        host.bureau = Some(bureau);
    }

    pub(super) fn crash(&self, id: usize) {
        let bureau = {
            let mut hosts = self.hosts.lock();
            self.wire.lock().sinks[id] = None;
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

    pub(super) fn record(&self, line: impl FnOnce() -> String) {
        if self.tracing.load(Ordering::Relaxed) {
            let ms = self.elapsed().as_millis();
            let line = format!("{ms:>9} {}", line());
            self.trace.lock().lines.push(line);
        }
    }

    pub(super) fn name_of(&self, address: &Address) -> String {
        self.directory.read().get(address).map_or_else(|| address.to_string(), |placed| placed.name.clone())
    }

    /// The simulated endpoint of host `id`, for failures.
    pub(super) fn endpoint(&self, id: usize) -> String {
        format!("sim/{}", self.hosts.lock()[id].name)
    }

    /// Carries `flight`'s message to its receiver until its deadline: sent again after
    /// each loss, answered once, its acknowledgement carried back. Returns the receiver's
    /// host. The flight is boxed before this waits, so the future stays small.
    async fn carry(self: &Arc<Self>, mut flight: Box<Flight>, outcome: Outcome) -> Result<usize, SendFailure> {
        let (from, to, timeout) = (flight.from(), flight.to(), flight.timeout());
        let resolver = self.resolver.read().clone();
        if let Some(resolver) = resolver {
            if let Err(reason) = resolver.resolve(&to).await {
                self.wire.lock().stats.failed += 1;
                self.record(|| format!("unroutable {} -> {}: {reason}", self.name_of(&from), self.name_of(&to)));
                return Err(SendFailure::Unroutable { to, reason });
            }
        }
        let Some((dst, when_handled)) = self.directory.read().get(&to).map(|to| (to.host, to.when_handled)) else {
            return Err(SendFailure::Unroutable { to, reason: Unroutable::UnknownAddress });
        };
        flight.set_destination(dst, when_handled);
        self.attempt(flight, Instant::now());
        match outcome.await {
            Ok(outcome) => outcome,
            // The simulation was dropped with the message in flight.
            Err(_) => Err(SendFailure::NotAcknowledged { to, after: timeout, endpoint: self.endpoint(dst) }),
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
        let names = || (self.name_of(&replier), self.name_of(&requester));
        let pair = (replier, requester);
        while Instant::now() < deadline {
            let (way, pause) = {
                let mut wire = self.wire.lock();
                let way = wire.way(Instant::now(), self.elapsed(), src, dst, 64, Some(pair));
                (way, wire.retransmit_after(src, dst))
            };
            match way {
                Way::Arrives(at) if at <= deadline => {
                    tokio::time::sleep_until(at).await;
                    let mut wire = self.wire.lock();
                    wire.arrived(pair, at);
                    if wire.sinks[dst].is_some() {
                        wire.stats.delivered += 1;
                        drop(wire);
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
                    tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
                }
            }
        }
        self.wire.lock().stats.failed += 1;
        self.record(|| {
            let (sender, receiver) = names();
            format!("reply failed {sender} -> {receiver}")
        });
        false
    }
}

/// How handing a message over went: done at once, or waiting (for room in a full mailbox
/// whose agent waits, or for the handler of an agent that acknowledges once handled).
pub(super) enum HandOver {
    Done(Result<(), SendFailure>),
    Waits(Pin<Box<dyn Future<Output = Result<(), SendFailure>> + Send>>),
}

/// Hands a message to the receiving host's agents, as the transport's inbound side does;
/// `when_handled` if the receiver acknowledges once its handler ran.
#[allow(clippy::too_many_arguments)]
pub(super) fn hand_over(
    sink: &Arc<dyn Sink>,
    from: Address,
    to: Address,
    message: &Outgoing,
    payload: Vec<u8>,
    reply: Option<Box<dyn ReplyPath>>,
    when_handled: bool,
    deadline: Instant,
    timeout: Duration,
) -> HandOver {
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
    let waits_for_room = match sink.offer(to, delivery) {
        Ok(()) => None,
        Err(Blocked::Failed(failure, _)) => return HandOver::Done(Err(failure)),
        Err(Blocked::Full(tx, delivery)) => Some((tx, delivery)),
    };
    if waits_for_room.is_none() && was_handled.is_none() {
        return HandOver::Done(Ok(()));
    }
    HandOver::Waits(Box::pin(async move {
        if let Some((tx, delivery)) = waits_for_room {
            crate::router::wait_for_space(tx, to, delivery, Some(deadline), timeout).await.map_err(|(f, _)| f)?;
        }
        if let Some(was_handled) = was_handled {
            // Dropped unhandled (the agent stopped first) counts as not acknowledged.
            if tokio::time::timeout_at(deadline, was_handled).await.map(|r| r.is_ok()) != Ok(true) {
                return Err(SendFailure::NotAcknowledged { to, after: timeout, endpoint: "sim".into() });
            }
        }
        Ok(())
    }))
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
        let (flight, outcome) = Flight::new(self.host, from.address(), to, message, None, deadline, timeout);
        self.net.carry(flight, outcome).await.map(drop)
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
        let (flight, outcome) =
            Flight::new(self.host, from.address(), to, message, Some(Box::new(path)), deadline, timeout);
        self.net.carry(flight, outcome).await.map_err(RequestError::Send)?;
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
        let Some(src) = self.net.directory.read().get(&from).map(|placed| placed.host) else { return false };
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
