//! Replies that come back on a link's stream, answering requests sent on it.

use std::collections::HashMap;

use super::super::frame::{Auth, Verdict};
use super::super::{Endpoint, Network};
use crate::error::Cause;
use crate::identity::Address;

/// The verdict on a reply that came back on this stream. Replies are settled at once, so a
/// resent reply is answered with its first copy's verdict without waiting.
pub(super) fn reply_verdict(
    net: &Network,
    endpoint: &Endpoint,
    auth: Auth,
    bytes: &[u8],
    bindings: &HashMap<Address, u64>,
) -> Verdict {
    use super::super::inbound::{answer_resend, check, complete_reply, settle, Refusal};
    let envelope = match crate::envelope::Envelope::decode(bytes, net.config.max_frame) {
        Ok(envelope) if envelope.in_reply_to.is_some() => envelope,
        Ok(_) => return Verdict::rejected(Cause::Malformed, "only replies travel back on a sender's stream"),
        Err(err) => return Verdict::Rejected(err.rejection()),
    };
    let span = crate::trace::message_span!(
        "response",
        from = %envelope.sender,
        to = %envelope.target,
        trace_id = %format_args!("{:032x}", envelope.trace_id),
    );
    let _entered = span.as_ref().map(tracing::Span::enter);
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
