//! Agents across processes and machines: the libp2p transport.
//!
//! A bureau that [listens](crate::Bureau::listen) becomes a network node: one libp2p swarm
//! (TCP with noise and yamux, and QUIC) for all its agents, one connection per peer
//! process, and on it one long-lived stream per direction carrying length-prefixed
//! frames (docs/wire-format.md). Handlers do not change: `ctx.send` and `ctx.request` reach a remote
//! agent exactly as a local one, resolved through a [`Resolver`].
//!
//! ## Delivery
//! Every envelope sent ends in exactly one [`Outcome`]: delivered (the receiver queued it
//! for the agent and acknowledged), rejected (with a typed [`Rejection`]), unroutable (why),
//! unreachable (never written to the peer, with the last failure) or timed out (written,
//! not acknowledged: after how long, to which endpoint). Each envelope's own deadline holds
//! through the outbound queue, reconnects and retries. Envelopes to one peer keep their
//! order; see "Order" below. A broken connection is re-established with backoff and
//! unacknowledged envelopes are resent, in order, with the same nonce: the receiver
//! remembers the verdict it gave each (sender, nonce) and answers a copy with it, so the
//! handler runs at most once and a refused envelope is never reported delivered.
//! Heartbeats detect a silent connection; a link with nothing to carry for
//! [`NetworkConfig::with_idle_timeout`] is closed, and reopened by the next envelope. A
//! connection on which the peer went silent, or on which a stream cannot be opened in
//! time, is closed too, so that the next attempt dials a fresh one.
//!
//! For tests, [`NetworkConfig::over_memory`] runs all of this over libp2p's in-memory
//! transport, with faults injected under noise ([`WireFaults`](crate::net::WireFaults)).
//!
//! A message bigger than a frame fails at the sender ([`SendFailure::TooLarge`](crate::SendFailure::TooLarge)),
//! before it is sealed. A receiver whose agent's mailbox is full and waits for room keeps
//! serving the other agents on the connection: envelopes for the full one wait in a line
//! of their own, and are acknowledged when queued.
//!
//! ## Order
//! Sends and requests from one agent to one target arrive in the order they were issued,
//! including across resends and while they wait for room in a full mailbox. Replies go back
//! on the request's stream and are ordered with the other replies on it, not with
//! messages the replier sends on its own.
//!
//! ## Authentication
//! [`Auth::Signed`]: every envelope carries its sender's signature (always used for
//! anything stored or forwarded). [`Auth::Bound`] (the default): each agent signs once a
//! short-lived [`Binding`] of its address to this node's noise-authenticated peer id, and
//! the receiver accepts that agent's unsigned envelopes on that stream until the binding
//! expires. Either way the receiver checks expiry, clock skew, size and schema, and
//! refuses replays, including across its own restart: every envelope it accepts is stamped
//! below a ceiling stored (with the agents' storage) before the envelope is acknowledged,
//! and after a restart an envelope stamped below the ceilings left is refused as
//! [`Cause::MayHaveBeenHandled`], so nothing accepted before a crash is handled again.
//! This needs the bureau's storage on disk ([`Config::with_storage_dir`](crate::Config::with_storage_dir));
//! a node keeping storage in memory only refuses envelopes sealed before it started, which
//! leaves envelopes stamped ahead of the clock (up to the allowed skew) open to a second
//! handling after a fast restart. A peer sending envelopes that fail
//! authentication is disconnected and kept out for a while.

mod binding;
mod busy_poll;
mod ceiling;
pub(crate) mod frame;
mod inbound;
mod link;
mod node;
mod remote;
mod resolver;
mod sink;
mod tasks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

pub use binding::{Binding, BindingError};
pub use frame::Auth;
pub use node::{NetworkInfo, NetworkStats};
pub use remote::RequestFailed;
pub use resolver::{Endpoint, Resolver, StaticResolver};

pub(crate) use inbound::accept_loop;
pub(crate) use node::start;
pub(crate) use remote::Remote;
pub(crate) use sink::Sink;
pub(crate) use tasks::Ended;

use crate::envelope::{Envelope, ReplayGuard};
use crate::error::{Cause, Rejection, Unroutable};
use crate::identity::{Address, Identity};

/// The libp2p protocol of the envelope stream.
pub const PROTOCOL: &str = "/agora/envelope/2";

