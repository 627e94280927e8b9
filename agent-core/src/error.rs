//! Errors of sending, requesting and replying. Each variant's doc says whether the message
//! was delivered: not delivered, maybe delivered, or delivered.

use std::fmt;
use std::time::Duration;

use crate::identity::Address;

/// Why a message could not be handed to its target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Not delivered: the target refused the message before queueing it.
    #[error("{to} rejected the message: {reason}")]
    Rejected {
        /// The target.
        to: Address,
        /// The target's reason.
        reason: String,
    },
    /// Not delivered: the target agent has stopped.
    #[error("{to} has stopped")]
    Stopped {
        /// The target.
        to: Address,
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
        protocol: crate::ProtocolDigest,
    },
    /// The resolver could not be asked (for example, the registry is down).
    #[error("resolver unavailable: {0}")]
    ResolverUnavailable(String),
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
/// ```
/// let inner = std::io::Error::other("disk full");
/// let outer = agent_core::store::StoreError::Spawn(inner);
/// assert_eq!(agent_core::error::chain(&outer), "cannot start the committer thread: disk full");
/// ```
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
