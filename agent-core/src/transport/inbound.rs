//! The receiving half: accepts envelope streams, checks each envelope (binding or batched
//! signature, clock, replay), hands it to the local agent, and acknowledges it.

use std::collections::HashMap;
use std::sync::Arc;

use futures::{AsyncReadExt, StreamExt};
use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::busy_poll::BusyPoll;
use super::frame::{self, Auth, Frame, FrameError, Verdict};
use super::{BackReply, Network, Outcome};
use crate::bureau::Shared;
use crate::envelope::{unix_now_ms, Envelope, EnvelopeError, VerifyPolicy};
use crate::handler::Body;
use crate::identity::Address;
use crate::router::{Delivery, RemoteRequester, ReplyTo};

/// Agents one stream may bind, at most (keys are free to make; memory is not).
const MAX_BINDINGS: usize = 10_000;

/// Frames handled (and signatures verified) per batch, at most.
const BATCH: usize = 64;

/// Envelope streams one peer may have open to this node at once (it needs one).
const MAX_STREAMS_PER_PEER: usize = 4;

/// What one peer holds of this node: open streams, and its quota of requests in flight
/// (shared by its streams, so opening more streams does not buy more).
struct Quota {
    streams: usize,
    requests: Arc<Semaphore>,
}

type Quotas = Arc<Mutex<HashMap<PeerId, Quota>>>;

/// One open stream counted in its peer's quota; closing it gives the place back.
struct StreamPlace {
    quotas: Quotas,
    peer: PeerId,
    requests: Arc<Semaphore>,
}

impl StreamPlace {
    fn take(quotas: &Quotas, peer: PeerId, max_requests: usize) -> Option<StreamPlace> {
        let mut all = quotas.lock();
        let quota =
            all.entry(peer).or_insert_with(|| Quota { streams: 0, requests: Arc::new(Semaphore::new(max_requests)) });
        if quota.streams >= MAX_STREAMS_PER_PEER {
            return None;
        }
        quota.streams += 1;
        Some(StreamPlace { quotas: Arc::clone(quotas), peer, requests: Arc::clone(&quota.requests) })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut all = self.quotas.lock();
        if let Some(quota) = all.get_mut(&self.peer) {
            quota.streams -= 1;
            if quota.streams == 0 {
                // Requests still in flight hold the semaphore itself; they finish normally.
                all.remove(&self.peer);
            }
        }
    }
}

pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    net: Arc<Network>,
    mut incoming: libp2p_stream::IncomingStreams,
    mut stop: watch::Receiver<bool>,
) {
    let quotas = Quotas::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            next = incoming.next() => match next {
                Some((peer, stream)) => match StreamPlace::take(&quotas, peer, net.config.max_requests_in_flight) {
                    Some(place) => {
                        tokio::spawn(serve(Arc::clone(&shared), Arc::clone(&net), peer, stream, place, stop.clone()));
                    }
                    None => tracing::warn!(%peer, limit = MAX_STREAMS_PER_PEER, "too many envelope streams from one peer; refusing another"),
                },
                None => return,
            },
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    net: Arc<Network>,
    peer: PeerId,
    stream: libp2p::Stream,
    place: StreamPlace,
    mut stop: watch::Receiver<bool>,
) {
    let (reader, mut writer) = stream.split();
    // Frames are read right here, not in a separate task: one task switch less per
    // message. The reader also tells which frames have already arrived, to batch them.
    let mut reader = frame::FrameReader::new(reader, net.config.max_frame);
    let mut bindings: HashMap<Address, u64> = HashMap::new();
    let silent_for = net.config.heartbeat * 3;
    let mut out = Vec::new();
    // Replies to requests that came on this stream go back on it, beside the acks.
    let (back_tx, mut back_rx) = mpsc::channel::<BackReply>(256);
    let mut replies = Replies::default();
    // A lazily re-armed idle timer: checked when it fires, never reset per frame.
    let mut last_heard = tokio::time::Instant::now();
    let idle = tokio::time::sleep(silent_for);
    tokio::pin!(idle);
    let mut busy = BusyPoll::new(net.config.busy_poll);
    loop {
        let polling = busy.polling();
        let first = tokio::select! {
            () = tokio::task::yield_now(), if polling => continue,
            _ = stop.changed() => break,
            () = &mut idle => {
                if last_heard.elapsed() >= silent_for {
                    tracing::debug!(%peer, "peer silent for three heartbeats; closing the stream");
                    break;
                }
                idle.as_mut().reset(last_heard + silent_for);
                continue;
            }
            Some(reply) = back_rx.recv() => {
                // Written below, with whatever else is ready by then.
                replies.encode(reply, &mut out);
                None
            }
            first = reader.next() => Some(first),
        };
        let mut batch = Vec::new();
        if let Some(first) = first {
            last_heard = tokio::time::Instant::now();
            busy.heard();
            match first {
                Ok(frame) => batch.push(frame),
                Err(err) => {
                    garbage(&net, peer, &err).await;
                    break;
                }
            }
        }
        let mut failure = None;
        while !batch.is_empty() && batch.len() < BATCH {
            match reader.try_next() {
                Ok(Some(frame)) => batch.push(frame),
                Ok(None) => break,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let verified = verify_signatures(&batch, &net);
        for (frame, decoded) in batch.into_iter().zip(verified) {
            match frame {
                Frame::Bind(binding) => match binding.verify(&peer, unix_now_ms()) {
                    Ok(()) if bindings.len() < MAX_BINDINGS || bindings.contains_key(&binding.agent) => {
                        bindings.insert(binding.agent, binding.expires_ms);
                    }
                    Ok(()) => tracing::warn!(%peer, "too many session bindings on one stream; refusing more"),
                    Err(err) => {
                        tracing::warn!(%peer, agent = %binding.agent, error = %err, "refused a session binding")
                    }
                },
                Frame::Envelope { seq, auth, .. } => {
                    let verdict = match decoded {
                        Some(Ok((envelope, signature_checked))) => {
                            let stream =
                                Inbound { peer, bindings: &bindings, back: &back_tx, requests: &place.requests };
                            accept(&shared, &net, &stream, auth, envelope, signature_checked).await
                        }
                        Some(Err(err)) => Verdict::Rejected(err.to_string()),
                        None => Verdict::Rejected("internal: envelope not decoded".into()),
                    };
                    if let Verdict::Rejected(reason) = &verdict {
                        tracing::warn!(%peer, %reason, "rejected an envelope");
                    }
                    Frame::Ack { seq, verdict }.encode(&mut out);
                }
                Frame::Ping(n) => Frame::Pong(n).encode(&mut out),
                Frame::Ack { seq, verdict } => replies.acknowledge(seq, verdict),
                Frame::Pong(_) => {
                    garbage(&net, peer, &FrameError::Malformed("a pong on an inbound stream")).await;
                    failure = None;
                    out.clear();
                    break;
                }
            }
        }
        if !out.is_empty() {
            // Let the agents just given work run first: a reply they send, or the next
            // request, then leaves in the same packet as these acks, and the peer wakes
            // once instead of twice.
            tokio::task::yield_now().await;
            while let Ok(reply) = back_rx.try_recv() {
                replies.encode(reply, &mut out);
            }
            if frame::write(&mut writer, &out, tokio::time::Instant::now() + silent_for).await.is_err() {
                break;
            }
            out.clear();
            busy.wrote();
        }
        if let Some(err) = failure {
            garbage(&net, peer, &err).await;
            break;
        }
    }
}

async fn garbage(net: &Network, peer: PeerId, err: &FrameError) {
    match err {
        FrameError::Io(_) => tracing::debug!(%peer, error = %err, "inbound stream closed"),
        _ => {
            tracing::warn!(%peer, error = %err, "peer sent garbage; disconnecting it");
            let _ = net.commands.send(super::node::Command::Disconnect(peer)).await;
        }
    }
}

type Decoded = Option<Result<(Envelope, bool), EnvelopeError>>;

/// Decodes the batch's envelopes and verifies the signed ones together (batch verification
/// is about twice as fast per signature). `true` marks a signature already checked.
fn verify_signatures(batch: &[Frame], net: &Network) -> Vec<Decoded> {
    let max_payload = net.config.max_frame;
    let mut decoded: Vec<Decoded> = batch
        .iter()
        .map(|frame| match frame {
            Frame::Envelope { bytes, .. } => Some(Envelope::decode(bytes, max_payload).map(|e| (e, false))),
            _ => None,
        })
        .collect();
    let signed: Vec<usize> = batch
        .iter()
        .enumerate()
        .filter(|(i, frame)| {
            matches!(frame, Frame::Envelope { auth: Auth::Signed, .. }) && matches!(decoded[*i], Some(Ok(_)))
        })
        .map(|(i, _)| i)
        .collect();
    if signed.len() < 2 {
        return decoded;
    }
    let mut items = Vec::with_capacity(signed.len());
    let mut bytes = Vec::with_capacity(signed.len());
    for &i in &signed {
        let Some(Ok((envelope, _))) = &decoded[i] else {
            continue;
        };
        if Address::from_public_key(&envelope.sender_key) != envelope.sender {
            continue; // Refused when it is checked on its own.
        }
        bytes.push((i, envelope.signed_bytes()));
    }
    for (i, signed_bytes) in &bytes {
        if let Some(Ok((envelope, _))) = &decoded[*i] {
            items.push((&envelope.sender_key, signed_bytes.as_slice(), &envelope.signature));
        }
    }
    let verified = crate::identity::verify_batch_strict(&items);
    let batched: Vec<usize> = bytes.iter().zip(verified).filter(|(_, ok)| *ok).map(|((i, _), _)| *i).collect();
    drop(items);
    for i in batched {
        if let Some(Ok((_, checked))) = &mut decoded[i] {
            *checked = true;
        }
    }
    // Envelopes not verified here are verified on their own below (strictly).
    decoded
}

/// The inbound stream an envelope came on, as far as accepting it is concerned.
struct Inbound<'a> {
    peer: PeerId,
    bindings: &'a HashMap<Address, u64>,
    back: &'a mpsc::Sender<BackReply>,
    requests: &'a Arc<Semaphore>,
}

async fn accept(
    shared: &Shared,
    net: &Network,
    stream: &Inbound<'_>,
    auth: Auth,
    envelope: Envelope,
    signature_checked: bool,
) -> Verdict {
    let target = envelope.target;
    let is_reply = envelope.in_reply_to.is_some();
    let known = |schema: &crate::SchemaDigest| is_reply || shared.router.accepts(&target, schema);
    if let Err(verdict) = check(net, stream.peer, auth, &envelope, signature_checked, stream.bindings, known) {
        return verdict;
    }
    if is_reply {
        return complete_reply(net, envelope);
    }
    let reply = if envelope.expects_reply {
        let Ok(in_flight) = Arc::clone(stream.requests).try_acquire_owned() else {
            let limit = net.config.max_requests_in_flight;
            return Verdict::Rejected(format!("too many requests in flight from this peer (at most {limit})"));
        };
        Some(ReplyTo::Remote(RemoteRequester {
            requester: envelope.sender,
            request_nonce: envelope.nonce,
            session: envelope.session,
            trace_id: envelope.trace_id,
            back: Some(stream.back.clone()),
            in_flight: Some(in_flight),
        }))
    } else {
        None
    };
    let delivery = Box::new(Delivery {
        from: envelope.sender,
        schema: envelope.schema,
        name: "remote message",
        session: envelope.session,
        trace_id: envelope.trace_id,
        body: Body::Json(envelope.payload),
        reply,
    });
    match shared.router.deliver(target, delivery, None, shared.config.send_timeout).await {
        Ok(()) => Verdict::Delivered,
        Err((failure, _)) => Verdict::Rejected(failure.to_string()),
    }
}

/// Everything a receiver checks before acting on an envelope: authentication (binding or
/// signature), size, schema, clock, that it was sealed after this node started, and the
/// replay guard. Remembers the sender's route on success.
pub(crate) fn check(
    net: &Network,
    peer: PeerId,
    auth: Auth,
    envelope: &Envelope,
    signature_checked: bool,
    bindings: &HashMap<Address, u64>,
    known: impl Fn(&crate::SchemaDigest) -> bool,
) -> Result<(), Verdict> {
    let now = unix_now_ms();
    let policy = VerifyPolicy::default().with_max_payload(net.config.max_frame);
    let checked = match auth {
        Auth::Signed if !signature_checked => envelope.verify_stateless(&policy, now, known),
        Auth::Signed => envelope.verify_unsigned(&policy, now, known),
        Auth::Bound => match bindings.get(&envelope.sender) {
            Some(expires) if *expires >= now => envelope.verify_unsigned(&policy, now, known),
            Some(_) => return Err(Verdict::Rejected("the sender's session binding has expired".into())),
            None => return Err(Verdict::Rejected("the sender has no session binding on this connection".into())),
        },
    };
    checked.map_err(|err| Verdict::Rejected(err.to_string()))?;
    if envelope.timestamp_ms < net.boot_ms {
        return Err(Verdict::Rejected("sealed before this node started; refused as a possible replay".into()));
    }
    match net.replay.lock().check_and_insert(envelope.sender, envelope.nonce, envelope.expires_ms, now) {
        Ok(()) => {}
        Err(EnvelopeError::Replayed { .. }) => return Err(Verdict::Duplicate),
        Err(err) => return Err(Verdict::Rejected(err.to_string())),
    }
    let mut learned = net.learned.lock();
    if learned.len() < super::MAX_LEARNED || learned.contains_key(&envelope.sender) {
        learned.insert(envelope.sender, peer);
    }
    Ok(())
}

/// Hands a checked reply to the request waiting for it (from its target only).
pub(crate) fn complete_reply(net: &Network, envelope: Envelope) -> Verdict {
    let Some(request_nonce) = envelope.in_reply_to else {
        return Verdict::Rejected("not a reply".into());
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
            Verdict::Rejected("a reply from an agent the request was not sent to".into())
        }
        None => Verdict::Rejected("no request is waiting for this reply (it may have timed out)".into()),
    }
}

/// Replies written back on an inbound stream, awaiting the requester's acks.
#[derive(Default)]
struct Replies {
    next_seq: u64,
    bound: HashMap<Address, u64>,
    awaiting: HashMap<u64, oneshot::Sender<Outcome>>,
}

impl Replies {
    fn encode(&mut self, reply: BackReply, out: &mut Vec<u8>) {
        if let (Auth::Bound, Some(binding)) = (reply.auth, &reply.binding) {
            if self.bound.get(&reply.sender).is_none_or(|expires| *expires < binding.expires_ms) {
                Frame::Bind(binding.clone()).encode(out);
                self.bound.insert(reply.sender, binding.expires_ms);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        Frame::Envelope { seq, auth: reply.auth, bytes: reply.bytes }.encode(out);
        self.awaiting.insert(seq, reply.done);
    }

    fn acknowledge(&mut self, seq: u64, verdict: Verdict) {
        if let Some(done) = self.awaiting.remove(&seq) {
            let _ = done.send(match verdict {
                Verdict::Delivered | Verdict::Duplicate => Outcome::Delivered,
                Verdict::Rejected(reason) => Outcome::Rejected(reason),
            });
        }
    }
}
