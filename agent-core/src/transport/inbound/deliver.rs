//! Handing checked envelopes to local agents, and remembering each one's verdict.
//!
//! A full mailbox whose agent waits for room must not stall the stream: envelopes for that
//! agent wait in a line of their own (in arrival order, so they stay in order), while
//! envelopes for other agents go on. Their acknowledgements follow when they are queued.

use crate::digest_map::DigestMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::super::frame::Verdict;
use super::super::{Network, Sink};
use crate::delivery::{Blocked, Delivery};
use crate::envelope::{Envelope, FirstCopy};
use crate::error::{Cause, Rejection, SendFailure};
use crate::identity::Address;

/// Where a verdict given later goes: the stream's acknowledgements, with the frame's seq.
pub(crate) type Acks = mpsc::UnboundedSender<(u64, Verdict)>;

/// A verdict owed later: where it goes, and the seq of the frame it answers.
pub(crate) type LaterAck = (Acks, u64);

/// Resends waiting for their first copy's verdict, all streams together, at most.
const MAX_AWAITING_FIRST: usize = 10_000;

/// Copies of one envelope waiting for its first copy's verdict, at most (an honest sender
/// resends once per reconnect).
const MAX_RESENDS_AWAITING_ONE: usize = 8;

/// Envelopes one stream may have waiting for room in full mailboxes, at most.
pub(super) const MAX_WAITING_PER_STREAM: usize = 4096;

/// The verdict of the envelope (sender, nonce) is final: remember it for resends, tell the
/// resends waiting for it, and, if it was delivered, remember how to reach its sender.
pub(crate) fn settle(net: &Network, sender: Address, nonce: u64, peer: PeerId, verdict: &Verdict) {
    let first = match verdict {
        Verdict::Delivered => FirstCopy::Delivered,
        Verdict::Rejected(rejection) => FirstCopy::Rejected(rejection.cause),
    };
    {
        let mut replay = net.replay.lock();
        replay.settle(sender, nonce, first);
        // Under the guard's lock, so that no resend registers after this; and only when
        // some resend waits, which is rare, to keep this lock off the common path.
        if net.awaiting_count.load(Ordering::Acquire) > 0 {
            let mut awaiting = net.awaiting_first.lock();
            if let Some(waiting) = awaiting.remove(&(sender, nonce)) {
                net.awaiting_count.store(awaiting.len(), Ordering::Release);
                for (acks, seq) in waiting {
                    // A closed stream is told nothing; its sender's resend gets the verdict.
                    let _ = acks.send((seq, verdict.clone()));
                }
            }
        }
    }
    if *verdict == Verdict::Delivered {
        // Only a delivered envelope proves its sender is reached through this peer.
        learn_route(&mut net.learned.lock(), sender, peer, super::super::MAX_LEARNED);
    }
}

/// Remembers that `sender` is reached through `peer`, keeping at most `capacity` routes:
/// when full, an arbitrary eighth is forgotten, so new senders keep being learned (a
/// forgotten route is found again through discovery).
fn learn_route(learned: &mut HashMap<Address, PeerId>, sender: Address, peer: PeerId, capacity: usize) {
    if learned.len() >= capacity && !learned.contains_key(&sender) {
        let forget: Vec<Address> = learned.keys().take((capacity / 8).max(1)).copied().collect();
        for address in forget {
            learned.remove(&address);
        }
    }
    learned.insert(sender, peer);
}

