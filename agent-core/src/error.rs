//! Errors of sending, requesting and replying. Each variant's doc says whether the message
//! was delivered: not delivered, maybe delivered, or delivered.

use std::fmt;
use std::time::Duration;

use crate::identity::Address;

/// Why a message could not be handed to its target. Failures are added as the runtime
/// learns new ways to refuse a message, so a match keeps a catch-all arm (and
/// [`may_have_been_delivered`](Self::may_have_been_delivered) answers for every one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailure {
    /// Not delivered: no route to the target.
    #[error("{to} is unroutable: {reason}")]
    Unroutable {
        /// The target.
        to: Address,
        /// Why no route exists.
        reason: Unroutable,
    },
    /// Not delivered: the target's mailbox is full and its policy is to refuse.
    #[error("mailbox of {to} is full")]
    MailboxFull {
        /// The target.
        to: Address,
    },
    /// Not delivered: the target's mailbox stayed full until the sender's deadline.
    #[error("timed out after {after:?} waiting for space in the mailbox of {to}")]
    Timeout {
        /// The target.
        to: Address,
        /// How long the sender waited.
        after: Duration,
    },
    /// The target refused the message before queueing it: not delivered, unless
    /// [`Rejection::may_have_been_handled`] says an earlier copy may have been.
    #[error("{to} rejected the message: {rejection}")]
    Rejected {
        /// The target.
        to: Address,
        /// Why, as a cause to match on and a detail to show.
        rejection: Rejection,
    },
    /// Not delivered: the target agent has stopped.
    #[error("{to} has stopped")]
    Stopped {
        /// The target.
        to: Address,
    },
    /// Not sent: the serialised message is larger than an envelope frame may be, so no
    /// receiver would take it.
    #[error("message of {size} bytes for {to} exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The target.
        to: Address,
        /// The serialised size.
        size: usize,
        /// The largest payload allowed.
        limit: usize,
    },
    /// Not sent: the message could not be serialised for the network.
    #[error("cannot encode the message for {to}: {reason}")]
    Encode {
        /// The target.
        to: Address,
        /// serde_json's error.
        reason: String,
    },
    /// Not delivered: the remote node could not be reached before the deadline, so the
    /// message was never written to it.
    #[error("not delivered to {to}: {endpoint} could not be reached within {after:?} ({reason})")]
    Unreachable {
        /// The target.
        to: Address,
        /// The deadline.
        after: Duration,
        /// The endpoint tried.
        endpoint: String,
        /// The last failure seen while trying.
        reason: String,
    },
    /// Not sent: the guard of this agent's protocol `protocol` refused the message (a step
    /// its dialogue's rules do not allow now, for example); see
    /// `protocol::Guard`. Nothing left the agent, and the guard recorded
    /// nothing.
    #[error("not sent to {to}: {protocol} refused {message}: {refusal}")]
    Refused {
        /// The target.
        to: Address,
        /// The guarded protocol, as `name/version`.
        protocol: String,
        /// The refused message's type.
        message: &'static str,
        /// Why, as a cause to match on and a detail to show (boxed: every send's result
        /// carries room for the largest failure).
        refusal: Box<Refusal>,
    },
    /// Maybe delivered: the remote node did not acknowledge before the deadline.
    #[error("no acknowledgement from {to} at {endpoint} within {after:?}; it may or may not have been delivered")]
    NotAcknowledged {
        /// The target.
        to: Address,
        /// The deadline.
        after: Duration,
        /// The endpoint tried.
        endpoint: String,
    },
}

impl SendFailure {
    /// Whether the message may have reached its target's handler despite this failure:
    /// true only when no acknowledgement came ([`NotAcknowledged`](Self::NotAcknowledged))
    /// or the receiver cannot tell ([`Rejection::may_have_been_handled`]). On `false`,
    /// the message was certainly not handled and may be sent again.
    pub fn may_have_been_delivered(&self) -> bool {
        match self {
            SendFailure::NotAcknowledged { .. } => true,
            SendFailure::Rejected { rejection, .. } => rejection.may_have_been_handled(),
            _ => false,
        }
    }
}

