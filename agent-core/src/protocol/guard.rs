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
//! - **replies**: the reply that comes back to a [`request`](Context::request) reaches no
//!   handler, but [`Guard::incoming`] checks it all the same before the requester gets it;
//!   a refused reply is dropped and the request fails with
//!   [`RequestError::ReplyRefused`](crate::RequestError::ReplyRefused).
//!
//! A message the guard allowed and that then surely did not leave (the target unknown or
//! gone, its mailbox full, refused by its node) is told to [`Guard::unsent`], so a guard
//! that records steps, as `dialogue::Checked` does, takes the step back and the sender may
//! try again. Not told, so still recorded: a send whose future is dropped before it ends
//! (a `select!` or `timeout` around it), and, when several guarded protocols have the same
//! message type, the guards before the one that refused it.
//!
//! Protocols without a guard cost nothing more: an agent with none checks one empty list
//! per send, and its handlers are called as before.
//!
//! Do not use a guard for a check that concerns one message alone (a field out of range):
//! the handler does that. A guard is for rules a protocol's author must not leave to each
//! handler's author to remember. agent-protocols' `dialogue::Checked` is the guard of a
//! dialogue's rules.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::context::Context;
use crate::delivery::Body;
use crate::handler::{HandlerFuture, MessageHandler};
use crate::identity::Address;
use crate::message::SchemaDigest;

pub use crate::error::{GuardCause, Refusal};

/// A protocol's check of every message of its types that an agent receives or sends. See
/// the [module docs](self).
///
/// One guard serves every agent that includes its protocol (agents made with
/// [`Agent::sibling`](crate::Agent::sibling) share it): keep each agent's state apart, by
/// [`Context::address`] or in the agent's [`Context::storage`].
pub trait Guard: Send + Sync + 'static {
    /// Checks `message`, just arrived, before its handler runs: `Err` keeps it from the
    /// handler. `ctx` is the handler's context, so the guard may answer the peer with its
    /// refusal; what it sends is checked by [`outgoing`](Self::outgoing) too. For a reply
    /// to a request, `ctx` is the requester's: read the peer and the session from
    /// `message`, not from [`Context::sender`].
    fn incoming<'a>(&'a self, ctx: &'a Context, message: Inbound) -> GuardFuture<'a>;

    /// Checks `message` before it is sent: `Err` keeps it from being sent. It runs on every
    /// send of the protocol's types, so it must be quick and must not wait.
    fn outgoing(&self, ctx: &Context, message: Outbound) -> Result<(), Refusal>;

    /// Told that `message`, which [`outgoing`](Self::outgoing) allowed, was then surely not
    /// sent: its send or request failed before anything reached the target (the target
    /// unknown or gone, its mailbox full, refused by its node). A guard that records the
    /// steps it allows takes this one back here, so the sender may try it again. Not called
    /// for a message that may have been delivered (no acknowledgement came): the peer may
    /// act on it. The default does nothing.
    fn unsent(&self, _ctx: &Context, _message: Outbound) {}
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
            refusal: Box::new(refusal),
        })?;
    }
    Ok(())
}

/// Tells every guard whose protocol has `message`'s type that it was not sent after all.
#[cold]
pub(crate) fn tell_unsent(ctx: &Context, guards: &[GuardEntry], message: Outbound) {
    for entry in guards.iter().filter(|entry| entry.covers(&message.schema)) {
        entry.guard.unsent(ctx, message);
    }
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
