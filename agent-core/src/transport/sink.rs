//! Where the transport hands the envelopes it accepted: the local agents, behind a trait so
//! that the transport knows nothing of bureaus and contexts.

use std::time::Duration;

use crate::delivery::{Blocked, Delivery};
use crate::identity::Address;
use crate::message::SchemaDigest;

/// The local side of a node: the agents envelopes are delivered to. The bureau's router
/// implements it.
pub(crate) trait Sink: Send + Sync + 'static {
    /// Whether `to` is an agent here with a handler for `schema`.
    fn accepts(&self, to: &Address, schema: &SchemaDigest) -> bool;

    /// Queues `delivery` for `to` at once, or says why it cannot be queued now.
    fn offer(&self, to: Address, delivery: Box<Delivery>) -> Result<(), Blocked>;

    /// How long a delivery may wait for room in a full mailbox whose agent waits.
    fn wait_limit(&self) -> Duration;

    /// Counts an envelope for `to` refused because its mailbox stayed full while it waited.
    fn refused_full(&self, to: &Address);

    /// Whether `to` acknowledges envelopes only once its handler has run them; `None` if
    /// no such agent is here.
    fn acknowledges_when_handled(&self, to: &Address) -> Option<bool>;
}
