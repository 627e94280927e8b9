//! The network half of [`Context`]: sealing messages for remote agents, waiting for their
//! replies, and answering remote requesters.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Auth, BackReply, Network, Outcome};
use crate::context::Context;
use crate::envelope::{unix_now_ms, Envelope, Header};
use crate::error::{ReplyError, RequestError, SendFailure};
use crate::identity::{Address, Identity};
use crate::message::{Message, SchemaDigest};
use crate::router::{RemoteRequester, RequestFailure};

/// The answer a remote requester receives when the handler failed or did not reply.
#[derive(Debug, Serialize, Deserialize, crate::Message)]
#[message(name = "agora.RequestFailed")]
pub struct RequestFailed {
    /// True when the handler finished without replying; false when it failed.
    pub no_reply: bool,
    /// The handler's error.
    pub reason: String,
}

/// The longest lifetime an envelope asks for (receivers refuse longer by default).
const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// Refuses, before anything is sealed or queued, a payload no frame could carry.
fn check_size(net: &Network, to: Address, payload: &[u8]) -> Result<(), SendFailure> {
    let limit = net.max_payload();
    if payload.len() > limit {
        return Err(SendFailure::TooLarge { to, size: payload.len(), limit });
    }
    Ok(())
}

fn seal(
    net: &Network,
    identity: &Identity,
    to: Address,
    schema: SchemaDigest,
    payload: Vec<u8>,
    header: Header,
    timeout: Duration,
) -> Envelope {
    // Valid for the whole delivery deadline, resends included, plus clock-skew slack.
    let lifetime = (timeout + Duration::from_secs(60)).min(MAX_LIFETIME).as_millis() as u64;
    let now = unix_now_ms();
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

impl Context {
    pub(crate) fn network(&self) -> Option<&Arc<Network>> {
        self.cell.bureau.network.get()
    }

    pub(crate) async fn send_remote<M: Message>(
        &self,
        net: &Arc<Network>,
        to: Address,
        message: &M,
        header: Header,
        timeout: Duration,
    ) -> Result<(), SendFailure> {
        let payload = serde_json::to_vec(message).map_err(|e| SendFailure::Encode { to, reason: e.to_string() })?;
        check_size(net, to, &payload)?;
        let envelope = seal(net, &self.cell.identity, to, M::DIGEST, payload, header, timeout);
        let outcome = net.send(Some(&self.cell.identity), to, envelope.encode(), net.config.auth, timeout).await;
        failure_of(to, outcome)
    }

    pub(crate) async fn request_remote<Req: Message, Resp: Message>(
        &self,
        net: &Arc<Network>,
        to: Address,
        message: &Req,
        header: Header,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let payload = serde_json::to_vec(message)
            .map_err(|e| RequestError::Send(SendFailure::Encode { to, reason: e.to_string() }))?;
        check_size(net, to, &payload).map_err(RequestError::Send)?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let header = Header { expects_reply: true, ..header };
        let envelope = seal(net, &self.cell.identity, to, Req::DIGEST, payload, header, remaining);
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let key = (self.address(), envelope.nonce);
        net.pending.lock().insert(key, (to, reply_tx));
        let _pending = PendingGuard { net, key };
        let outcome = net.send(Some(&self.cell.identity), to, envelope.encode(), net.config.auth, remaining).await;
        failure_of(to, outcome).map_err(RequestError::Send)?;
        let reply = match tokio::time::timeout_at(deadline, reply_rx).await {
            Err(_) => return Err(RequestError::Timeout { to, after: timeout }),
            Ok(Err(_)) => return Err(RequestError::Stopped { to }),
            Ok(Ok(reply)) => reply,
        };
        if reply.schema == RequestFailed::DIGEST {
            let failed: RequestFailed = serde_json::from_slice(&reply.payload)
                .unwrap_or(RequestFailed { no_reply: false, reason: "undecodable failure report".into() });
            return Err(if failed.no_reply {
                RequestError::NoReply { to }
            } else {
                RequestError::HandlerFailed { to, reason: failed.reason }
            });
        }
        if reply.schema != Resp::DIGEST {
            return Err(RequestError::WrongReplyType {
                to,
                expected: Resp::NAME,
                got: format!("schema {}", reply.schema),
            });
        }
        serde_json::from_slice(&reply.payload).map_err(|e| RequestError::WrongReplyType {
            to,
            expected: Resp::NAME,
            got: format!("undecodable payload: {e}"),
        })
    }

    pub(crate) async fn reply_remote<M: Message>(&self, to: RemoteRequester, message: &M) -> Result<(), ReplyError> {
        let Some(net) = self.network() else {
            return Err(ReplyError::Send(SendFailure::Stopped { to: to.requester }));
        };
        let header = Header {
            session: to.session,
            protocol: None,
            in_reply_to: Some(to.request_nonce),
            expects_reply: false,
            trace_id: to.trace_id,
        };
        let timeout = self.cell.bureau.config.send_timeout;
        let Some(back) = to.back.filter(|back| !back.is_closed()) else {
            // The request's stream is gone: answer through a link of our own.
            return self.send_remote(net, to.requester, message, header, timeout).await.map_err(ReplyError::Send);
        };
        let payload = serde_json::to_vec(message)
            .map_err(|e| ReplyError::Send(SendFailure::Encode { to: to.requester, reason: e.to_string() }))?;
        check_size(net, to.requester, &payload).map_err(ReplyError::Send)?;
        let identity = &self.cell.identity;
        let envelope = seal(net, identity, to.requester, M::DIGEST, payload, header, timeout);
        let binding = (net.config.auth == Auth::Bound).then(|| net.binding_for(identity));
        let (done, outcome) = tokio::sync::oneshot::channel();
        let reply =
            BackReply { sender: identity.address(), binding, auth: net.config.auth, bytes: envelope.encode(), done };
        let not_acknowledged = || {
            ReplyError::Send(SendFailure::NotAcknowledged {
                to: to.requester,
                after: timeout,
                endpoint: "the request's stream".into(),
            })
        };
        // One deadline for the whole reply: a requester whose stream stopped draining
        // must not hold the replying agent.
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, back.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ReplyError::Send(SendFailure::Stopped { to: to.requester })),
            Err(_) => {
                return Err(ReplyError::Send(SendFailure::Unreachable {
                    to: to.requester,
                    after: timeout,
                    endpoint: "the request's stream".into(),
                    reason: "the requester is not taking replies".into(),
                }))
            }
        }
        match tokio::time::timeout_at(deadline, outcome).await {
            Ok(Ok(outcome)) => failure_of(to.requester, outcome).map_err(ReplyError::Send),
            // The stream closed, or no ack came in time: it may or may not have arrived.
            Ok(Err(_)) | Err(_) => Err(not_acknowledged()),
        }
    }
}

/// Tells a remote requester that its request failed or got no reply.
pub(crate) async fn report_failure(ctx: &Context, to: RemoteRequester, failure: RequestFailure) {
    let report = match failure {
        RequestFailure::NoReply => RequestFailed { no_reply: true, reason: String::new() },
        RequestFailure::HandlerFailed(reason) => RequestFailed { no_reply: false, reason },
    };
    let requester = to.requester;
    if let Err(err) = ctx.reply_remote(to, &report).await {
        tracing::warn!(%requester, error = %err, "could not report a failed request to its requester");
    }
}