/// The verdict for a copy of (sender, nonce) after the first: the first copy's, now, or
/// later through `acks` while the first is still being delivered (`None`).
pub(crate) fn answer_resend(
    net: &Network,
    sender: Address,
    nonce: u64,
    later: Option<(&Acks, u64)>,
) -> Option<Verdict> {
    let replay = net.replay.lock();
    match replay.first_copy(&sender, nonce) {
        FirstCopy::Delivered => Some(Verdict::Delivered),
        FirstCopy::Rejected(cause) => Some(Verdict::rejected(cause, "answer to a resend: the first copy was refused")),
        FirstCopy::Forgotten => {
            crate::metrics::replay_refused("forgotten");
            Some(Verdict::rejected(Cause::Replayed, "its first copy's verdict is no longer known"))
        }
        FirstCopy::Pending => {
            let mut awaiting = net.awaiting_first.lock();
            let room = match awaiting.get(&(sender, nonce)) {
                Some(waiting) => waiting.len() < MAX_RESENDS_AWAITING_ONE,
                None => awaiting.len() < MAX_AWAITING_FIRST,
            };
            match later {
                Some((acks, seq)) if room => {
                    awaiting.entry((sender, nonce)).or_default().push((acks.clone(), seq));
                    net.awaiting_count.store(awaiting.len(), Ordering::Release);
                    None
                }
                _ => {
                    crate::metrics::replay_refused("pending");
                    Some(Verdict::rejected(Cause::Replayed, "its first copy is still being delivered"))
                }
            }
        }
    }
}

/// The rejection a local delivery failure is answered with.
pub(crate) fn rejection_of(failure: SendFailure) -> Rejection {
    let detail = failure.to_string();
    match failure {
        SendFailure::Rejected { rejection, .. } => rejection,
        SendFailure::MailboxFull { .. } | SendFailure::Timeout { .. } => Rejection::new(Cause::MailboxFull, detail),
        SendFailure::Stopped { .. } => Rejection::new(Cause::AgentStopped, detail),
        SendFailure::Unroutable { .. } => Rejection::new(Cause::UnknownAgent, detail),
        SendFailure::Encode { .. } => Rejection::new(Cause::Malformed, detail),
        SendFailure::TooLarge { .. } => Rejection::new(Cause::TooLarge, detail),
        SendFailure::Unreachable { .. } | SendFailure::NotAcknowledged { .. } => {
            Rejection::new(Cause::UnknownAgent, detail)
        }
        // A guard checks what an agent sends, never a delivery into a mailbox: not met here.
        SendFailure::Refused { .. } => Rejection::new(Cause::NoHandler, detail),
    }
}

/// Hands a checked reply to the request waiting for it (from its target only).
pub(crate) fn complete_reply(net: &Network, envelope: Envelope) -> Verdict {
    let Some(request_nonce) = envelope.in_reply_to else {
        return Verdict::rejected(Cause::Malformed, "not a reply");
    };
    let key = (envelope.target, request_nonce);
    let mut pending = net.pending.lock();
    match pending.remove(&key) {
        Some((expected, slot)) if expected == envelope.sender => {
            // A requester that stopped waiting (its deadline passed) drops the reply.
            let _ = slot.send(envelope);
            Verdict::Delivered
        }
        Some(entry) => {
            pending.insert(key, entry);
            Verdict::rejected(Cause::NotAwaited, "a reply from an agent the request was not sent to")
        }
        None => Verdict::rejected(Cause::NotAwaited, "no request is waiting for this reply (it may have timed out)"),
    }
}

/// One envelope waiting in its line.
struct Waiting {
    seq: u64,
    sender: Address,
    nonce: u64,
    target: Address,
    delivery: Box<Delivery>,
    deadline: Instant,
    /// Its timestamp, if the acceptance ceiling must be raised over it first.
    raise: Option<u64>,
    /// Told once the handler has run, for an agent that acknowledges when handled.
    handled: Option<oneshot::Receiver<()>>,
    /// Where its verdict goes: the acks of the stream it came on, and that stream's count
    /// of waiting envelopes.
    acks: Acks,
    count: Arc<AtomicUsize>,
    peer: PeerId,
}

/// The envelopes from one sender to one target that wait, in arrival order, whichever
/// stream they came on, so that a resend after a reconnect never lets a later envelope
/// overtake one still waiting. A task delivers them while `running`; it stops, under the
/// lock, only when the line is empty, so nothing is ever left behind or overtaken.
#[derive(Default)]
pub(crate) struct Line {
    queue: VecDeque<Waiting>,
    running: bool,
}