/// Why a receiver refused an envelope: a [`Cause`] to match on, and a detail for people.
///
/// ```
/// use agent_core::error::{Cause, Rejection};
/// let rejection = Rejection::new(Cause::MailboxFull, "agent1qq…");
/// assert_eq!(rejection.cause, Cause::MailboxFull);
/// assert!(!rejection.may_have_been_handled());
/// assert_eq!(Cause::from_code(Cause::MailboxFull.code()), Cause::MailboxFull);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What the receiver refused it for.
    pub cause: Cause,
    /// Details where they help (which limit, which schema); may be empty.
    pub detail: String,
}

impl Rejection {
    /// A rejection for `cause`, with `detail`.
    pub fn new(cause: Cause, detail: impl Into<String>) -> Self {
        Rejection { cause, detail: detail.into() }
    }

    /// Whether an earlier copy of the message may have been handled. The copy this
    /// rejection answers was not; see [`Cause::MayHaveBeenHandled`] and [`Cause::Replayed`].
    pub fn may_have_been_handled(&self) -> bool {
        // A cause this build does not know may say so: assume the worse.
        matches!(self.cause, Cause::MayHaveBeenHandled | Cause::Replayed | Cause::Unknown(_))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            fmt::Display::fmt(&self.cause, f)
        } else {
            write!(f, "{}: {}", self.cause, self.detail)
        }
    }
}

/// The cause of a [`Rejection`], each with the one-byte code it has on the wire
/// (`docs/wire-format.md` lists them). Unless it says otherwise, a rejected envelope was
/// not handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The target agent has no handler for the message's schema (code 1).
    #[error("no handler for this message type")]
    NoHandler,
    /// The target's mailbox was full, and its policy is to refuse or its wait ran out
    /// (code 2).
    #[error("the agent's mailbox is full")]
    MailboxFull,
    /// The target agent has stopped (code 3).
    #[error("the agent has stopped")]
    AgentStopped,
    /// No agent with the target address runs at the receiver (code 4).
    #[error("no such agent at this node")]
    UnknownAgent,
    /// The envelope expired, or asked for a longer lifetime than the receiver allows
    /// (code 5).
    #[error("expired")]
    Expired,
    /// The envelope's timestamp is too far ahead of the receiver's clock (code 6).
    #[error("timestamp too far ahead of the receiver's clock")]
    ClockSkew,
    /// The signature does not verify, or the sender key does not match its address
    /// (code 7).
    #[error("bad signature")]
    BadSignature,
    /// Sent under a session binding that is missing or has expired on this connection
    /// (code 8).
    #[error("no valid session binding for the sender")]
    NoBinding,
    /// Its nonce was seen before and the first copy's verdict is no longer remembered:
    /// this copy was not handled, an earlier one may have been (code 9).
    #[error("replayed")]
    Replayed,
    /// A limit of the receiver was reached: requests in flight from this peer, or the
    /// replay guard's capacity (code 10).
    #[error("quota exceeded")]
    QuotaExceeded,
    /// Larger than the receiver's limit (code 11).
    #[error("too large")]
    TooLarge,
    /// The receiver restarted and cannot tell whether it handled an earlier copy before
    /// it stopped: this copy was not handled, an earlier one may have been (code 12).
    #[error("may have been handled before the receiver restarted")]
    MayHaveBeenHandled,
    /// The bytes are not a well-formed envelope, or the payload does not decode (code 13).
    #[error("malformed")]
    Malformed,
    /// A reply that no request is waiting for: unknown, timed out, or from another agent
    /// than the one asked (code 14).
    #[error("no request is waiting for this reply")]
    NotAwaited,
    /// The sending node stopped before the envelope left (code 15; never on the wire).
    #[error("the sending node has stopped")]
    NodeStopped,
    /// The receiver cannot accept envelopes now: it cannot write to its storage (code 16).
    #[error("the receiver is unavailable")]
    Unavailable,
    /// A code this build does not know (a newer peer); the detail says more.
    #[error("unknown cause (code {0})")]
    Unknown(u8),
}