/// Routes learned from inbound connections, at most (then an arbitrary eighth is forgotten).
pub(crate) const MAX_LEARNED: usize = 100_000;

/// How one envelope's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver accepted the envelope and queued it for its agent.
    Delivered,
    /// The receiver refused it, for this reason. It was not handled, unless
    /// [`Rejection::may_have_been_handled`] says an earlier copy may have been.
    Rejected(Rejection),
    /// No route: it was not sent.
    Unroutable(Unroutable),
    /// Not sent: the peer could not be reached before the deadline (or the queue to it
    /// stayed full), so nothing was written to it and it was not handled.
    Unreachable {
        /// The deadline.
        after: Duration,
        /// The endpoint tried.
        endpoint: String,
        /// The last failure seen while trying.
        reason: String,
    },
    /// Written to the peer, but no acknowledgement within the deadline; it may or may not
    /// have been handled.
    TimedOut {
        /// The deadline.
        after: Duration,
        /// The endpoint tried.
        endpoint: String,
    },
}

/// Settings of a network node. Defaults are listed on each setter.
#[derive(Clone)]
pub struct NetworkConfig {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) keypair: Option<libp2p::identity::Keypair>,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) auth: Auth,
    pub(crate) max_frame: usize,
    pub(crate) window: usize,
    pub(crate) queue: usize,
    pub(crate) delivery_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) binding_lifetime: Duration,
    pub(crate) max_connections: u32,
    pub(crate) max_requests_in_flight: usize,
    pub(crate) replay_capacity: usize,
    pub(crate) busy_poll: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) unused_connection_timeout: Duration,
    /// Over libp2p's in-memory transport with these faults, instead of TCP and QUIC.
    pub(crate) memory: Option<crate::net::WireFaults>,
}

