//! The sending half of the link to one peer: a bounded queue, one stream, a window of
//! unacknowledged envelopes, reconnection with backoff, and a final outcome for each.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::io::{ReadHalf, WriteHalf};
use futures::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::busy_poll::BusyPoll;
use super::frame::{self, Auth, Frame, Verdict};
use super::{Endpoint, Network, Outbound, Outcome};
use crate::error::Cause;
use crate::identity::Address;

struct Sent {
    out: Outbound,
    seq: u64,
    /// How many streams it was written to: none means it never left.
    attempts: u32,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why [`serve`] returns when the link had nothing to do for the idle period.
const IDLE: &str = "idle";

pub(crate) async fn run(net: Arc<Network>, endpoint: Endpoint, mut queue: mpsc::Receiver<Outbound>) {
    let mut unacked: VecDeque<Sent> = VecDeque::new();
    let mut backoff = MIN_BACKOFF;
    let mut queue_open = true;
    // Why the peer could not be reached last, for envelopes that never left.
    let mut last_failure = String::from("not connected yet");
    loop {
        expire(&mut unacked, &endpoint, &last_failure);
        if unacked.is_empty() {
            if !queue_open {
                return;
            }
            match tokio::time::timeout(net.config.idle_timeout, queue.recv()).await {
                Ok(Some(out)) => unacked.push_back(Sent { out, seq: 0, attempts: 0 }),
                Ok(None) => return,
                Err(_) => retire(&mut queue, &mut unacked, &mut queue_open),
            }
            continue;
        }
        let deadline = unacked.iter().map(|s| s.out.deadline).min().unwrap_or_else(Instant::now);
        let stream = match super::node::connect(&net, &endpoint, deadline).await {
            Ok(stream) => stream,
            Err(reason) => {
                tracing::debug!(peer = %endpoint.peer_id, %reason, "cannot reach peer; will retry");
                last_failure = reason;
                tokio::time::sleep_until((Instant::now() + backoff).min(deadline)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = MIN_BACKOFF;
        let (reader, writer) = stream.split();
        let ended = serve(&net, &endpoint, reader, writer, &mut unacked, &mut queue, &mut queue_open).await;
        tracing::debug!(reason = %ended, "stream ended");
        if ended == IDLE {
            // Dropping the stream lets the connection close once idle, so that a peer
            // talked to once does not hold a place in its connection limits forever.
            retire(&mut queue, &mut unacked, &mut queue_open);
        }
        last_failure = ended;
    }
}

/// Ends an idle link: closes its queue (the node then starts a new link for the next
/// send) and takes on what was queued before the close, to finish it.
fn retire(queue: &mut mpsc::Receiver<Outbound>, unacked: &mut VecDeque<Sent>, queue_open: &mut bool) {
    queue.close();
    *queue_open = false;
    while let Ok(out) = queue.try_recv() {
        unacked.push_back(Sent { out, seq: 0, attempts: 0 });
    }
}

/// Drives one stream until it breaks. Unacknowledged envelopes stay in `unacked`.
async fn serve(
    net: &Network,
    endpoint: &Endpoint,
    reader: ReadHalf<libp2p::Stream>,
    mut writer: WriteHalf<libp2p::Stream>,
    unacked: &mut VecDeque<Sent>,
    queue: &mut mpsc::Receiver<Outbound>,
    queue_open: &mut bool,
) -> String {
    let mut frames = frame::FrameReader::new(reader, net.config.max_frame);
    let mut bound: HashMap<Address, u64> = HashMap::new();
    // Bindings of the agents replying to us on this stream.
    let mut replier_bindings: HashMap<Address, u64> = HashMap::new();
    let mut next_seq = 0u64;
    let mut buf = Vec::new();
    for sent in unacked.iter_mut() {
        sent.seq = next_seq;
        next_seq += 1;
        sent.attempts += 1;
        encode(&mut buf, sent, &mut bound);
    }
    let heartbeat_period = net.config.heartbeat;
    // A write waits for the peer at most until the oldest envelope's deadline, and never
    // longer than a silent peer is given.
    let write_deadline = |oldest: Instant| oldest.min(Instant::now() + heartbeat_period * 3);
    let oldest = unacked.iter().map(|s| s.out.deadline).min().unwrap_or_else(Instant::now);
    if let Err(err) = frame::write(&mut writer, &buf, write_deadline(oldest)).await {
        return format!("write failed: {err}");
    }
    let window = net.config.window;
    // Ticks for heartbeats and for noticing idleness, whichever needs it more often.
    let idle_after = net.config.idle_timeout;
    let tick = heartbeat_period.min(idle_after / 2).max(Duration::from_millis(10));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + tick, tick);
    let mut last_heard = Instant::now();
    let mut last_ping = Instant::now();
    // When the last envelope was queued or acknowledged.
    let mut last_active = Instant::now();
    // One timer for all deadlines, armed for the soonest one (each envelope has its own),
    // moved earlier when a sooner one is queued and re-armed when it fires: no timer is
    // registered per envelope.
    let far = || Instant::now() + Duration::from_secs(3600);
    let soonest = |unacked: &VecDeque<Sent>| unacked.iter().map(|s| s.out.deadline).min();
    let expiry = tokio::time::sleep_until(soonest(unacked).unwrap_or_else(far));
    tokio::pin!(expiry);
    let mut busy = BusyPoll::new(net.config.busy_poll);
    busy.wrote();
    loop {
        let polling = !unacked.is_empty() && busy.polling();
        tokio::select! {
            () = tokio::task::yield_now(), if polling => {}
            item = queue.recv(), if *queue_open && unacked.len() < window => {
                last_active = Instant::now();
                let Some(out) = item else {
                    *queue_open = false;
                    if unacked.is_empty() {
                        return "queue closed".into();
                    }
                    continue;
                };
                buf.clear();
                let mut push = |out: Outbound, unacked: &mut VecDeque<Sent>, buf: &mut Vec<u8>| {
                    let mut sent = Sent { out, seq: next_seq, attempts: 1 };
                    next_seq += 1;
                    encode(buf, &mut sent, &mut bound);
                    unacked.push_back(sent);
                };
                let mut soonest = out.deadline;
                push(out, unacked, &mut buf);
                // Batch what is already queued into one write.
                while unacked.len() < window {
                    match queue.try_recv() {
                        Ok(out) => {
                            soonest = soonest.min(out.deadline);
                            push(out, unacked, &mut buf);
                        }
                        Err(_) => break,
                    }
                }
                if soonest < expiry.deadline() {
                    expiry.as_mut().reset(soonest);
                }
                if let Err(err) = frame::write(&mut writer, &buf, write_deadline(expiry.deadline())).await {
                    return format!("write failed: {err}");
                }
                busy.wrote();
            }
            frame = frames.next() => {
                last_heard = Instant::now();
                busy.heard();
                // This frame and every one that has already arrived: acks of what we sent,
                // and replies (with their bindings) to our requests, which we ack in one write.
                let mut acks = Vec::new();
                let mut next = frame.map(Some);
                loop {
                    match next {
                        Ok(Some(Frame::Ack { seq, verdict })) => {
                            last_active = last_heard;
                            acknowledge(unacked, seq, verdict)
                        }
                        Ok(Some(Frame::Pong(_))) => {}
                        Ok(Some(Frame::Bind(binding))) => match binding.verify(&endpoint.peer_id, crate::envelope::unix_now_ms()) {
                            Ok(()) if replier_bindings.len() < 10_000 || replier_bindings.contains_key(&binding.agent) => {
                                replier_bindings.insert(binding.agent, binding.expires_ms);
                            }
                            Ok(()) => {}
                            Err(err) => tracing::warn!(peer = %endpoint.peer_id, error = %err, "refused a reply binding"),
                        },
                        Ok(Some(Frame::Envelope { seq, auth, bytes })) => {
                            let verdict = reply_verdict(net, endpoint, auth, &bytes, &replier_bindings);
                            Frame::Ack { seq, verdict }.encode(&mut acks);
                        }
                        Ok(Some(Frame::Ping(_))) => return "unexpected ping from the receiver".into(),
                        Ok(None) => break,
                        Err(err) => return err.to_string(),
                    }
                    next = frames.try_next();
                }
                if !acks.is_empty() {
                    // Let the requesters just answered run first: the next request they
                    // send then leaves in the same packet as these acks.
                    tokio::task::yield_now().await;
                    while *queue_open && unacked.len() < window {
                        match queue.try_recv() {
                            Ok(out) => {
                                if out.deadline < expiry.deadline() {
                                    expiry.as_mut().reset(out.deadline);
                                }
                                let mut sent = Sent { out, seq: next_seq, attempts: 1 };
                                next_seq += 1;
                                encode(&mut acks, &mut sent, &mut bound);
                                unacked.push_back(sent);
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(err) = frame::write(&mut writer, &acks, write_deadline(expiry.deadline())).await {
                        return format!("write failed: {err}");
                    }
                    busy.wrote();
                }
                if !*queue_open && unacked.is_empty() {
                    return "done".into();
                }
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > heartbeat_period * 3 {
                    return "peer silent for three heartbeats".into();
                }
                if unacked.is_empty() && last_active.elapsed() >= idle_after {
                    return IDLE.into();
                }
                if last_ping.elapsed() < heartbeat_period {
                    continue;
                }
                last_ping = Instant::now();
                buf.clear();
                Frame::Ping(0).encode(&mut buf);
                if let Err(err) = frame::write(&mut writer, &buf, write_deadline(expiry.deadline())).await {
                    return format!("write failed: {err}");
                }
            }
            () = &mut expiry => {
                // Everything here was written to this stream: none can be unreachable.
                expire(unacked, endpoint, "");
                expiry.as_mut().reset(soonest(unacked).unwrap_or_else(far));
            }
        }
    }
}

/// The verdict on a reply that came back on this stream. Replies are settled at once, so a
/// resent reply is answered with its first copy's verdict without waiting.
fn reply_verdict(
    net: &Network,
    endpoint: &Endpoint,
    auth: Auth,
    bytes: &[u8],
    bindings: &HashMap<Address, u64>,
) -> Verdict {
    use super::inbound::{answer_resend, check, complete_reply, settle, Refusal};
    let envelope = match crate::envelope::Envelope::decode(bytes, net.config.max_frame) {
        Ok(envelope) if envelope.in_reply_to.is_some() => envelope,
        Ok(_) => return Verdict::rejected(Cause::Malformed, "only replies travel back on a sender's stream"),
        Err(err) => return Verdict::Rejected(err.rejection()),
    };
    let _span = tracing::debug_span!(
        "response",
        from = %envelope.sender,
        to = %envelope.target,
        trace_id = %format_args!("{:032x}", envelope.trace_id),
    )
    .entered();
    match check(net, auth, &envelope, false, bindings, |_| true) {
        Ok(()) => {
            let (sender, nonce) = (envelope.sender, envelope.nonce);
            let verdict = complete_reply(net, envelope);
            settle(net, sender, nonce, endpoint.peer_id, &verdict);
            verdict
        }
        Err(Refusal::Verdict(verdict)) => verdict,
        Err(Refusal::Duplicate) => answer_resend(net, envelope.sender, envelope.nonce, None)
            .unwrap_or_else(|| Verdict::rejected(Cause::Replayed, "its first copy is still being delivered")),
    }
}

fn encode(buf: &mut Vec<u8>, sent: &mut Sent, bound: &mut HashMap<Address, u64>) {
    if let (Auth::Bound, Some(binding)) = (sent.out.auth, &sent.out.binding) {
        if bound.get(&sent.out.sender).is_none_or(|expires| *expires < binding.expires_ms) {
            Frame::Bind(binding.clone()).encode(buf);
            bound.insert(sent.out.sender, binding.expires_ms);
        }
    }
    // The envelope bytes are copied into the frame; they stay in `sent` for resends.
    Frame::Envelope { seq: sent.seq, auth: sent.out.auth, bytes: sent.out.bytes.clone() }.encode(buf);
}

fn acknowledge(unacked: &mut VecDeque<Sent>, seq: u64, verdict: Verdict) {
    let Some(position) = unacked.iter().position(|s| s.seq == seq) else {
        return; // Already timed out and reported.
    };
    let Some(sent) = unacked.remove(position) else {
        return;
    };
    let outcome = match verdict {
        Verdict::Delivered => Outcome::Delivered,
        Verdict::Rejected(rejection) => Outcome::Rejected(rejection),
    };
    let _ = sent.out.done.send(outcome);
}

/// Reports the envelopes whose deadline has passed: timed out if they were written to a
/// stream (they may have arrived), unreachable with `last_failure` if never.
fn expire(unacked: &mut VecDeque<Sent>, endpoint: &Endpoint, last_failure: &str) {
    let now = Instant::now();
    unacked.retain_mut(|sent| {
        if sent.out.deadline > now {
            return true;
        }
        let (done, _) = tokio::sync::oneshot::channel();
        let done = std::mem::replace(&mut sent.out.done, done);
        let (after, endpoint) = (sent.out.timeout, endpoint.to_string());
        let _ = done.send(if sent.attempts == 0 {
            Outcome::Unreachable { after, endpoint, reason: last_failure.to_owned() }
        } else {
            Outcome::TimedOut { after, endpoint }
        });
        false
    });
}
