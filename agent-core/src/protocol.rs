//! Protocols: named, versioned sets of message types with the replies each allows.
//!
//! A [`Protocol`] groups handlers the way a published interface groups methods. Its
//! [`Manifest`] (JSON) lists every message type with its schema and digest, and which
//! replies each message allows; the manifest's sha256 is the [`ProtocolDigest`] agents
//! advertise and discover each other by. While an agent handles a message that belongs to
//! a protocol, [`Context::reply`](crate::Context::reply) refuses any reply type the
//! protocol does not allow for that message, with
//! [`ReplyError::NotAllowed`](crate::ReplyError::NotAllowed).
//!
//! A protocol whose messages must follow rules across messages (a dialogue's state
//! machine) attaches a [`Guard`] with [`Protocol::guard`]: the runtime then passes every
//! message of its types that an agent receives or sends through the guard, whichever
//! handler or send path it takes (see the [`Guard`] docs).
//!
//! ```
//! use agent_core::{Address, Context, Message, Protocol};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Ping(u64);
//! #[derive(Serialize, Deserialize, schemars::JsonSchema, Message)]
//! struct Pong(u64);
//!
//! async fn on_ping(ctx: Context, _from: Address, Ping(n): Ping) -> Result<(), agent_core::ReplyError> {
//!     ctx.reply(Pong(n)).await
//! }
//!
//! let protocol = Protocol::new("ping", "1.0").on_message(on_ping).replies::<Ping, Pong>();
//! let manifest = protocol.manifest();
//! assert_eq!(manifest.messages.len(), 2);
//! assert_eq!(agent_core::Manifest::from_json(&manifest.to_json()).unwrap().digest(), protocol.digest());
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::Context;
use crate::handler::{HandlerOutput, MessageFn, MessageHandler};
use crate::identity::Address;
pub use crate::message::ProtocolDigest;
use crate::message::{Message, SchemaDigest};

mod guard;
mod state_machine;

pub(crate) use guard::{check_outgoing, tell_unsent, GuardEntry, GuardedHandler};
pub use guard::{Guard, GuardCause, GuardFuture, Inbound, Outbound, Refusal};
pub use state_machine::{StateMachine, TransitionSpec};

/// One message type in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSpec {
    /// The type's name.
    pub name: String,
    /// Its canonical schema.
    pub schema: String,
    /// sha256 of the schema.
    pub digest: SchemaDigest,
}

/// The replies one message type allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyRule {
    /// The message being answered.
    pub request: SchemaDigest,
    /// The message types that may answer it.
    pub replies: Vec<SchemaDigest>,
}

/// A type carried as data inside a protocol's own messages (contract-net's task, proposal
/// and result, for example), declared with [`Protocol::payload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadSpec {
    /// What the payload is in the protocol ("task", "proposal").
    pub role: String,
    /// Its canonical schema.
    pub schema: String,
    /// sha256 of the schema.
    pub digest: SchemaDigest,
}

/// A protocol's published description: what others need to speak it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The protocol's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Every message type, sorted by digest.
    pub messages: Vec<MessageSpec>,
    /// Allowed replies, sorted by request digest.
    pub replies: Vec<ReplyRule>,
    /// The types carried inside generic messages, sorted by role. Absent from the JSON when
    /// there are none, so a protocol without payloads keeps the digest it always had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub payloads: Vec<PayloadSpec>,
    /// The dialogue's state machine, if the protocol declares one
    /// ([`Protocol::state_machine`]). Absent from the JSON when not declared, so a protocol
    /// without one keeps the digest it always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_machine: Option<StateMachine>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the manifest's shape.
    #[error("malformed protocol manifest: {0}")]
    Json(#[from] serde_json::Error),
    /// A message's digest does not match its schema.
    #[error("manifest message {name}: digest does not match its schema")]
    DigestMismatch {
        /// The message type.
        name: String,
    },
    /// A payload's digest does not match its schema.
    #[error("manifest payload {role}: digest does not match its schema")]
    PayloadDigestMismatch {
        /// The payload's role.
        role: String,
    },
    /// The state machine names a state it does not list among its states (a step into
    /// or out of it, the initial state, a terminal state or a deadline's).
    #[error("manifest state machine: state {state} is not one of its states")]
    UnknownState {
        /// The state.
        state: String,
    },
    /// A step of the state machine names a message that is not in the manifest.
    #[error("manifest state machine: message {message} is not one of the manifest's messages")]
    UnknownMessage {
        /// The step's message, as the state machine names it.
        message: String,
    },
}

