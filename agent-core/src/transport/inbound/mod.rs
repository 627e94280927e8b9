//! The receiving half: accepts envelope streams, checks each envelope (binding or batched
//! signature, clock, replay), hands it to the local agent, and acknowledges it.
//!
//! One file per concern: `quota` (what a peer may hold, bans), `verify` (checks before
//! acting), `deliver` (handing over, verdict memory, lines for full mailboxes), `replies`
//! (answers written back on the request's stream). This file runs the streams.

mod deliver;
mod quota;
mod replies;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{AsyncReadExt, StreamExt};
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use super::busy_poll::BusyPoll;
use super::frame::{self, Auth, Frame, FrameError, Verdict};
use super::remote::RemoteRequester;
use super::{BackReply, Network, Sink};
use crate::delivery::{Body, Delivery, ReplyTo};
use crate::envelope::{unix_now_ms, Envelope};
use crate::error::Cause;
use crate::identity::Address;

pub(crate) use deliver::{answer_resend, complete_reply, settle, LaterAck, LineMap};
pub(crate) use verify::{check, Refusal};

use deliver::{Arrival, Lines};
use quota::{Quotas, StreamPlace};

/// Agents one stream may bind, at most (keys are free to make; memory is not).
const MAX_BINDINGS: usize = 10_000;

/// Frames handled (and signatures verified) per batch, at most.
const BATCH: usize = 64;

pub(crate) async fn accept_loop(
    sink: Arc<dyn Sink>,
    net: Arc<Network>,
    mut incoming: libp2p_stream::IncomingStreams,
    mut stop: watch::Receiver<bool>,
) {
    let quotas = Quotas::default();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            next = incoming.next() => match next {
                Some((peer, stream)) => match quotas.take(peer, net.config.max_requests_in_flight) {
                    Ok(place) => {
                        let inbound = InboundStream { sink: Arc::clone(&sink), net: Arc::clone(&net), peer, place, quotas: quotas.clone() };
                        let span = tracing::debug_span!("inbound", %peer);
                        net.tasks.spawn(tracing::Instrument::instrument(inbound.serve(stream, stop.clone()), span));
                    }
                    Err(quota::Refused::TooManyStreams) => {
                        crate::metrics::quota_refused("streams_per_peer");
                        tracing::warn!(%peer, limit = quota::MAX_STREAMS_PER_PEER, "too many envelope streams from one peer; refusing another");
                    }
                    Err(quota::Refused::Banned { remaining }) => {
                        crate::metrics::quota_refused("banned_peer");
                        tracing::debug!(%peer, ?remaining, "refused a stream from a banned peer");
                        // The swarm task is gone only when the node stopped, connections with it.
                        let _ = net.commands.try_send(super::node::Command::Disconnect(peer));
                    }
                },
                None => return,
            },
        }
    }
}

/// One inbound stream and what it needs.
struct InboundStream {
    sink: Arc<dyn Sink>,
    net: Arc<Network>,
    peer: PeerId,
    place: StreamPlace,
    quotas: Quotas,
}

/// What a stream knows while it runs: bindings, replies, lines, failures seen.
struct StreamState {
    bindings: HashMap<Address, u64>,
    back: mpsc::Sender<BackReply>,
    lines: Lines,
    auth_failures: u32,
}