impl NetworkConfig {
    /// The default of [`with_busy_poll`](Self::with_busy_poll).
    pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);

    /// The default of [`with_unused_connection_timeout`](Self::with_unused_connection_timeout).
    pub const DEFAULT_UNUSED_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

    /// A node listening on `listen` (for example `/ip4/127.0.0.1/tcp/0` or
    /// `/ip4/127.0.0.1/udp/0/quic-v1`) that resolves addresses with `resolver`.
    pub fn new(listen: Vec<Multiaddr>, resolver: Arc<dyn Resolver>) -> Self {
        NetworkConfig {
            listen,
            keypair: None,
            resolver,
            auth: Auth::Bound,
            max_frame: (1 << 20) + 4096,
            window: 1024,
            queue: 4096,
            delivery_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(5),
            binding_lifetime: Duration::from_secs(600),
            max_connections: 256,
            max_requests_in_flight: 1024,
            replay_capacity: 1_000_000,
            busy_poll: Self::DEFAULT_BUSY_POLL,
            idle_timeout: Duration::from_secs(60),
            unused_connection_timeout: Self::DEFAULT_UNUSED_CONNECTION_TIMEOUT,
            memory: None,
        }
    }

    /// The node's libp2p identity (default: fresh). Keep it to keep the peer id.
    pub fn with_keypair(mut self, keypair: libp2p::identity::Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// How envelopes sent from here are authenticated (default [`Auth::Bound`]).
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Largest frame accepted from a peer (default 1 MiB + 4 KiB); a larger one closes the
    /// connection.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Envelopes in flight (sent, not yet acknowledged) per peer (default 1024).
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window.max(1);
        self
    }

    /// Default deadline of a delivery when the sender gives none (default 10 s).
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Incoming connections, at most, pending or established (default 256); more are
    /// refused. Each peer may hold a few connections at most, whatever this says.
    pub fn with_max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections;
        self
    }

    /// Requests one peer may have in flight here, at most: received, not yet answered
    /// (default 1024). A request beyond it is rejected at once, with that reason, so a
    /// peer cannot queue unbounded work on this node's agents.
    pub fn with_max_requests_in_flight(mut self, requests: usize) -> Self {
        self.max_requests_in_flight = requests.max(1);
        self
    }

    /// Nonces the replay guard holds, all senders together (default 1,000,000, about
    /// 100 MB at most). Each sender keeps at most a window of recent nonces
    /// ([`WINDOW_PER_SENDER`](crate::envelope::WINDOW_PER_SENDER)), so this bounds how many
    /// senders can be active within an envelope lifetime, not how fast one may send.
    pub fn with_replay_capacity(mut self, nonces: usize) -> Self {
        self.replay_capacity = nonces;
        self
    }

    /// Heartbeat period (default 5 s); a connection silent for three periods is closed.
    pub fn with_heartbeat(mut self, period: Duration) -> Self {
        self.heartbeat = period;
        self
    }

    /// How long a stream keeps polling for an answer it expects soon, instead of putting
    /// its thread to sleep (default [`DEFAULT_BUSY_POLL`](Self::DEFAULT_BUSY_POLL),
    /// 100 us; zero turns it off).
    ///
    /// After writing a frame that a peer will answer (an envelope awaiting its
    /// acknowledgement, or the acknowledgements and replies a requester is waiting for),
    /// the stream's task yields to the runtime in a loop for up to this long; the runtime
    /// keeps polling its sockets without sleeping, and runs every other task meanwhile.
    /// Waking a sleeping thread costs tens of microseconds on virtual machines (more than
    /// the rest of a loopback round trip), so this more than doubles one-at-a-time round
    /// trips there, at the price of up to this much busy CPU time per exchange.
    pub fn with_busy_poll(mut self, budget: Duration) -> Self {
        self.busy_poll = budget;
        self
    }

    /// How long a link or connection with nothing to carry stays open (default 60 s).
    /// Then it is closed, so that peers talked to once do not keep places in connection
    /// limits (theirs and this node's); the next envelope opens it again.
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = idle.max(Duration::from_millis(20));
        self
    }

    /// How long a connection with no stream open stays open (default
    /// [`DEFAULT_UNUSED_CONNECTION_TIMEOUT`](Self::DEFAULT_UNUSED_CONNECTION_TIMEOUT), 10 s;
    /// never longer than the [idle timeout](Self::with_idle_timeout)).
    ///
    /// Every link and inbound envelope stream keeps its connection open while it lives, so
    /// this only closes connections nothing uses: a peer that finished the handshake and
    /// opened no stream, or one whose streams all closed. Without it such peers would hold
    /// places under [`with_max_connections`](Self::with_max_connections) for the whole idle
    /// timeout, and a few hundred of them, which cost only a handshake each, would keep
    /// every new peer out.
    pub fn with_unused_connection_timeout(mut self, unused: Duration) -> Self {
        self.unused_connection_timeout = unused;
        self
    }

    /// Lifetime of the session bindings this node's agents sign (default 10 min).
    pub fn with_binding_lifetime(mut self, lifetime: Duration) -> Self {
        self.binding_lifetime = lifetime;
        self
    }

    /// Runs the node over libp2p's in-memory transport instead of TCP and QUIC, every
    /// connection under `faults` (see [`WireFaults`](crate::net::WireFaults)): for tests
    /// of the transport under broken, silent and slow connections, with no socket. Listen
    /// on `/memory/0` (a free `/memory/N` is picked) and publish the addresses the node
    /// reports; such a node reaches only other in-memory nodes of the same process.
    pub fn over_memory(mut self, faults: crate::net::WireFaults) -> Self {
        self.memory = Some(faults);
        self
    }
}

impl std::fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkConfig").field("listen", &self.listen).field("auth", &self.auth).finish_non_exhaustive()
    }
}

/// A reply or failure coming back for a request sent over the network.
pub(crate) type RemoteReply = oneshot::Sender<Envelope>;

/// A reply to send back on the stream its request came on.
pub(crate) struct BackReply {
    pub(crate) sender: Address,
    pub(crate) binding: Option<Binding>,
    pub(crate) auth: Auth,
    pub(crate) bytes: Vec<u8>,
    pub(crate) done: oneshot::Sender<Outcome>,
}

/// A link to one peer, as the node holds it: its queue, and a signal of its task's end.
pub(crate) struct Link {
    pub(crate) queue: mpsc::Sender<Outbound>,
    ended: tokio::sync::watch::Receiver<()>,
}

/// One envelope waiting to go to a peer.
pub(crate) struct Outbound {
    pub(crate) sender: Address,
    pub(crate) bytes: Vec<u8>,
    pub(crate) auth: Auth,
    pub(crate) binding: Option<Binding>,
    pub(crate) deadline: tokio::time::Instant,
    pub(crate) timeout: Duration,
    pub(crate) done: oneshot::Sender<Outcome>,
}