impl Cause {
    /// The cause's code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Cause::NoHandler => 1,
            Cause::MailboxFull => 2,
            Cause::AgentStopped => 3,
            Cause::UnknownAgent => 4,
            Cause::Expired => 5,
            Cause::ClockSkew => 6,
            Cause::BadSignature => 7,
            Cause::NoBinding => 8,
            Cause::Replayed => 9,
            Cause::QuotaExceeded => 10,
            Cause::TooLarge => 11,
            Cause::MayHaveBeenHandled => 12,
            Cause::Malformed => 13,
            Cause::NotAwaited => 14,
            Cause::NodeStopped => 15,
            Cause::Unavailable => 16,
            Cause::Unknown(code) => code,
        }
    }

    /// The cause with this wire code.
    pub fn from_code(code: u8) -> Cause {
        match code {
            1 => Cause::NoHandler,
            2 => Cause::MailboxFull,
            3 => Cause::AgentStopped,
            4 => Cause::UnknownAgent,
            5 => Cause::Expired,
            6 => Cause::ClockSkew,
            7 => Cause::BadSignature,
            8 => Cause::NoBinding,
            9 => Cause::Replayed,
            10 => Cause::QuotaExceeded,
            11 => Cause::TooLarge,
            12 => Cause::MayHaveBeenHandled,
            13 => Cause::Malformed,
            14 => Cause::NotAwaited,
            15 => Cause::NodeStopped,
            16 => Cause::Unavailable,
            other => Cause::Unknown(other),
        }
    }

    /// Whether this cause says the sender itself is not who it claims or is misbehaving
    /// (bad signature or binding); a node disconnects peers that send many of these.
    pub fn is_authentication_failure(self) -> bool {
        matches!(self, Cause::BadSignature | Cause::NoBinding)
    }
}

/// Why a protocol's guard (`protocol::Guard`) refused a message: a [`GuardCause`] to act
/// on, and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{cause}: {detail}")]
pub struct Refusal {
    /// Why, as a program matches it.
    pub cause: GuardCause,
    /// The cause in words (which dialogue, its state, what was expected).
    pub detail: String,
}

impl Refusal {
    /// A refusal for `cause`, with `detail`.
    pub fn new(cause: GuardCause, detail: impl Into<String>) -> Refusal {
        Refusal { cause, detail: detail.into() }
    }
}

/// The cause of a [`Refusal`], each with a stable one-byte code. The first are a dialogue's
/// (the message does not fit its state machine); a guard that checks other rules uses
/// [`Unknown`](Self::Unknown) with a code of its own above 127 until one is added here.
///
/// Every code reads back as itself, so a cause crosses the wire as its code:
///
/// ```
/// use agent_core::protocol::GuardCause;
/// for code in 0..=u8::MAX {
///     assert_eq!(GuardCause::from_code(code).code(), code);
/// }
/// assert_eq!(GuardCause::from_code(2), GuardCause::Late);
/// assert_eq!(GuardCause::from_code(9), GuardCause::Unavailable);
/// assert_eq!(GuardCause::from_code(200), GuardCause::Unknown(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GuardCause {
    /// The message may not follow in the dialogue's state, or not from its sender's role
    /// (code 1).
    OutOfOrder,
    /// The state's deadline had passed (code 2).
    Late,
    /// The dialogue is over: nothing more is accepted in it (code 3).
    Closed,
    /// No such dialogue, and the message does not open one (code 4).
    UnknownDialogue,
    /// The message would open a dialogue whose id is in use (code 5).
    Exists,
    /// The other agent is not the dialogue's other party (code 6).
    NotAParty,
    /// The peer has as many dialogues open as one peer may (code 7).
    TooManyOpen,
    /// Too busy to look at the message; it changed nothing and may be sent again (code 8).
    Busy,
    /// The guard could not check or record the message (its storage failed): not the
    /// message's fault, but it did not count (code 9).
    Unavailable,
    /// Another cause, by its code.
    Unknown(u8),
}

impl GuardCause {
    /// The cause's code.
    pub fn code(self) -> u8 {
        match self {
            GuardCause::OutOfOrder => 1,
            GuardCause::Late => 2,
            GuardCause::Closed => 3,
            GuardCause::UnknownDialogue => 4,
            GuardCause::Exists => 5,
            GuardCause::NotAParty => 6,
            GuardCause::TooManyOpen => 7,
            GuardCause::Busy => 8,
            GuardCause::Unavailable => 9,
            GuardCause::Unknown(code) => code,
        }
    }

    /// The cause with this code.
    pub fn from_code(code: u8) -> GuardCause {
        match code {
            1 => GuardCause::OutOfOrder,
            2 => GuardCause::Late,
            3 => GuardCause::Closed,
            4 => GuardCause::UnknownDialogue,
            5 => GuardCause::Exists,
            6 => GuardCause::NotAParty,
            7 => GuardCause::TooManyOpen,
            8 => GuardCause::Busy,
            9 => GuardCause::Unavailable,
            other => GuardCause::Unknown(other),
        }
    }
}