impl InboundStream {
    async fn serve(self, stream: libp2p::Stream, mut stop: watch::Receiver<bool>) {
        let net = Arc::clone(&self.net);
        let peer = self.peer;
        let (reader, mut writer) = stream.split();
        // Frames are read right here, not in a separate task: one task switch less per
        // message. The reader also tells which frames have already arrived, to batch them.
        let mut reader = frame::FrameReader::new(reader, net.config.max_frame);
        let silent_for = net.config.heartbeat * 3;
        let mut out = Vec::new();
        // Replies to requests that came on this stream go back on it, beside the acks.
        let (back_tx, mut back_rx) = mpsc::channel::<BackReply>(256);
        // Verdicts given later: envelopes that waited for a full mailbox, resends that
        // waited for their first copy.
        let (acks_tx, mut acks_rx) = mpsc::unbounded_channel::<(u64, Verdict)>();
        let mut state =
            StreamState { bindings: HashMap::new(), back: back_tx, lines: Lines::new(acks_tx, peer), auth_failures: 0 };
        let mut replies = replies::Replies::default();
        // A lazily re-armed idle timer: checked when it fires, never reset per frame.
        let mut last_heard = tokio::time::Instant::now();
        // When an envelope last came; a stream carrying only heartbeats for the idle
        // period is closed, so that its connection can close and free its place.
        let mut last_envelope = last_heard;
        let check_every = silent_for.min(net.config.idle_timeout);
        let idle = tokio::time::sleep(check_every);
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
                    // Idle: nothing came, nothing waits for a mailbox, no request here is
                    // being answered (its reply would come back on this stream).
                    let answering = state.back.strong_count() > 1 || !replies.is_empty() || state.lines.waiting() > 0;
                    if last_envelope.elapsed() >= net.config.idle_timeout && !answering {
                        tracing::debug!(%peer, "stream idle; closing it");
                        break;
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + check_every);
                    continue;
                }
                Some(reply) = back_rx.recv() => {
                    // Written below, with whatever else is ready by then.
                    replies.encode(reply, &mut out);
                    None
                }
                Some((seq, verdict)) = acks_rx.recv() => {
                    Frame::Ack { seq, verdict }.encode(&mut out);
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
            let verified = verify::verify_signatures(&batch, &net);
            for (frame, decoded) in batch.into_iter().zip(verified) {
                match frame {
                    Frame::Bind(binding) => match binding.verify(&peer, unix_now_ms()) {
                        Ok(())
                            if state.bindings.len() < MAX_BINDINGS || state.bindings.contains_key(&binding.agent) =>
                        {
                            state.bindings.insert(binding.agent, binding.expires_ms);
                        }
                        Ok(()) => tracing::warn!(%peer, "too many session bindings on one stream; refusing more"),
                        Err(err) => {
                            tracing::warn!(%peer, agent = %binding.agent, error = %err, "refused a session binding");
                            state.auth_failures += 1;
                        }
                    },
                    Frame::Envelope { seq, auth, .. } => {
                        last_envelope = last_heard;
                        let verdict = match decoded {
                            Some(Ok((envelope, signature_checked))) => {
                                self.accept(&mut state, seq, auth, envelope, signature_checked)
                            }
                            Some(Err(err)) => Some(Verdict::Rejected(err.rejection())),
                            None => Some(Verdict::rejected(Cause::Malformed, "internal: envelope not decoded")),
                        };
                        if let Some(verdict) = verdict {
                            if let Verdict::Rejected(rejection) = &verdict {
                                tracing::debug!(%peer, %rejection, "rejected an envelope");
                                if rejection.cause.is_authentication_failure() {
                                    state.auth_failures += 1;
                                }
                            }
                            Frame::Ack { seq, verdict }.encode(&mut out);
                        }
                    }
                    Frame::Ping(n) => Frame::Pong(n).encode(&mut out),
                    Frame::Ack { seq, verdict } => replies.acknowledge(seq, verdict),
                    Frame::Pong(_) => {
                        failure = Some(FrameError::Malformed("a pong on an inbound stream"));
                        out.clear();
                        break;
                    }
                }
            }
            if state.auth_failures > quota::AUTH_FAILURES_ALLOWED {
                let banned_for = self.quotas.ban(peer);
                crate::metrics::peer_banned();
                tracing::warn!(%peer, ?banned_for, "peer sent envelopes or bindings failing authentication; disconnecting and banning it");
                // The swarm task is gone only when the node stopped, connections with it.
                let _ = net.commands.send(super::node::Command::Disconnect(peer)).await;
                break;
            }
            if !out.is_empty() {
                // Let the agents just given work run first: a reply they send, or the next
                // request, then leaves in the same packet as these acks, and the peer wakes
                // once instead of twice.
                tokio::task::yield_now().await;
                while let Ok(reply) = back_rx.try_recv() {
                    replies.encode(reply, &mut out);
                }
                while let Ok((seq, verdict)) = acks_rx.try_recv() {
                    Frame::Ack { seq, verdict }.encode(&mut out);
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

    /// Checks and delivers one envelope. `None`: the verdict follows through the stream's
    /// acks once known.
    fn accept(
        &self,
        state: &mut StreamState,
        seq: u64,
        auth: Auth,
        envelope: Envelope,
        signature_checked: bool,
    ) -> Option<Verdict> {
        let net = &self.net;
        let target = envelope.target;
        let span = crate::trace::message_span!(
            "deliver",
            peer = %self.peer,
            from = %envelope.sender,
            to = %target,
            trace_id = %format_args!("{:032x}", envelope.trace_id),
            protocol = %envelope.protocol.map(|p| p.to_string()).unwrap_or_default(),
        );
        let _entered = span.as_ref().map(tracing::Span::enter);
        let is_reply = envelope.in_reply_to.is_some();
        let known = |schema: &crate::SchemaDigest| is_reply || self.sink.accepts(&target, schema);
        match check(net, auth, &envelope, signature_checked, &state.bindings, known) {
            Ok(()) => {}
            Err(Refusal::Verdict(verdict)) => return Some(verdict),
            Err(Refusal::Duplicate) => {
                return answer_resend(net, envelope.sender, envelope.nonce, Some((&state.lines.acks, seq)))
            }
        }
        let (sender, nonce, timestamp_ms) = (envelope.sender, envelope.nonce, envelope.timestamp_ms);
        if is_reply {
            let verdict = complete_reply(net, envelope);
            settle(net, sender, nonce, self.peer, &verdict);
            return Some(verdict);
        }
        let reply = if envelope.expects_reply {
            let Ok(in_flight) = Arc::clone(&self.place.requests).try_acquire_owned() else {
                crate::metrics::quota_refused("requests_in_flight");
                let limit = net.config.max_requests_in_flight;
                let verdict = Verdict::rejected(
                    Cause::QuotaExceeded,
                    format!("at most {limit} requests in flight from one peer"),
                );
                settle(net, sender, nonce, self.peer, &verdict);
                return Some(verdict);
            };
            Some(ReplyTo::Remote(Box::new(RemoteRequester {
                net: Arc::clone(net),
                requester: envelope.sender,
                request_nonce: envelope.nonce,
                session: envelope.session,
                trace_id: envelope.trace_id,
                back: Some(state.back.clone()),
                peer: self.peer,
                in_flight: Some(in_flight),
            })))
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
            handled: None,
        });
        let arrival = Arrival { seq, sender, nonce, target, timestamp_ms };
        state.lines.deliver(net, &self.sink, arrival, delivery)
    }
}

async fn garbage(net: &Network, peer: PeerId, err: &FrameError) {
    match err {
        FrameError::Io(_) => tracing::debug!(%peer, error = %err, "inbound stream closed"),
        _ => {
            tracing::warn!(%peer, error = %err, "peer sent garbage; disconnecting it");
            // The swarm task is gone only when the node stopped, connections with it.
            let _ = net.commands.send(super::node::Command::Disconnect(peer)).await;
        }
    }
}