/// The running node, shared by the bureau's contexts and the node's tasks.
pub(crate) struct Network {
    pub(crate) info: NetworkInfo,
    pub(crate) config: NetworkConfig,
    pub(crate) control: libp2p_stream::Control,
    pub(crate) commands: mpsc::Sender<node::Command>,
    pub(crate) links: Mutex<HashMap<PeerId, Link>>,
    /// Requests sent from here awaiting a reply: (requester, request nonce) → (target, slot).
    pub(crate) pending: Mutex<HashMap<(Address, u64), (Address, RemoteReply)>>,
    pub(crate) replay: Mutex<ReplayGuard>,
    /// Resends waiting for the verdict of their first copy, still being delivered:
    /// (sender, nonce) → where each resend's acknowledgement goes.
    pub(crate) awaiting_first: Mutex<HashMap<(Address, u64), Vec<inbound::LaterAck>>>,
    /// Envelopes waiting their turn, by (sender, target), across all streams.
    pub(crate) lines: inbound::LineMap,
    /// How many entries `awaiting_first` has, read without its lock.
    pub(crate) awaiting_count: std::sync::atomic::AtomicUsize,
    /// The durable ceiling on accepted timestamps, which keeps a restart from handling an
    /// envelope twice.
    pub(crate) ceiling: ceiling::Ceiling,
    pub(crate) bindings: Mutex<HashMap<Address, Binding>>,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// Agents authenticated on inbound connections, by the peer that hosts them, so that
    /// replies find their way back without a resolver entry. Bounded by [`MAX_LEARNED`].
    pub(crate) learned: Mutex<HashMap<Address, PeerId>>,
    /// Established connections, kept by the swarm task.
    pub(crate) connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Spawns the node's tasks, so that a shutdown can wait for them ([`tasks::Ended`]).
    pub(crate) tasks: tasks::Tasks,
}

/// What a frame adds to the envelope it carries: tag, sequence number, authentication mode.
const ENVELOPE_FRAME_OVERHEAD: usize = 1 + 8 + 1;

impl Network {
    /// What the node holds open right now.
    pub(crate) fn stats(&self) -> NetworkStats {
        NetworkStats {
            connections: self.connections.load(std::sync::atomic::Ordering::Relaxed),
            links: self.links.lock().len(),
            pending_requests: self.pending.lock().len(),
        }
    }

    /// The largest payload an envelope from here may carry: it must fit in one frame.
    pub(crate) fn max_payload(&self) -> usize {
        self.config.max_frame.saturating_sub(ENVELOPE_FRAME_OVERHEAD + crate::envelope::MAX_OVERHEAD)
    }

    /// Resolves `to` and queues `bytes` for it; the returned outcome is final.
    pub(crate) async fn send(
        self: &Arc<Self>,
        identity: Option<&Identity>,
        to: Address,
        bytes: Vec<u8>,
        auth: Auth,
        timeout: Duration,
    ) -> Outcome {
        let mut peer = None;
        let outcome = self.send_to_peer(identity, to, bytes, auth, timeout, &mut peer).await;
        crate::metrics::outcome(peer.as_ref(), &outcome);
        outcome
    }

