//! Handing checked envelopes to local agents, and remembering each one's verdict.
//!
//! A full mailbox whose agent waits for room must not stall the stream: envelopes for that
//! agent wait in a line of their own (in arrival order, so they stay in order), while
//! envelopes for other agents go on. Their acknowledgements follow when they are queued.

use crate::digest_map::DigestMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use libp2p::PeerId;
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
                    let _ = acks.send((seq, verdict.clone()));
                }
            }
        }
    }
    if *verdict == Verdict::Delivered {
        // Only a delivered envelope proves its sender is reached through this peer.
        let mut learned = net.learned.lock();
        if learned.len() < super::super::MAX_LEARNED || learned.contains_key(&sender) {
            learned.insert(sender, peer);
        }
    }
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
        FirstCopy::Forgotten => Some(Verdict::rejected(Cause::Replayed, "its first copy's verdict is no longer known")),
        FirstCopy::Pending => {
            let mut awaiting = net.awaiting_first.lock();
            match later {
                Some((acks, seq)) if awaiting.len() < MAX_AWAITING_FIRST || awaiting.contains_key(&(sender, nonce)) => {
                    awaiting.entry((sender, nonce)).or_default().push((acks.clone(), seq));
                    net.awaiting_count.store(awaiting.len(), Ordering::Release);
                    None
                }
                _ => Some(Verdict::rejected(Cause::Replayed, "its first copy is still being delivered")),
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

/// One envelope waiting in its target's line.
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
}

/// The lines of envelopes waiting on one stream: for room in a full mailbox, or for the
/// acceptance ceiling to cover them.
pub(super) struct Lines {
    // Keyed by local agents only (a line or a mode exists only for an agent here), so the
    // digest hasher is safe.
    lines: DigestMap<Address, mpsc::UnboundedSender<Waiting>>,
    /// Whether each target acknowledges only once handled (fixed when the agent is added).
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
        Lines { lines: DigestMap::default(), when_handled: DigestMap::default(), waiting: Arc::default(), acks, peer }
    }

    /// Envelopes of this stream waiting in lines.
    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Delivers at once, or puts the envelope in its target's line: `None` then, and the
    /// verdict comes through `acks` later. Settles every verdict it gives.
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
        // The wait for room starts now; the clock is read only when the line is needed.
        let deadline = || Instant::now() + sink.wait_limit();
        if waiting_is_needless(raise.is_none(), handled.is_none(), &self.lines, &target) {
            match sink.offer(target, delivery) {
                Ok(()) => return Some(self.settled(net, sender, nonce, Verdict::Delivered)),
                Err(Blocked::Failed(failure, _)) => {
                    return Some(self.settled(net, sender, nonce, Verdict::Rejected(rejection_of(failure))))
                }
                Err(Blocked::Full(_, back)) => delivery = back,
            }
        }
        let mut waiting = Waiting { seq, sender, nonce, target, delivery, deadline: deadline(), raise, handled };
        if let Some(line) = self.lines.get(&target) {
            // Behind the envelopes already waiting for this agent, to keep their order.
            match line.send(waiting) {
                Ok(()) => {
                    self.waiting.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Err(mpsc::error::SendError(back)) => {
                    // The line emptied and closed.
                    self.lines.remove(&target);
                    waiting = back;
                }
            }
        }
        if waiting_is_needless(waiting.raise.is_none(), waiting.handled.is_none(), &self.lines, &target) {
            match sink.offer(target, waiting.delivery) {
                Ok(()) => return Some(self.settled(net, sender, nonce, Verdict::Delivered)),
                Err(Blocked::Failed(failure, _)) => {
                    return Some(self.settled(net, sender, nonce, Verdict::Rejected(rejection_of(failure))))
                }
                Err(Blocked::Full(_, delivery)) => waiting.delivery = delivery,
            }
        }
        if self.waiting() >= MAX_WAITING_PER_STREAM {
            let verdict = Verdict::rejected(Cause::MailboxFull, "too many envelopes from this peer are waiting");
            return Some(self.settled(net, sender, nonce, verdict));
        }
        let (line, queue) = mpsc::unbounded_channel();
        let _ = line.send(waiting);
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.lines.insert(target, line);
        let (net, sink, acks, count, peer) =
            (Arc::clone(net), Arc::clone(sink), self.acks.clone(), Arc::clone(&self.waiting), self.peer);
        tokio::spawn(wait_in_line(net, sink, queue, acks, count, peer));
        None
    }

    fn settled(&self, net: &Network, sender: Address, nonce: u64, verdict: Verdict) -> Verdict {
        settle(net, sender, nonce, self.peer, &verdict);
        verdict
    }
}

/// Whether an envelope may be offered to its agent at once: nothing to write first, no
/// handling to wait for, and no line of earlier envelopes for the same agent.
fn waiting_is_needless(
    covered: bool,
    queued_is_enough: bool,
    lines: &DigestMap<Address, mpsc::UnboundedSender<Waiting>>,
    target: &Address,
) -> bool {
    covered && queued_is_enough && lines.get(target).is_none_or(|line| line.is_closed())
}

/// Delivers one agent's line in order, and ends when the line is empty (closing it first,
/// so nothing is left behind).
async fn wait_in_line(
    net: Arc<Network>,
    sink: Arc<dyn Sink>,
    mut line: mpsc::UnboundedReceiver<Waiting>,
    acks: Acks,
    count: Arc<AtomicUsize>,
    peer: PeerId,
) {
    loop {
        let next = match line.try_recv() {
            Ok(next) => next,
            Err(mpsc::error::TryRecvError::Empty) => {
                line.close();
                match line.try_recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => return,
        };
        let (seq, sender, nonce) = (next.seq, next.sender, next.nonce);
        let verdict = deliver_waiting(&net, sink.as_ref(), next).await;
        count.fetch_sub(1, Ordering::Relaxed);
        settle(&net, sender, nonce, peer, &verdict);
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
                Err(_) => Verdict::rejected(Cause::MailboxFull, "the agent's mailbox stayed full until the deadline"),
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
