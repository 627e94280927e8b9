//! Agents: an identity plus a table of handlers.
//!
//! Build an agent with [`Agent::builder`], register plain async functions as handlers, and
//! add it to a [`Bureau`](crate::Bureau), which runs it. The handler table lives behind an
//! `Arc` and is shared by every agent made from the same one with [`Agent::sibling`], so a
//! hundred thousand agents of one kind cost one table.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::context::Context;
use crate::handler::{HandlerOutput, MessageFn, MessageHandler, TaskFn, TaskHandler};
use crate::identity::{Address, Identity, IdentityError};
use crate::message::ProtocolDigest;
use crate::message::{Message, SchemaDigest};
use crate::protocol::{GuardEntry, GuardedHandler, Protocol, ProtocolSpec};

/// What happens when a message is sent to an agent whose mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// The sender waits for space, until its deadline (back-pressure). The default.
    Wait,
    /// The send fails at once with [`SendFailure::MailboxFull`](crate::SendFailure::MailboxFull).
    Reject,
}

/// When a message from another process is acknowledged to its sender as delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acknowledge {
    /// Once it is queued in the agent's mailbox (the default, and the fastest). A process
    /// killed before its agent handles what is queued loses it, so a sender's `Ok` means
    /// "will be handled unless the receiver crashes first".
    #[default]
    WhenQueued,
    /// Once the agent's handler has run it (whether the handler succeeded or not). A
    /// sender's `Ok` then means handled, even if the receiver is killed right after; a
    /// crash before that is reported as not acknowledged. What the handler wrote to its
    /// storage is durable only once flushed: a handler that must not lose its writes calls
    /// `Storage::flush` before returning. Envelopes from one sender to the agent are then
    /// handed over one at a time.
    WhenHandled,
}

/// An agent's mailbox: bounded, with an explicit policy when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxConfig {
    capacity: usize,
    when_full: WhenFull,
    acknowledge: Acknowledge,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        MailboxConfig { capacity: 1024, when_full: WhenFull::Wait, acknowledge: Acknowledge::WhenQueued }
    }
}

impl MailboxConfig {
    /// How many messages may wait (default 1024, at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// The policy when full (default [`WhenFull::Wait`]).
    pub fn with_when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// When messages from other processes are acknowledged (default
    /// [`Acknowledge::WhenQueued`]). Messages sent inside the process are acknowledged once
    /// queued either way.
    pub fn with_acknowledge(mut self, acknowledge: Acknowledge) -> Self {
        self.acknowledge = acknowledge;
        self
    }

    /// When messages from other processes are acknowledged.
    pub fn acknowledge(&self) -> Acknowledge {
        self.acknowledge
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The policy when full.
    pub fn when_full(&self) -> WhenFull {
        self.when_full
    }
}

pub(crate) use crate::digest_map::DigestMap;

#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) name: &'static str,
    pub(crate) handler: Arc<dyn MessageHandler>,
    pub(crate) protocol: Option<Arc<ProtocolSpec>>,
    /// The handler's latency histogram, found on first use once metrics are on.
    pub(crate) latency: OnceLock<Arc<crate::metrics::Latency>>,
}

impl Route {
    fn new(name: &'static str, handler: Arc<dyn MessageHandler>, protocol: Option<Arc<ProtocolSpec>>) -> Self {
        Route { name, handler, protocol, latency: OnceLock::new() }
    }
}

/// The handler table, shared by all agents of one kind.
#[derive(Clone, Default)]
pub(crate) struct Kind {
    /// The kind's label in metrics (see [`AgentBuilder::kind`]).
    pub(crate) label: Arc<str>,
    pub(crate) routes: DigestMap<SchemaDigest, Route>,
    pub(crate) intervals: Vec<(Duration, Arc<dyn TaskHandler>)>,
    pub(crate) startup: Vec<Arc<dyn TaskHandler>>,
    pub(crate) shutdown: Vec<Arc<dyn TaskHandler>>,
    pub(crate) protocols: Vec<Arc<ProtocolSpec>>,
    /// The guarded protocols, in the order included: every send checks whether this is
    /// empty, and only then looks further.
    pub(crate) guards: Vec<GuardEntry>,
    pub(crate) conflicts: Vec<String>,
    /// Protocols whose manifest a peer would refuse, by name, and why.
    pub(crate) invalid_protocols: Vec<(String, Arc<crate::protocol::ManifestError>)>,
}

