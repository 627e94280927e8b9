//! The seam between agents and whatever carries their messages to other processes.
//!
//! The runtime knows nothing of libp2p: a context hands a message for an agent outside
//! its bureau to a [`RemoteSend`], and a request from outside arrives with a [`ReplyPath`]
//! to answer it by. The libp2p transport implements both; a simulated network implements
//! them the same way, with no change to the runtime or the transport. In the other
//! direction, a transport hands what it accepted to a [`Sink`](crate::transport::Sink).

use std::time::Duration;

use tokio::time::Instant;

use crate::delivery::RequestFailure;
use crate::envelope::Header;
use crate::error::{ReplyError, RequestError, SendFailure};
use crate::identity::{Address, Identity};
use crate::message::{ProtocolDigest, SchemaDigest};

/// A message serialised for another process.
pub(crate) struct Outgoing {
    pub(crate) schema: SchemaDigest,
    /// The message type's name, for logs and simulation traces.
    pub(crate) name: &'static str,
    pub(crate) payload: Vec<u8>,
    pub(crate) header: Header,
}

/// A reply from another process, still serialised.
pub(crate) struct Incoming {
    pub(crate) schema: SchemaDigest,
    pub(crate) payload: Vec<u8>,
}

/// Carries messages to agents in other processes. Every call ends in a final outcome.
#[async_trait::async_trait]
pub(crate) trait RemoteSend: Send + Sync + 'static {
    /// Delivers `message` from `from` to `to`, within `timeout`.
    async fn send(&self, from: &Identity, to: Address, message: Outgoing, timeout: Duration)
        -> Result<(), SendFailure>;

    /// Sends a request and waits for its reply until `deadline` (`timeout` is how long that
    /// is, for errors).
    async fn request(
        &self,
        from: &Identity,
        to: Address,
        message: Outgoing,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Incoming, RequestError>;

    /// How long a send may take when the caller gives no deadline.
    fn delivery_timeout(&self) -> Duration;
}

/// How to answer one request that came from another process.
#[async_trait::async_trait]
pub(crate) trait ReplyPath: Send + Sync {
    /// The agent waiting for the answer.
    fn requester(&self) -> Address;

    /// Answers with `payload` (a serialised `schema`, of `protocol` if it belongs to one)
    /// from `from`, within `timeout`.
    async fn reply(
        self: Box<Self>,
        from: &Identity,
        schema: SchemaDigest,
        payload: Vec<u8>,
        protocol: Option<ProtocolDigest>,
        timeout: Duration,
    ) -> Result<(), ReplyError>;

    /// Tells the requester that its request failed or got no reply.
    async fn fail(self: Box<Self>, from: &Identity, failure: RequestFailure, timeout: Duration);
}