    /// [`send`](Self::send), telling through `peer` which peer `to` resolved to.
    async fn send_to_peer(
        self: &Arc<Self>,
        identity: Option<&Identity>,
        to: Address,
        bytes: Vec<u8>,
        auth: Auth,
        timeout: Duration,
        peer: &mut Option<PeerId>,
    ) -> Outcome {
        if bytes.len() + ENVELOPE_FRAME_OVERHEAD > self.config.max_frame {
            let detail = format!("{} bytes; frames carry at most {}", bytes.len(), self.config.max_frame);
            return Outcome::Rejected(Rejection::new(Cause::TooLarge, detail));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // Most resolutions are answered from memory: only a pending one gets a timer.
        let resolution = match futures::FutureExt::now_or_never(self.config.resolver.resolve(&to)) {
            Some(resolved) => Ok(resolved),
            None => tokio::time::timeout_at(deadline, self.config.resolver.resolve(&to)).await,
        };
        let endpoint = match resolution {
            Ok(Ok(endpoint)) => endpoint,
            Ok(Err(reason)) => match self.learned.lock().get(&to) {
                // An agent that reached us over a connection is answered over it.
                Some(peer_id) => Endpoint { peer_id: *peer_id, addrs: Vec::new() },
                None => return Outcome::Unroutable(reason),
            },
            Err(_) => return Outcome::Unroutable(Unroutable::ResolverUnavailable("resolution timed out".into())),
        };
        *peer = Some(endpoint.peer_id);
        let (auth, binding) = match (auth, identity) {
            (Auth::Bound, Some(identity)) => (Auth::Bound, Some(self.binding_for(identity))),
            _ => (Auth::Signed, None),
        };
        let sender = identity.map(Identity::address).unwrap_or_else(|| Address::from_bytes([0; 32]));
        let (done, outcome) = oneshot::channel();
        let outbound = Outbound { sender, bytes, auth, binding, deadline, timeout, done };
        let queue_full = || Outcome::Unreachable {
            after: timeout,
            endpoint: endpoint.to_string(),
            reason: "the queue to this peer stayed full".into(),
        };
        let stopped = || Outcome::Rejected(Rejection::new(Cause::NodeStopped, "the connection task has stopped"));
        let mut outbound = outbound;
        // A second try only if the first link had just retired, being idle.
        for attempt in 0..2 {
            let link = self.link(&endpoint);
            match link.try_send(outbound) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Closed(back)) if attempt == 0 && !*self.stop.borrow() => outbound = back,
                Err(mpsc::error::TrySendError::Closed(_)) => return stopped(),
                // The queue is full: wait for room, within the deadline.
                Err(mpsc::error::TrySendError::Full(back)) => {
                    match tokio::time::timeout_at(deadline, link.send(back)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(_)) => return stopped(),
                        Err(_) => return queue_full(),
                    }
                }
            }
        }
        // The link reports every envelope it took, at the latest at its deadline (no
        // timer here: one per message would cost more than the rest of a send).
        outcome.await.unwrap_or_else(|_| Outcome::TimedOut { after: timeout, endpoint: endpoint.to_string() })
    }

    /// The sending half of the link to `endpoint`'s peer, started on first use. A link
    /// that retired (idle) or whose task ended (the node stopped) is replaced; the new one
    /// starts sending only once the old one has finished what it took, so that envelopes
    /// to one peer never overtake each other.
    fn link(self: &Arc<Self>, endpoint: &Endpoint) -> mpsc::Sender<Outbound> {
        let mut links = self.links.lock();
        let previous = match links.get(&endpoint.peer_id) {
            Some(link) if !link.queue.is_closed() => return link.queue.clone(),
            Some(link) => Some(link.ended.clone()),
            None => None,
        };
        // Links of peers gone idle are retired (closed); forget them when adding one.
        links.retain(|_, link| !link.queue.is_closed());
        let (tx, rx) = mpsc::channel(self.config.queue);
        let (ended_tx, ended) = tokio::sync::watch::channel(());
        let span = tracing::debug_span!("link", peer = %endpoint.peer_id);
        let (net, endpoint_owned) = (Arc::clone(self), endpoint.clone());
        let run = async move {
            if let Some(mut previous) = previous {
                // Ends with an error once the old link's task has dropped its sender.
                while previous.changed().await.is_ok() {}
            }
            link::run(net, endpoint_owned, rx).await;
            drop(ended_tx);
        };
        self.tasks.spawn(tracing::Instrument::instrument(run, span));
        links.insert(endpoint.peer_id, Link { queue: tx.clone(), ended });
        tx
    }

    pub(crate) fn binding_for(&self, identity: &Identity) -> Binding {
        let now = crate::envelope::unix_now_ms();
        let lifetime = self.config.binding_lifetime.as_millis() as u64;
        let mut bindings = self.bindings.lock();
        match bindings.get(&identity.address()) {
            // Renew well before expiry so a binding never lapses in flight.
            Some(binding) if binding.expires_ms > now + lifetime / 2 => binding.clone(),
            _ => {
                let binding = Binding::sign(identity, &self.info.peer_id, now + lifetime);
                bindings.insert(identity.address(), binding.clone());
                binding
            }
        }
    }
}
