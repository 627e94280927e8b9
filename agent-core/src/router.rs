//! The local half of message routing: every agent's mailbox, by address.
//!
//! Delivery inside the process hands over the typed value in a `Box`: nothing is
//! serialised or signed. Mailboxes are bounded; when one is full the receiving agent's
//! [`WhenFull`] policy decides between waiting (until the sender's deadline) and refusing.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::agent::{DigestMap, WhenFull};
use crate::context::AgentCell;
pub(crate) use crate::delivery::{Blocked, Delivery, Item};
use crate::error::{SendFailure, Unroutable};
use crate::identity::Address;
use crate::message::ProtocolDigest;
use crate::message::SchemaDigest;

pub(crate) struct Entry {
    pub(crate) tx: mpsc::Sender<Item>,
    pub(crate) cell: Arc<AgentCell>,
}

pub(crate) struct Router {
    pub(crate) agents: RwLock<DigestMap<Address, Entry>>,
    pub(crate) by_protocol: RwLock<DigestMap<ProtocolDigest, Vec<Address>>>,
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// How long a delivery from another process may wait for room in a full mailbox.
    pub(crate) wait_limit: Duration,
}

impl crate::transport::Sink for Router {
    fn accepts(&self, to: &Address, schema: &SchemaDigest) -> bool {
        Router::accepts(self, to, schema)
    }

    fn offer(&self, to: Address, delivery: Box<Delivery>) -> Result<(), Blocked> {
        self.try_deliver(to, delivery)
    }

    fn wait_limit(&self) -> Duration {
        self.wait_limit
    }

    fn refused_full(&self, to: &Address) {
        Router::refused_full(self, to)
    }

    fn acknowledges_when_handled(&self, to: &Address) -> Option<bool> {
        let agents = self.agents.read();
        agents.get(to).map(|entry| entry.cell.acknowledge == crate::agent::Acknowledge::WhenHandled)
    }
}

pub(crate) type DeliverError = (SendFailure, Box<Delivery>);

impl Router {
    pub(crate) fn new(wait_limit: Duration) -> Self {
        Router { agents: Default::default(), by_protocol: Default::default(), stopping: Default::default(), wait_limit }
    }

    /// Queues `delivery` for `to`. With a full mailbox and [`WhenFull::Wait`], waits until
    /// `deadline` (computed lazily from `timeout` when not given).
    ///
    /// Cancel safety: if the future is dropped while waiting, the message is not delivered.
    pub(crate) async fn deliver(
        &self,
        to: Address,
        delivery: Box<Delivery>,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<(), DeliverError> {
        match self.try_deliver(to, delivery) {
            Ok(()) => Ok(()),
            Err(Blocked::Failed(failure, delivery)) => Err((failure, delivery)),
            // Boxed so that every future embedding `deliver` stays small on the fast path,
            // where the mailbox has room.
            Err(blocked) => Box::pin(self.deliver_blocked(to, blocked, deadline, timeout)).await,
        }
    }

    /// Ends a delivery [`try_deliver`](Self::try_deliver) could not queue at once: a
    /// failure is returned, a full mailbox waited on (see [`deliver`](Self::deliver)).
    /// Callers box it: it is the slow path.
    pub(crate) async fn deliver_blocked(
        &self,
        to: Address,
        blocked: Blocked,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<(), DeliverError> {
        match blocked {
            Blocked::Failed(failure, delivery) => Err((failure, delivery)),
            Blocked::Full(tx, delivery) => {
                let waited = wait_for_space(tx, to, delivery, deadline, timeout).await;
                if let Err((SendFailure::Timeout { .. }, _)) = &waited {
                    self.refused_full(&to);
                }
                waited
            }
        }
    }

    /// Counts a message refused because `to`'s mailbox stayed full while it waited.
    pub(crate) fn refused_full(&self, to: &Address) {
        if crate::metrics::enabled() {
            if let Some(entry) = self.agents.read().get(to) {
                crate::metrics::mailbox_full(&entry.cell.kind.label);
            }
        }
    }

    pub(crate) fn try_deliver(&self, to: Address, delivery: Box<Delivery>) -> Result<(), Blocked> {
        let agents = self.agents.read();
        let Some(entry) = agents.get(&to) else {
            let failure = if self.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                SendFailure::Stopped { to }
            } else {
                SendFailure::Unroutable { to, reason: Unroutable::UnknownAddress }
            };
            return Err(Blocked::Failed(failure, delivery));
        };
        if !entry.cell.kind.routes.contains_key(&delivery.schema) {
            let rejection = crate::error::Rejection::new(crate::error::Cause::NoHandler, delivery.name);
            return Err(Blocked::Failed(SendFailure::Rejected { to, rejection }, delivery));
        }
        match entry.tx.try_send(delivery) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(delivery)) => {
                Err(Blocked::Failed(SendFailure::Stopped { to }, delivery))
            }
            Err(mpsc::error::TrySendError::Full(delivery)) => match entry.cell.when_full {
                WhenFull::Reject => {
                    crate::metrics::mailbox_full(&entry.cell.kind.label);
                    Err(Blocked::Failed(SendFailure::MailboxFull { to }, delivery))
                }
                WhenFull::Wait => Err(Blocked::Full(entry.tx.clone(), delivery)),
            },
        }
    }

    /// Whether a message for `to` can only leave the bureau: no agent here has that
    /// address, and the bureau is not stopping (while it stops, an unknown address is
    /// answered [`SendFailure::Stopped`], not sent out). Senders with a way out ask this
    /// first, so a message for another bureau is not boxed as a local delivery only to be
    /// handed back.
    pub(crate) fn is_elsewhere(&self, to: &Address) -> bool {
        !self.stopping.load(std::sync::atomic::Ordering::Relaxed) && !self.agents.read().contains_key(to)
    }

    /// Whether `to` is a local agent with a handler for `schema`.
    pub(crate) fn accepts(&self, to: &Address, schema: &SchemaDigest) -> bool {
        self.agents.read().get(to).is_some_and(|entry| entry.cell.kind.routes.contains_key(schema))
    }

    pub(crate) fn agents_speaking(&self, protocol: &ProtocolDigest) -> Vec<Address> {
        self.by_protocol.read().get(protocol).cloned().unwrap_or_default()
    }
}

/// Waits until `deadline` (or `timeout` from now) for room in a full mailbox.
pub(crate) async fn wait_for_space(
    tx: mpsc::Sender<Item>,
    to: Address,
    delivery: Box<Delivery>,
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<(), DeliverError> {
    let deadline = deadline.unwrap_or_else(|| Instant::now() + timeout);
    let waited = tokio::time::timeout_at(deadline, tx.reserve()).await;
    match waited {
        Ok(Ok(permit)) => {
            permit.send(delivery);
            Ok(())
        }
        Ok(Err(_)) => Err((SendFailure::Stopped { to }, delivery)),
        Err(_) => Err((SendFailure::Timeout { to, after: timeout }, delivery)),
    }
}
