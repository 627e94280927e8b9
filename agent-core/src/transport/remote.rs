//! The transport's side of the [`RemoteSend`] seam: sealing messages for remote agents,
//! waiting for their replies, and answering remote requesters.

use std::sync::Arc;
use std::time::Duration;

use crate::trace::{message_span, traced};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::{Auth, BackReply, Network, Outcome};
use crate::delivery::RequestFailure;
use crate::envelope::{unix_now_ms, Envelope, Header};
use crate::error::{ReplyError, RequestError, SendFailure};
use crate::identity::{Address, Identity};
use crate::message::{Message, ProtocolDigest, SchemaDigest};
use crate::remote::{Incoming, Outgoing, RemoteSend, ReplyPath};

/// The answer a remote requester receives when the handler failed or did not reply.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema, crate::Message)]
#[message(name = "agora.RequestFailed")]
pub struct RequestFailed {
    /// True when the handler finished without replying; false when it failed.
    pub no_reply: bool,
    /// The handler's error.
    pub reason: String,
}

/// The longest lifetime an envelope asks for (receivers refuse longer by default).
const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// The libp2p node as the runtime sees it: a [`RemoteSend`].
pub(crate) struct Remote(pub(crate) Arc<Network>);

/// Refuses, before anything is sealed or queued, a payload no frame could carry.
fn check_size(net: &Network, to: Address, payload: &[u8]) -> Result<(), SendFailure> {
    let limit = net.max_payload();
    if payload.len() > limit {
        return Err(SendFailure::TooLarge { to, size: payload.len(), limit });
    }
    Ok(())
}

fn seal(net: &Network, identity: &Identity, to: Address, message: Outgoing, timeout: Duration) -> Envelope {
    // Valid for the whole delivery deadline, resends included, plus clock-skew slack.
    let lifetime = (timeout + Duration::from_secs(60)).min(MAX_LIFETIME).as_millis() as u64;
    let now = unix_now_ms();
    let Outgoing { schema, payload, header, .. } = message;
    match net.config.auth {
        Auth::Signed => Envelope::seal_raw(identity, to, schema, payload, header, now, lifetime),
        Auth::Bound => Envelope::unsigned(identity, to, schema, payload, header, now, lifetime),
    }
}

fn failure_of(to: Address, outcome: Outcome) -> Result<(), SendFailure> {
    match outcome {
        Outcome::Delivered => Ok(()),
        Outcome::Rejected(rejection) => Err(SendFailure::Rejected { to, rejection }),
        Outcome::Unroutable(reason) => Err(SendFailure::Unroutable { to, reason }),
        Outcome::Unreachable { after, endpoint, reason } => {
            Err(SendFailure::Unreachable { to, after, endpoint, reason })
        }
        Outcome::TimedOut { after, endpoint } => Err(SendFailure::NotAcknowledged { to, after, endpoint }),
    }
}

/// The span of one envelope in this node's transport.
fn transport_span(to: Address, trace_id: u128) -> Option<tracing::Span> {
    message_span!("transport", %to, trace_id = %format_args!("{trace_id:032x}"))
}

/// Removes a pending request when its wait ends, however it ends.
struct PendingGuard<'a> {
    net: &'a Network,
    key: (Address, u64),
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.net.pending.lock().remove(&self.key);
    }
}

#[async_trait::async_trait]
impl RemoteSend for Remote {
    async fn send(
        &self,
        from: &Identity,
        to: Address,
        message: Outgoing,
        timeout: Duration,
    ) -> Result<(), SendFailure> {
        let net = &self.0;
        check_size(net, to, &message.payload)?;
        let span = transport_span(to, message.header.trace_id);
        let envelope = seal(net, from, to, message, timeout);
        let outcome = traced!(span, net.send(Some(from), to, envelope.encode(), net.config.auth, timeout));
        failure_of(to, outcome)
    }