impl Kind {
    /// The protocol this agent speaks that `message` belongs to, if any.
    pub(crate) fn protocol_of(&self, message: &SchemaDigest) -> Option<ProtocolDigest> {
        self.protocols.iter().find(|protocol| protocol.includes(message)).map(|protocol| protocol.digest)
    }

    fn add_route(&mut self, digest: SchemaDigest, mut route: Route) {
        if let Some(existing) = self.routes.get(&digest) {
            self.conflicts.push(format!("{} is handled twice (first as {})", route.name, existing.name));
            return;
        }
        let guards: Vec<GuardEntry> = self.guards.iter().filter(|entry| entry.covers(&digest)).cloned().collect();
        if !guards.is_empty() {
            route.handler = Arc::new(GuardedHandler { inner: route.handler, guards: guards.into() });
        }
        self.routes.insert(digest, route);
    }

    /// Adds a guarded protocol's guard: handlers already registered for its messages are
    /// wrapped in it now, and those registered later by [`add_route`](Self::add_route).
    fn add_guard(&mut self, entry: GuardEntry) {
        for (digest, route) in self.routes.iter_mut() {
            if entry.covers(digest) {
                let inner = Arc::clone(&route.handler);
                route.handler = Arc::new(GuardedHandler { inner, guards: Arc::new([entry.clone()]) });
            }
        }
        self.guards.push(entry);
    }
}

/// An agent ready to be added to a bureau.
#[derive(Clone)]
pub struct Agent {
    pub(crate) name: Box<str>,
    pub(crate) identity: Identity,
    pub(crate) kind: Arc<Kind>,
    pub(crate) mailbox: Option<MailboxConfig>,
}

/// Why an agent could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The key file could not be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// Builds an [`Agent`]: its name, identity and mailbox.
#[derive(Debug)]
pub struct AgentBuilder {
    name: String,
    kind: Option<String>,
    source: IdentitySource,
    mailbox: Option<MailboxConfig>,
}

#[derive(Debug)]
enum IdentitySource {
    Fresh,
    Seed(String),
    KeyFile(PathBuf),
    Identity(Box<Identity>),
}

impl AgentBuilder {
    /// A deterministic identity from a seed phrase (keep it secret).
    pub fn seed(mut self, seed: impl Into<String>) -> Self {
        self.source = IdentitySource::Seed(seed.into());
        self
    }

    /// The identity in a key file written by [`Identity::save`].
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = IdentitySource::KeyFile(path.into());
        self
    }

    /// An identity made elsewhere.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.source = IdentitySource::Identity(Box::new(identity));
        self
    }

    /// The agent's kind, which labels its [metrics](crate::metrics) (default: its name
    /// without a trailing number, so that `trader-17` and `trader 3` are both `trader`).
    /// Agents made from it with [`Agent::sibling`] share it. A process labels at most
    /// [`MAX_KINDS`](crate::metrics::MAX_KINDS) kinds; further ones count as `other`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// This agent's mailbox (default: the bureau's).
    pub fn mailbox(mut self, config: MailboxConfig) -> Self {
        self.mailbox = Some(config);
        self
    }

    /// The agent, with no handlers yet. With neither seed nor key file, a fresh key held
    /// in memory only.
    pub fn build(self) -> Result<Agent, AgentError> {
        let identity = match self.source {
            IdentitySource::Fresh => Identity::generate(),
            IdentitySource::Seed(seed) => Identity::from_seed(&seed),
            IdentitySource::KeyFile(path) => Identity::load(path)?,
            IdentitySource::Identity(identity) => *identity,
        };
        let label = crate::metrics::kind_label(self.kind.as_deref().unwrap_or(&self.name));
        let kind = Kind { label, ..Kind::default() };
        Ok(Agent { name: self.name.into(), identity, kind: Arc::new(kind), mailbox: self.mailbox })
    }
}