impl Manifest {
    /// The protocol digest: sha256 over the canonical (sorted) JSON of the manifest.
    pub fn digest(&self) -> ProtocolDigest {
        let canonical = serde_json::to_vec(&self.canonical()).unwrap_or_default();
        ProtocolDigest::from_bytes(
            Sha256::new().chain_update(b"agora.protocol.v1\n").chain_update(canonical).finalize().into(),
        )
    }

    /// Pretty JSON for publishing.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.canonical()).unwrap_or_default()
    }

    /// Parses a manifest and checks that each message's digest matches its schema, and that
    /// its state machine, if any, names only its own states and the manifest's messages.
    pub fn from_json(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = serde_json::from_str(text)?;
        for message in &manifest.messages {
            if schema_digest(&message.schema) != message.digest {
                return Err(ManifestError::DigestMismatch { name: message.name.clone() });
            }
        }
        for payload in &manifest.payloads {
            if schema_digest(&payload.schema) != payload.digest {
                return Err(ManifestError::PayloadDigestMismatch { role: payload.role.clone() });
            }
        }
        if let Some(machine) = &manifest.state_machine {
            machine.check(&manifest)?;
        }
        Ok(manifest.canonical())
    }

    fn canonical(&self) -> Manifest {
        let mut out = self.clone();
        out.messages.sort_by_key(|m| m.digest);
        out.messages.dedup_by(|a, b| a.digest == b.digest);
        for rule in &mut out.replies {
            rule.replies.sort();
            rule.replies.dedup();
        }
        out.replies.sort_by_key(|r| r.request);
        out.payloads.sort_by(|a, b| a.role.cmp(&b.role));
        out.state_machine = out.state_machine.as_ref().map(StateMachine::canonical);
        out
    }
}

pub use crate::message::schema_digest;

/// The part of a protocol the runtime consults while handling messages.
#[derive(Debug)]
pub(crate) struct ProtocolSpec {
    pub(crate) name: String,
    pub(crate) digest: ProtocolDigest,
    replies: BTreeMap<SchemaDigest, BTreeSet<SchemaDigest>>,
}

impl ProtocolSpec {
    pub(crate) fn allows_reply(&self, request: &SchemaDigest, reply: &SchemaDigest) -> bool {
        self.replies.get(request).is_some_and(|allowed| allowed.contains(reply))
    }

    /// Whether `message` is one of this protocol's messages.
    pub(crate) fn includes(&self, message: &SchemaDigest) -> bool {
        self.replies.contains_key(message) || self.replies.values().any(|replies| replies.contains(message))
    }
}