    async fn request(
        &self,
        from: &Identity,
        to: Address,
        message: Outgoing,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Incoming, RequestError> {
        let net = &self.0;
        check_size(net, to, &message.payload).map_err(RequestError::Send)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let message = Outgoing { header: Header { expects_reply: true, ..message.header }, ..message };
        let envelope = seal(net, from, to, message, remaining);
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let key = (from.address(), envelope.nonce);
        net.pending.lock().insert(key, (to, reply_tx));
        let _pending = PendingGuard { net, key };
        let span = transport_span(to, envelope.trace_id);
        let outcome = traced!(span, net.send(Some(from), to, envelope.encode(), net.config.auth, remaining));
        failure_of(to, outcome).map_err(RequestError::Send)?;
        let reply = match tokio::time::timeout_at(deadline, reply_rx).await {
            Err(_) => return Err(RequestError::Timeout { to, after: timeout }),
            Ok(Err(_)) => return Err(RequestError::Stopped { to }),
            Ok(Ok(reply)) => reply,
        };
        if reply.schema == RequestFailed::digest() {
            let failed: RequestFailed = serde_json::from_slice(&reply.payload)
                .unwrap_or(RequestFailed { no_reply: false, reason: "undecodable failure report".into() });
            return Err(if failed.no_reply {
                RequestError::NoReply { to }
            } else {
                RequestError::HandlerFailed { to, reason: failed.reason }
            });
        }
        Ok(Incoming { schema: reply.schema, payload: reply.payload })
    }

    fn delivery_timeout(&self) -> Duration {
        self.0.config.delivery_timeout
    }
}

/// A requester in another process, and how to answer it: back on the stream its request
/// came on, or, if that is gone, through a link of this node's own.
pub(crate) struct RemoteRequester {
    pub(crate) net: Arc<Network>,
    pub(crate) requester: Address,
    pub(crate) request_nonce: u64,
    pub(crate) session: u128,
    pub(crate) trace_id: u128,
    pub(crate) back: Option<mpsc::Sender<BackReply>>,
    /// The node the request came from, which the reply's outcome is counted under.
    pub(crate) peer: libp2p::PeerId,
    /// The request's place in its peer's quota of requests in flight, given back when the
    /// request is answered or abandoned. Held for its `Drop`, never read.
    #[allow(dead_code)]
    pub(crate) in_flight: Option<OwnedSemaphorePermit>,
}

impl RemoteRequester {
    /// Sends the reply: back on the request's stream, or through a link of our own.
    async fn answer(
        self: Box<Self>,
        from: &Identity,
        schema: SchemaDigest,
        payload: Vec<u8>,
        protocol: Option<ProtocolDigest>,
        timeout: Duration,
    ) -> Result<(), ReplyError> {
        let net = &self.net;
        let to = self.requester;
        check_size(net, to, &payload).map_err(ReplyError::Send)?;
        let header = Header {
            session: self.session,
            protocol,
            in_reply_to: Some(self.request_nonce),
            expects_reply: false,
            trace_id: self.trace_id,
        };
        let message = Outgoing { schema, name: "reply", payload, header };
        let Some(back) = self.back.as_ref().filter(|back| !back.is_closed()) else {
            // The request's stream is gone: answer through a link of our own.
            return Remote(Arc::clone(net)).send(from, to, message, timeout).await.map_err(ReplyError::Send);
        };
        let envelope = seal(net, from, to, message, timeout);
        let binding = (net.config.auth == Auth::Bound).then(|| net.binding_for(from));
        let (done, outcome) = tokio::sync::oneshot::channel();
        let reply =
            BackReply { sender: from.address(), binding, auth: net.config.auth, bytes: envelope.encode(), done };
        let stream = || "the request's stream".to_owned();
        // One deadline for the whole reply: a requester whose stream stopped draining
        // must not hold the replying agent.
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, back.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ReplyError::Send(SendFailure::Stopped { to })),
            Err(_) => {
                return Err(ReplyError::Send(SendFailure::Unreachable {
                    to,
                    after: timeout,
                    endpoint: stream(),
                    reason: "the requester is not taking replies".into(),
                }))
            }
        }
        let outcome = match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(outcome)) => outcome,
            // The stream closed, or no ack came in time: it may or may not have arrived.
            Ok(Err(_)) | Err(_) => Outcome::TimedOut { after: timeout, endpoint: stream() },
        };
        crate::metrics::outcome(Some(&self.peer), &outcome);
        failure_of(to, outcome).map_err(ReplyError::Send)
    }
}

#[async_trait::async_trait]
impl ReplyPath for RemoteRequester {
    fn requester(&self) -> Address {
        self.requester
    }

    async fn reply(
        self: Box<Self>,
        from: &Identity,
        schema: SchemaDigest,
        payload: Vec<u8>,
        protocol: Option<ProtocolDigest>,
        timeout: Duration,
    ) -> Result<(), ReplyError> {
        let (to, trace_id) = (self.requester, self.trace_id);
        let span = message_span!("reply", %to, trace_id = %format_args!("{trace_id:032x}"));
        traced!(span, self.answer(from, schema, payload, protocol, timeout))
    }

    async fn fail(self: Box<Self>, from: &Identity, failure: RequestFailure, timeout: Duration) {
        let report = match failure {
            RequestFailure::NoReply => RequestFailed { no_reply: true, reason: String::new() },
            RequestFailure::HandlerFailed(reason) => RequestFailed { no_reply: false, reason },
        };
        let requester = self.requester;
        let payload = match serde_json::to_vec(&report) {
            Ok(payload) => payload,
            Err(err) => {
                tracing::warn!(%requester, error = %err, "cannot encode a failure report");
                return;
            }
        };
        if let Err(err) = self.reply(from, RequestFailed::digest(), payload, None, timeout).await {
            tracing::warn!(%requester, error = %err, "could not report a failed request to its requester");
        }
    }
}