impl Agent {
    /// Starts building an agent called `name` (the name appears in logs and spans).
    pub fn builder(name: impl Into<String>) -> AgentBuilder {
        AgentBuilder { name: name.into(), kind: None, source: IdentitySource::Fresh, mailbox: None }
    }

    /// The agent's address.
    pub fn address(&self) -> Address {
        self.identity.address()
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Another agent with the same handlers (the table is shared, not copied) and its
    /// own name and identity.
    pub fn sibling(&self, name: impl Into<String>, identity: Identity) -> Agent {
        Agent { name: name.into().into_boxed_str(), identity, kind: Arc::clone(&self.kind), mailbox: self.mailbox }
    }

    /// Handles messages of type `M` with `handler`, an async fn
    /// `(Context, Address, M) -> ()` or `-> Result<(), E>`. Registering a second handler
    /// for the same type is reported when the agent is added to a bureau.
    pub fn on_message<M, F, Fut, O>(&mut self, handler: F) -> &mut Self
    where
        M: Message,
        F: Fn(Context, Address, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let route = Route::new(M::NAME, Arc::new(MessageFn::<M, F>::new(handler)), None);
        Arc::make_mut(&mut self.kind).add_route(M::digest(), route);
        self
    }

    /// Whether a handler for messages of type `M` is registered (by
    /// [`on_message`](Self::on_message) or an included protocol): for a helper that adds a
    /// fallback handler only where the agent has none.
    pub fn handles<M: Message>(&self) -> bool {
        self.kind.routes.contains_key(&M::digest())
    }

    /// Runs `handler` every `period`, interleaved with messages (never concurrently). A
    /// run that overruns its period is logged, and the next one starts a full period after
    /// it ends: there is no burst of catch-up runs. The first run follows startup.
    pub fn on_interval<F, Fut, O>(&mut self, period: Duration, handler: F) -> &mut Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        let kind = Arc::make_mut(&mut self.kind);
        if period.is_zero() {
            kind.conflicts.push("an interval period must be greater than zero".to_owned());
        } else {
            kind.intervals.push((period, Arc::new(TaskFn(handler))));
        }
        self
    }

    /// Runs `handler` once when the agent starts, before it handles any message.
    pub fn on_startup<F, Fut, O>(&mut self, handler: F) -> &mut Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        Arc::make_mut(&mut self.kind).startup.push(Arc::new(TaskFn(handler)));
        self
    }

    /// Runs `handler` once when the agent stops, after its last message.
    pub fn on_shutdown<F, Fut, O>(&mut self, handler: F) -> &mut Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        Arc::make_mut(&mut self.kind).shutdown.push(Arc::new(TaskFn(handler)));
        self
    }

    /// Adds a protocol's handlers and reply rules, and its [guard](Protocol::guard) if it
    /// has one: from then on, every message of its types this agent receives or sends is
    /// checked by it, whichever handler or send path it takes.
    /// A protocol whose state machine names a state or message it lacks
    /// ([`Protocol::check`]) makes [`Bureau::add`](crate::Bureau::add) refuse the agent.
    pub fn include(&mut self, protocol: Protocol) -> &mut Self {
        let spec = Arc::new(protocol.spec());
        let kind = Arc::make_mut(&mut self.kind);
        if let Err(error) = protocol.check() {
            kind.invalid_protocols.push((spec.name.clone(), Arc::new(error)));
        }
        if let Some(entry) = protocol.guard_entry() {
            kind.add_guard(entry);
        }
        for (digest, name, handler) in protocol.handlers {
            kind.add_route(digest, Route::new(name, handler, Some(Arc::clone(&spec))));
        }
        kind.protocols.push(spec);
        self
    }
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("name", &self.name).field("address", &self.address()).finish_non_exhaustive()
    }
}
