//! Routes messages that arrive in a handler to the running auction (or round) they name.

use std::collections::HashMap;
use std::sync::Arc;

use agent_core::Address;
use parking_lot::Mutex;
use tokio::sync::mpsc;

/// How many messages one running auction may have waiting; more are dropped (and logged),
/// so a flood from one bidder cannot grow the auctioneer's memory.
const CAPACITY: usize = 4096;

/// Where one running auction's messages go, with their senders.
type Line<T> = mpsc::Sender<(Address, T)>;

/// The running auctions of one agent, by id, each with the line its messages go to.
pub(crate) struct Inbox<T> {
    running: Arc<Mutex<HashMap<String, Line<T>>>>,
}

impl<T> Clone for Inbox<T> {
    fn clone(&self) -> Self {
        Inbox { running: Arc::clone(&self.running) }
    }
}

impl<T> Default for Inbox<T> {
    fn default() -> Self {
        Inbox { running: Arc::default() }
    }
}

/// Receives one auction's messages until dropped; then the auction is closed to them.
pub(crate) struct Opened<T> {
    id: String,
    inbox: Inbox<T>,
    pub(crate) messages: mpsc::Receiver<(Address, T)>,
}

impl<T> Drop for Opened<T> {
    fn drop(&mut self) {
        self.inbox.running.lock().remove(&self.id);
    }
}

impl<T> Inbox<T> {
    /// Opens auction `id` to messages.
    pub(crate) fn open(&self, id: &str) -> Opened<T> {
        let (tx, messages) = mpsc::channel(CAPACITY);
        self.running.lock().insert(id.to_owned(), tx);
        Opened { id: id.to_owned(), inbox: self.clone(), messages }
    }

    /// Hands `message` from `from` to auction `id`. False if that auction is not running
    /// (closed, or never opened here) or its line is full.
    pub(crate) fn deliver(&self, id: &str, from: Address, message: T) -> bool {
        let Some(line) = self.running.lock().get(id).cloned() else { return false };
        match line.try_send((from, message)) {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!(auction = id, %from, "an auction's line is full; a message was dropped");
                false
            }
        }
    }
}

/// Sends `message` to each of `to` side by side and waits for every outcome; a failed send
/// is logged (the auction goes on without that bidder hearing it).
pub(crate) async fn tell_all<M: agent_core::Message + Clone + Sync>(
    ctx: &agent_core::Context,
    to: &[Address],
    message: &M,
) {
    let mut sends = tokio::task::JoinSet::new();
    for &peer in to {
        let (ctx, message) = (ctx.clone(), message.clone());
        sends.spawn(async move { (peer, ctx.send(peer, message).await) });
    }
    while let Some(joined) = sends.join_next().await {
        if let Ok((peer, Err(e))) = joined {
            tracing::debug!(%peer, error = %e, message = M::NAME, "an auction message was not delivered");
        }
    }
}
