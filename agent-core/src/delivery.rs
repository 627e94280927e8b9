//! What travels from a sender to an agent's mailbox: the [`Delivery`], and where its
//! answer goes. A leaf shared by the router, the runtime and every transport.

use std::any::Any;

use tokio::sync::{mpsc, oneshot};

use crate::error::SendFailure;
use crate::identity::Address;
use crate::message::SchemaDigest;
use crate::remote::ReplyPath;

/// A mailbox slot is one pointer, so an idle agent's mailbox stays small. An agent stops
/// when the router drops its sender: it handles what is queued, then runs its shutdown.
pub(crate) type Item = Box<Delivery>;

/// One message on its way into an agent's mailbox.
pub(crate) struct Delivery {
    pub(crate) from: Address,
    pub(crate) schema: SchemaDigest,
    pub(crate) name: &'static str,
    pub(crate) session: u128,
    pub(crate) trace_id: u128,
    pub(crate) body: Body,
    pub(crate) reply: Option<ReplyTo>,
    /// Told once the handler has run, for an agent that acknowledges when handled.
    pub(crate) handled: Option<oneshot::Sender<()>>,
}

/// A message as it reaches an agent: the typed value from inside the process, or JSON
/// from the network, decoded only right before the handler runs.
pub(crate) enum Body {
    Typed(Box<dyn Any + Send>),
    Json(Vec<u8>),
}

/// Where the answer to a request goes.
pub(crate) enum ReplyTo {
    /// The waiting future of a requester in this process.
    Local(LocalReplySlot),
    /// A requester in another process, answered through the transport it came by.
    Remote(Box<dyn ReplyPath>),
}

/// Where the answer to a requester in this process goes.
pub(crate) type LocalReplySlot = oneshot::Sender<Result<Reply, RequestFailure>>;

/// A reply to a requester in this process: the typed value.
pub(crate) struct Reply {
    pub(crate) name: &'static str,
    pub(crate) value: Box<dyn Any + Send>,
}

/// How a request ended without a reply, as reported by the receiving agent's loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestFailure {
    NoReply,
    HandlerFailed(String),
}

/// Why a delivery could not be queued at once.
pub(crate) enum Blocked {
    /// It never will be.
    Failed(SendFailure, Box<Delivery>),
    /// The mailbox is full and its agent waits for room: reserving a place may succeed.
    Full(mpsc::Sender<Item>, Box<Delivery>),
}