impl fmt::Display for GuardCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardCause::OutOfOrder => f.write_str("out of order"),
            GuardCause::Late => f.write_str("late"),
            GuardCause::Closed => f.write_str("dialogue closed"),
            GuardCause::UnknownDialogue => f.write_str("no such dialogue"),
            GuardCause::Exists => f.write_str("dialogue exists"),
            GuardCause::NotAParty => f.write_str("not a party"),
            GuardCause::TooManyOpen => f.write_str("too many dialogues open"),
            GuardCause::Busy => f.write_str("busy"),
            GuardCause::Unavailable => f.write_str("could not be checked"),
            GuardCause::Unknown(code) => write!(f, "refused (code {code})"),
        }
    }
}

/// Why a target has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// No agent with this address is known.
    #[error("unknown address")]
    UnknownAddress,
    /// The agent is known but has no endpoint to reach it at.
    #[error("no endpoint")]
    NoEndpoint,
    /// The agent's registration lapsed.
    #[error("registration expired at {at_ms} ms")]
    Expired {
        /// When (ms since the Unix epoch).
        at_ms: u64,
    },
    /// The agent is registered but does not speak the protocol asked for.
    #[error("does not speak protocol {protocol}")]
    ProtocolMismatch {
        /// The protocol asked for.
        protocol: crate::message::ProtocolDigest,
    },
    /// The resolver could not be asked (for example, the registry is down).
    #[error("resolver unavailable: {0}")]
    ResolverUnavailable(String),
    /// The registry answered with a record that is not the agent's own, signed by its key:
    /// it is not used.
    #[error("the registry's record fails verification: {0}")]
    BadRecord(String),
}

/// A failed send; hands the message back.
pub struct SendError<M> {
    failure: SendFailure,
    message: Option<M>,
}

impl<M> SendError<M> {
    pub(crate) fn new(failure: SendFailure, message: Option<M>) -> Self {
        SendError { failure, message }
    }

    /// What went wrong.
    pub fn failure(&self) -> &SendFailure {
        &self.failure
    }

    /// The message that was not delivered (`None` only if it had already been serialised
    /// for the network).
    pub fn into_message(self) -> Option<M> {
        self.message
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SendError").field(&self.failure).finish()
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.failure, f)
    }
}

impl<M> std::error::Error for SendError<M> {}

/// Why a request got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not delivered: see the failure.
    #[error("request not delivered: {0}")]
    Send(SendFailure),
    /// Maybe delivered, maybe handled: no reply arrived before the deadline.
    #[error("no reply from {to} within {after:?}")]
    Timeout {
        /// The target.
        to: Address,
        /// The deadline that passed.
        after: Duration,
    },
    /// Delivered and handled: the handler finished without replying.
    #[error("{to} handled the request without replying")]
    NoReply {
        /// The target.
        to: Address,
    },
    /// Delivered: the handler failed (returned an error or panicked) before replying.
    #[error("handler of {to} failed: {reason}")]
    HandlerFailed {
        /// The target.
        to: Address,
        /// The handler's error.
        reason: String,
    },
    /// Delivered and answered, but with another message type than the one awaited.
    #[error("{to} replied with {got}, expected {expected}")]
    WrongReplyType {
        /// The target.
        to: Address,
        /// The awaited type.
        expected: &'static str,
        /// The type that came.
        got: String,
    },
    /// Delivered, but the receiver's agent stopped before answering.
    #[error("{to} stopped before replying")]
    Stopped {
        /// The target.
        to: Address,
    },
    /// Delivered and answered, but a guarded protocol of this agent refused the reply (see
    /// `protocol::Guard`): it is dropped, as a refused message would be before a handler.
    #[error("{to} replied with {reply}, which {protocol} refused: {refusal}")]
    ReplyRefused {
        /// The target that replied.
        to: Address,
        /// The guarded protocol, as `name/version`.
        protocol: String,
        /// The refused reply's type.
        reply: &'static str,
        /// Why (boxed, as in [`SendFailure::Refused`]).
        refusal: Box<Refusal>,
    },
}

