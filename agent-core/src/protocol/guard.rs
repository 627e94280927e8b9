//! Guards: a protocol's own check of every message of its types, in and out, made by the
//! runtime so that no handler or send can skip it.
//!
//! Attach a [`Guard`] to a protocol with [`Protocol::guard`](super::Protocol::guard) when
//! its messages must follow rules that span messages (a dialogue's state machine: which
//! message may follow which, from whom, until when). An agent that includes the protocol
//! then has every message of the protocol's types checked by it:
//!
//! - **in**: before any handler of that type runs (registered through the protocol or with
//!   [`Agent::on_message`](crate::Agent::on_message)), [`Guard::incoming`] decides; a
//!   refused message never reaches the handler. The guard may tell the peer why (it has the
//!   handler's [`Context`]); a refused request is answered as handled without a reply.
//! - **out**: before a message of that type leaves the agent by any [`Context`] path
//!   ([`send`](Context::send), [`send_in`](Context::send_in),
//!   [`request`](Context::request), [`reply`](Context::reply), a
//!   [`DeferredReply`](crate::DeferredReply), a broadcast, from a message, startup,
//!   interval or shutdown handler alike), [`Guard::outgoing`] decides; a refused message is
//!   not sent, and the caller gets [`SendFailure::Refused`](crate::SendFailure::Refused).
//!
//! Protocols without a guard cost nothing more: an agent with none checks one empty list
//! per send, and its handlers are called as before.
//!
//! Do not use a guard for a check that concerns one message alone (a field out of range):
//! the handler does that. A guard is for rules a protocol's author must not leave to each
//! handler's author to remember. agent-protocols' `dialogue::Checked` is the guard of a
//! dialogue's rules.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::Context;
use crate::delivery::Body;
use crate::handler::{HandlerFuture, MessageHandler};
use crate::identity::Address;
use crate::message::SchemaDigest;

/// A protocol's check of every message of its types that an agent receives or sends. See
/// the [module docs](self).
///
/// One guard serves every agent that includes its protocol (agents made with
/// [`Agent::sibling`](crate::Agent::sibling) share it): keep each agent's state apart, by
/// [`Context::address`] or in the agent's [`Context::storage`].
pub trait Guard: Send + Sync + 'static {
    /// Checks `message`, just arrived, before its handler runs: `Err` keeps it from the
    /// handler. `ctx` is the handler's context (its [`sender`](Context::sender) and
    /// [`session`](Context::session) are the message's), so the guard may answer the peer
    /// with its refusal; what it sends is checked by [`outgoing`](Self::outgoing) too.
    fn incoming<'a>(&'a self, ctx: &'a Context, message: Inbound) -> GuardFuture<'a>;

    /// Checks `message` before it is sent: `Err` keeps it from being sent. It runs on every
    /// send of the protocol's types, so it must be quick and must not wait.
    fn outgoing(&self, ctx: &Context, message: Outbound) -> Result<(), Refusal>;
}

/// What [`Guard::incoming`] returns.
pub type GuardFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// A message arriving, as [`Guard::incoming`] sees it (the value itself is decoded only for
/// the handler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    /// The sender.
    pub from: Address,
    /// The session (a dialogue's id) it came in.
    pub session: u128,
    /// Its type's name ([`Message::NAME`](crate::Message::NAME)).
    pub message: &'static str,
    /// Its type's schema digest.
    pub schema: SchemaDigest,
}

/// A message about to be sent, as [`Guard::outgoing`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outbound {
    /// The target.
    pub to: Address,
    /// The session (a dialogue's id) it is sent in.
    pub session: u128,
    /// Its type's name ([`Message::NAME`](crate::Message::NAME)).
    pub message: &'static str,
    /// Its type's schema digest.
    pub schema: SchemaDigest,
}

/// Why a guard refused a message: a [`GuardCause`] to act on, and a detail for people.
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

/// A guarded protocol as an agent keeps it: which messages its guard checks.
#[derive(Clone)]
pub(crate) struct GuardEntry {
    /// The protocol, as `name/version`.
    pub(crate) protocol: Arc<str>,
    /// Its messages' digests, sorted (looked up by binary search: no hashing on a send).
    pub(crate) messages: Arc<[SchemaDigest]>,
    pub(crate) guard: Arc<dyn Guard>,
}

impl GuardEntry {
    pub(crate) fn covers(&self, schema: &SchemaDigest) -> bool {
        self.messages.binary_search(schema).is_ok()
    }
}

/// Checks an outgoing message with every guard whose protocol has its type. Called only
/// when the agent has guards.
#[cold]
pub(crate) fn check_outgoing(
    ctx: &Context,
    guards: &[GuardEntry],
    message: Outbound,
) -> Result<(), crate::error::SendFailure> {
    for entry in guards.iter().filter(|entry| entry.covers(&message.schema)) {
        entry.guard.outgoing(ctx, message).map_err(|refusal| crate::error::SendFailure::Refused {
            to: message.to,
            protocol: entry.protocol.to_string(),
            message: message.message,
            refusal,
        })?;
    }
    Ok(())
}

/// A handler whose messages pass `guards` first, in order: the first refusal keeps the
/// message from the handler (and from the guards after it).
pub(crate) struct GuardedHandler {
    pub(crate) inner: Arc<dyn MessageHandler>,
    pub(crate) guards: Arc<[GuardEntry]>,
}

impl MessageHandler for GuardedHandler {
    fn call(&self, ctx: Context, from: Address, body: Body) -> Result<HandlerFuture, String> {
        let Some(current) = ctx.current else {
            return self.inner.call(ctx, from, body);
        };
        // Decoded first (a message that does not decode is no step of anything), but the
        // handler is called only once the guards let the message through: not even the
        // part of it that runs before its first await sees a refused message.
        let body = self.inner.decode(body)?;
        let (inner, guards) = (Arc::clone(&self.inner), Arc::clone(&self.guards));
        let inbound = Inbound { from, session: current.session, message: current.name, schema: current.schema };
        Ok(HandlerFuture::new(async move {
            for entry in guards.iter() {
                if let Err(refusal) = entry.guard.incoming(&ctx, inbound).await {
                    // A peer's misstep, not this agent's failure: told to the peer by the
                    // guard if it chose to, and logged quietly (a peer could flood the log).
                    tracing::debug!(protocol = %entry.protocol, message = inbound.message, %from, %refusal, "refused by the protocol's guard");
                    return Ok(());
                }
            }
            inner.call(ctx, from, body)?.await
        }))
    }

    fn decode(&self, body: Body) -> Result<Body, String> {
        self.inner.decode(body)
    }
}

#[cfg(test)]
mod tests {
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