/// Every line of the node, by (sender, target). Keys are chosen by peers, so they are
/// hashed with the default (keyed) hasher; a line is removed when it empties.
pub(crate) type LineMap = Mutex<HashMap<(Address, Address), Arc<Mutex<Line>>>>;

/// What one stream keeps for delivering: its acks, its count of waiting envelopes, and
/// which agents acknowledge only once handled.
pub(super) struct Lines {
    /// Whether each target acknowledges only once handled (fixed when the agent is added;
    /// keyed by local agents only, so the digest hasher is safe).
    when_handled: DigestMap<Address, bool>,
    waiting: Arc<AtomicUsize>,
    pub(super) acks: Acks,
    peer: PeerId,
}

/// The envelope being delivered: its frame's seq, its (sender, nonce), its target, and
/// its timestamp.
pub(super) struct Arrival {
    pub(super) seq: u64,
    pub(super) sender: Address,
    pub(super) nonce: u64,
    pub(super) target: Address,
    pub(super) timestamp_ms: u64,
}

impl Lines {
    pub(super) fn new(acks: Acks, peer: PeerId) -> Self {
        Lines { when_handled: DigestMap::default(), waiting: Arc::default(), acks, peer }
    }

    /// Envelopes of this stream waiting in lines.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Delivers at once, or puts the envelope in its line: `None` then, and the verdict
    /// comes through `acks` later. Settles every verdict it gives.
    pub(super) fn deliver(
        &mut self,
        net: &Arc<Network>,
        sink: &Arc<dyn Sink>,
        arrival: Arrival,
        mut delivery: Box<Delivery>,
    ) -> Option<Verdict> {
        let Arrival { seq, sender, nonce, target, timestamp_ms } = arrival;
        let raise = (!net.ceiling.covers(&sender, timestamp_ms)).then_some(timestamp_ms);
        if self.when_handled.len() >= MAX_WAITING_PER_STREAM && !self.when_handled.contains_key(&target) {
            self.when_handled.clear();
        }
        // Cached per stream: an agent's mode is fixed when it is added.
        let when_handled = match self.when_handled.get(&target) {
            Some(known) => *known,
            None => match sink.acknowledges_when_handled(&target) {
                Some(mode) => *self.when_handled.entry(target).or_insert(mode),
                None => false,
            },
        };
        let handled = when_handled.then(|| {
            let (tell, handled) = oneshot::channel();
            delivery.handled = Some(tell);
            handled
        });
        let key = (sender, target);
        let mut lines = net.lines.lock();
        if raise.is_none() && handled.is_none() && !lines.contains_key(&key) {
            // The common case: nothing waits, nothing to write first, no handling to wait
            // for. The lock is held so that no line for this pair starts meanwhile.
            match sink.offer(target, delivery) {
                Ok(()) => {
                    drop(lines);
                    return Some(self.settled(net, sender, nonce, Verdict::Delivered));
                }
                Err(Blocked::Failed(failure, _)) => {
                    drop(lines);
                    return Some(self.settled(net, sender, nonce, Verdict::Rejected(rejection_of(failure))));
                }
                Err(Blocked::Full(_, back)) => delivery = back,
            }
        }
        if self.waiting() >= MAX_WAITING_PER_STREAM {
            drop(lines);
            crate::metrics::quota_refused("waiting_envelopes");
            let verdict = Verdict::rejected(Cause::MailboxFull, "too many envelopes from this peer are waiting");
            return Some(self.settled(net, sender, nonce, verdict));
        }
        let deadline = Instant::now() + sink.wait_limit();
        let waiting = Waiting {
            seq,
            sender,
            nonce,
            target,
            delivery,
            deadline,
            raise,
            handled,
            acks: self.acks.clone(),
            count: Arc::clone(&self.waiting),
            peer: self.peer,
        };
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let line = Arc::clone(lines.entry(key).or_default());
        drop(lines);
        let start = {
            let mut line = line.lock();
            line.queue.push_back(waiting);
            !std::mem::replace(&mut line.running, true)
        };
        if start {
            net.tasks.spawn(run_line(Arc::clone(net), Arc::clone(sink), key, line));
        }
        None
    }