/// A named, versioned group of message handlers with reply rules. See the module docs.
pub struct Protocol {
    name: String,
    version: String,
    messages: BTreeMap<SchemaDigest, MessageSpec>,
    replies: BTreeMap<SchemaDigest, BTreeSet<SchemaDigest>>,
    payloads: BTreeMap<String, PayloadSpec>,
    state_machine: Option<StateMachine>,
    guard: Option<Arc<dyn Guard>>,
    pub(crate) handlers: Vec<(SchemaDigest, &'static str, Arc<dyn MessageHandler>)>,
}

impl Protocol {
    /// An empty protocol.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Protocol {
            name: name.into(),
            version: version.into(),
            messages: BTreeMap::new(),
            replies: BTreeMap::new(),
            payloads: BTreeMap::new(),
            state_machine: None,
            guard: None,
            handlers: Vec::new(),
        }
    }

    /// Declares `M` part of the protocol and handles it with `handler`.
    pub fn on_message<M, F, Fut, O>(mut self, handler: F) -> Self
    where
        M: Message,
        F: Fn(Context, Address, M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
        O: HandlerOutput,
    {
        self = self.message::<M>();
        self.handlers.push((M::digest(), M::NAME, Arc::new(MessageFn::<M, F>::new(handler))));
        self
    }

    /// Declares `M` part of the protocol without handling it here (a type this side sends).
    pub fn message<M: Message>(mut self) -> Self {
        self.messages.insert(
            M::digest(),
            MessageSpec { name: M::NAME.to_owned(), schema: M::schema().json().to_owned(), digest: M::digest() },
        );
        self
    }

    /// Allows `Resp` as a reply to `Req` (declaring both).
    pub fn replies<Req: Message, Resp: Message>(mut self) -> Self {
        self = self.message::<Req>().message::<Resp>();
        self.replies.entry(Req::digest()).or_default().insert(Resp::digest());
        self
    }

    /// Declares `T` as the type carried as `role` inside this protocol's messages.
    ///
    /// Use it when a message holds data whose type the protocol leaves open: contract-net's
    /// task is JSON of whatever the initiator asks for. The manifest then publishes `T`'s
    /// schema and the digest covers it, so programs that disagree on the payload's shape
    /// advertise different digests and do not find each other by it. Declaring a role
    /// again replaces its type. `T` is a [`WireSchema`](crate::message::WireSchema), as a
    /// message's fields are, so its published schema is its wire form.
    pub fn payload<T: crate::message::WireSchema>(mut self, role: &str) -> Self {
        let schema = crate::message::MessageSchema::of::<T>(role);
        self.payloads.insert(
            role.to_owned(),
            PayloadSpec { role: role.to_owned(), schema: schema.json().to_owned(), digest: schema.digest() },
        );
        self
    }

    /// Publishes the dialogue's state machine in the manifest, so the digest covers which
    /// message may follow which, who may send it, where a dialogue ends and its deadlines
    /// (agent-protocols' `Rules::state_machine` gives it for a dialogue's rules). Declaring
    /// one again replaces it. [`Manifest::from_json`] refuses a machine that names a state
    /// it does not list or a message the manifest does not have, and so does
    /// [`Bureau::add`](crate::Bureau::add) for an agent that includes such a protocol
    /// ([`check`](Self::check) tells at once).
    pub fn state_machine(mut self, machine: StateMachine) -> Self {
        self.state_machine = Some(machine);
        self
    }

    /// Makes `guard` check every message of this protocol's types that an agent including
    /// it receives or sends, whichever handler or send path it takes (see [`Guard`]):
    /// for rules a handler must not be able to forget, such as the dialogue's state machine
    /// published with [`state_machine`](Self::state_machine). It covers the types declared
    /// on the protocol, before or after this call. Attaching one again replaces it. The
    /// guard is not part of the manifest: peers see the rules, not how they are kept.
    pub fn guard(mut self, guard: impl Guard) -> Self {
        self.guard = Some(Arc::new(guard));
        self
    }

    /// The guard as an agent keeps it, if the protocol has one.
    pub(crate) fn guard_entry(&self) -> Option<GuardEntry> {
        let guard = Arc::clone(self.guard.as_ref()?);
        // The map's keys are sorted, as the entry's lookup needs.
        let messages = self.messages.keys().copied().collect();
        Some(GuardEntry { protocol: format!("{}/{}", self.name, self.version).into(), messages, guard })
    }

    /// Checks the protocol as a peer reading its manifest would: its state machine, if any,
    /// names only its own states and the protocol's messages. Messages may be declared after
    /// the state machine, so the check is made on the whole protocol, not on each call.
    pub fn check(&self) -> Result<(), ManifestError> {
        match &self.state_machine {
            Some(machine) => machine.check(&self.manifest()),
            None => Ok(()),
        }
    }

    /// The protocol's manifest.
    pub fn manifest(&self) -> Manifest {
        Manifest {
            name: self.name.clone(),
            version: self.version.clone(),
            messages: self.messages.values().cloned().collect(),
            replies: self
                .replies
                .iter()
                .map(|(request, replies)| ReplyRule { request: *request, replies: replies.iter().copied().collect() })
                .collect(),
            payloads: self.payloads.values().cloned().collect(),
            state_machine: self.state_machine.clone(),
        }
        .canonical()
    }

    /// The protocol's digest.
    pub fn digest(&self) -> ProtocolDigest {
        self.manifest().digest()
    }

    pub(crate) fn spec(&self) -> ProtocolSpec {
        ProtocolSpec {
            name: format!("{}/{}", self.name, self.version),
            digest: self.digest(),
            replies: self.replies.clone(),
        }
    }
}

impl fmt::Debug for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Protocol")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("digest", &self.digest())
            .finish()
    }
}