/// Why a reply was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not sent: the handler is not handling a message (a startup or interval handler).
    #[error("there is no current message to reply to")]
    NoCurrentMessage,
    /// Not sent: the protocol of the current message does not allow this reply type.
    #[error("protocol {protocol} does not allow {reply} as a reply to {request}")]
    NotAllowed {
        /// The protocol, as `name/version`.
        protocol: String,
        /// The message being answered.
        request: &'static str,
        /// The refused reply type.
        reply: &'static str,
    },
    /// Not sent: this request was already answered, or its handler already returned.
    #[error("the request was already answered")]
    AlreadyAnswered,
    /// Not delivered: the requester stopped waiting (its deadline passed).
    #[error("the requester is no longer waiting")]
    RequesterGone,
    /// Not delivered: sending the reply as a message to the sender failed.
    #[error("reply not delivered: {0}")]
    Send(SendFailure),
}

/// `err` followed by each of its sources, joined by ": ", for messages and logs that must
/// name the cause (`Display` of most errors shows only the outermost layer).
///
/// A layer that displays as nothing (libp2p's `TransportError::Other` does) is skipped, and
/// so is a layer whose text an outer layer already includes (an error that formats its
/// source into its own message), so each cause appears once. If every layer is silent, the
/// outermost error's `Debug` form stands in, so the result is never empty. At most 32 layers
/// are followed.
///
/// ```
/// let inner = std::io::Error::other("disk full");
/// let outer = agent_core::store::StoreError::Spawn(inner);
/// assert_eq!(agent_core::error::chain(&outer), "cannot start the committer thread: disk full");
/// ```
pub fn chain(err: &dyn std::error::Error) -> String {
    const MAX_LAYERS: usize = 32;
    let mut text = String::new();
    for layer in std::iter::successors(Some(err), |layer| layer.source()).take(MAX_LAYERS) {
        let message = layer.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    if text.is_empty() {
        text = format!("{err:?}");
    }
    text
}

/// An error as a binary's `main` reports it: the whole cause chain on one line (see
/// [`chain`]), as in `Error: cannot listen on /ip4/127.0.0.1/tcp/4000: Address already in
/// use (os error 98)`.
///
/// Return it from `main` (`fn main() -> Result<(), Report>`): `?` converts any error that
/// converts into `Box<dyn Error + Send + Sync>` (a `std::error::Error`, an `anyhow::Error`,
/// a `String`), and the runtime prints the `Debug` form, which here is the chain rather than
/// the outermost message alone. It keeps no backtrace.
///
/// ```
/// use agent_core::error::Report;
///
/// let err = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
/// let report = Report::from(err);
/// assert_eq!(format!("{report:?}"), "Address already in use");
/// ```
pub struct Report(Box<dyn std::error::Error + Send + Sync + 'static>);

impl<E> From<E> for Report
where
    E: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    fn from(err: E) -> Self {
        Report(err.into())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&chain(&*self.0))
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::chain;

    /// An error with a fixed message and an optional source.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|layer| layer as _)
        }
    }

    fn layers(messages: &[&'static str]) -> Layer {
        let mut err: Option<Box<Layer>> = None;
        for message in messages.iter().rev() {
            err = Some(Box::new(Layer(message, err)));
        }
        *err.expect("at least one layer")
    }

    #[test]
    fn each_cause_is_named_once() {
        assert_eq!(chain(&layers(&["a", "b", "c"])), "a: b: c");
        // A layer that already shows its source does not repeat it.
        assert_eq!(chain(&layers(&["cannot open x: gone", "gone"])), "cannot open x: gone");
    }

    #[test]
    fn a_silent_layer_is_skipped() {
        assert_eq!(chain(&layers(&["cannot listen on x", "", "in use"])), "cannot listen on x: in use");
        assert_eq!(chain(&layers(&["", "in use"])), "in use");
    }

    #[test]
    fn an_all_silent_chain_is_still_named() {
        assert!(!chain(&layers(&["", ""])).is_empty());
    }

    #[test]
    fn a_report_shows_the_chain_as_debug() {
        let report = super::Report::from(layers(&["cannot listen on x", "", "in use"]));
        assert_eq!(format!("{report:?}"), "cannot listen on x: in use");
        assert_eq!(report.to_string(), "cannot listen on x: in use");
    }
}

#[cfg(test)]
mod guard_cause_tests {
    use super::GuardCause;

    /// The codes are a contract with programs that log or store them: pinned.
    #[test]
    fn cause_codes_are_stable() {
        for code in 0..=255u8 {
            assert_eq!(GuardCause::from_code(code).code(), code);
        }
        assert_eq!(GuardCause::OutOfOrder.code(), 1);
        assert_eq!(GuardCause::Unavailable.code(), 9);
    }
}