    fn settled(&self, net: &Network, sender: Address, nonce: u64, verdict: Verdict) -> Verdict {
        settle(net, sender, nonce, self.peer, &verdict);
        verdict
    }
}

/// Delivers one line in order; stops, and removes the line, once it is empty.
async fn run_line(net: Arc<Network>, sink: Arc<dyn Sink>, key: (Address, Address), line: Arc<Mutex<Line>>) {
    loop {
        let next = {
            // Lock order: the node's map, then the line (as in `deliver`).
            let mut lines = net.lines.lock();
            let mut state = line.lock();
            match state.queue.pop_front() {
                Some(next) => next,
                None => {
                    state.running = false;
                    if lines.get(&key).is_some_and(|current| Arc::ptr_eq(current, &line)) {
                        lines.remove(&key);
                    }
                    return;
                }
            }
        };
        let (seq, sender, nonce, peer) = (next.seq, next.sender, next.nonce, next.peer);
        let (acks, count) = (next.acks.clone(), Arc::clone(&next.count));
        let verdict = deliver_waiting(&net, sink.as_ref(), next).await;
        count.fetch_sub(1, Ordering::Relaxed);
        settle(&net, sender, nonce, peer, &verdict);
        // Settled above: if the stream closed meanwhile, a resend gets this verdict.
        let _ = acks.send((seq, verdict));
    }
}

async fn deliver_waiting(net: &Network, sink: &dyn Sink, waiting: Waiting) -> Verdict {
    if let Some(timestamp_ms) = waiting.raise {
        if let Err(err) = net.ceiling.raise(&waiting.sender, timestamp_ms).await {
            tracing::warn!(error = %crate::error::chain(&err), "cannot record an envelope's timestamp durably; refusing it");
            return Verdict::rejected(Cause::Unavailable, "the receiver cannot write to its storage");
        }
    }
    let queued = match sink.offer(waiting.target, waiting.delivery) {
        Ok(()) => Verdict::Delivered,
        Err(Blocked::Failed(failure, _)) => Verdict::Rejected(rejection_of(failure)),
        Err(Blocked::Full(mailbox, delivery)) => {
            match tokio::time::timeout_at(waiting.deadline, mailbox.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(delivery);
                    Verdict::Delivered
                }
                Ok(Err(_)) => Verdict::rejected(Cause::AgentStopped, "the agent stopped while the envelope waited"),
                Err(_) => {
                    sink.refused_full(&waiting.target);
                    Verdict::rejected(Cause::MailboxFull, "the agent's mailbox stayed full until the deadline")
                }
            }
        }
    };
    match (queued, waiting.handled) {
        // No deadline: until it is handled, the sender's own deadline reports it as not
        // acknowledged, which is the truth.
        (Verdict::Delivered, Some(handled)) => match handled.await {
            Ok(()) => Verdict::Delivered,
            Err(_) => Verdict::rejected(Cause::AgentStopped, "the agent stopped before handling it"),
        },
        (queued, _) => queued,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_routes_stay_within_capacity_and_new_senders_are_still_learned() {
        let mut learned = HashMap::new();
        let peer = PeerId::random();
        let senders: Vec<Address> = (0..100).map(|_| crate::identity::Identity::generate().address()).collect();
        for (i, sender) in senders.iter().enumerate() {
            learn_route(&mut learned, *sender, peer, 16);
            assert!(learned.len() <= 16, "{} routes after {} senders", learned.len(), i + 1);
            assert_eq!(learned.get(sender), Some(&peer), "sender {i} was not learned");
        }
        let again = PeerId::random();
        learn_route(&mut learned, senders[99], again, 16);
        assert_eq!(learned.get(&senders[99]), Some(&again), "a known sender's route is updated");
    }
}
