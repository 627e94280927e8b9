//! Routes messages that arrive in a handler to the running auction (or round) they name.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use agent_core::Address;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How many messages one running auction may have waiting; more are dropped (and logged),
/// so a flood from one bidder cannot grow the auctioneer's memory.
const CAPACITY: usize = 4096;

/// Where one running auction's messages go, with their senders and when they arrived, and
/// who may send them.
struct Line<T> {
    to: mpsc::Sender<(Address, T, Instant)>,
    allowed: Arc<HashSet<Address>>,
}

impl<T> Clone for Line<T> {
    fn clone(&self) -> Self {
        Line { to: self.to.clone(), allowed: Arc::clone(&self.allowed) }
    }
}

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
    messages: mpsc::Receiver<(Address, T, Instant)>,
}

impl<T> Drop for Opened<T> {
    fn drop(&mut self) {
        self.inbox.running.lock().remove(&self.id);
    }
}

impl<T> Opened<T> {
    /// The next message that arrived before `closes`, waiting for it until then; `None` once
    /// every message that arrived in time has been taken. Messages queued at the close
    /// still count: they arrived in time.
    pub(crate) async fn next_before(&mut self, closes: Instant) -> Option<(Address, T)> {
        let (from, message, arrived) = match tokio::time::timeout_at(closes, self.messages.recv()).await {
            Ok(next) => next?,
            Err(_) => self.messages.try_recv().ok()?,
        };
        (arrived <= closes).then_some((from, message))
    }
}

impl<T: Send + 'static> Inbox<T> {
    /// A handler for `M`: `split` names the auction a message is for and what it carries,
    /// which goes to that auction if it runs here (and is dropped, logged, if not).
    pub(crate) fn route<M: agent_core::Message>(
        &self,
        split: fn(M) -> (String, T),
    ) -> impl Fn(agent_core::Context, Address, M) -> std::future::Ready<()> + Send + Sync + 'static {
        let inbox = self.clone();
        move |_ctx, from, message| {
            let (auction, item) = split(message);
            if !inbox.deliver(&auction, from, item) {
                tracing::debug!(%from, auction, message = M::NAME, "a message for an auction not running here");
            }
            std::future::ready(())
        }
    }
}

impl<T> Inbox<T> {
    /// Opens auction `id` to messages from `allowed` (its invited bidders or traders);
    /// anyone else's are not taken.
    pub(crate) fn open(&self, id: &str, allowed: &[Address]) -> Opened<T> {
        let (to, messages) = mpsc::channel(CAPACITY);
        let allowed = Arc::new(allowed.iter().copied().collect());
        self.running.lock().insert(id.to_owned(), Line { to, allowed });
        Opened { id: id.to_owned(), inbox: self.clone(), messages }
    }

    /// Hands `message` from `from` to auction `id`. False if that auction is not running
    /// (closed, or never opened here), `from` was not invited, or its line is full.
    pub(crate) fn deliver(&self, id: &str, from: Address, message: T) -> bool {
        let Some(line) = self.running.lock().get(id).cloned() else { return false };
        if !line.allowed.contains(&from) {
            return false;
        }
        match line.to.try_send((from, message, Instant::now())) {
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
