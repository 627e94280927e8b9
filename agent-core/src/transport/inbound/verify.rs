//! Checks on an arriving envelope before anything acts on it: batched signatures,
//! binding or signature, size, schema, clock, restart, and the replay guard.

use std::collections::HashMap;

use super::super::frame::{Auth, Frame, Verdict};
use super::super::Network;
use crate::envelope::{unix_now_ms, Envelope, EnvelopeError, VerifyPolicy};
use crate::error::Cause;
use crate::identity::Address;

pub(crate) type Decoded = Option<Result<(Envelope, bool), EnvelopeError>>;

/// Decodes the batch's envelopes and verifies the signed ones together (batch verification
/// is about twice as fast per signature). `true` marks a signature already checked.
pub(crate) fn verify_signatures(batch: &[Frame], net: &Network) -> Vec<Decoded> {
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

/// Why [`check`] refused an envelope.
pub(crate) enum Refusal {
    /// Answer with this.
    Verdict(Verdict),
    /// Its (sender, nonce) came before: answer with the first copy's verdict.
    Duplicate,
}

/// Everything a receiver checks before acting on an envelope: authentication (binding or
/// signature), size, schema, clock, that it was sealed after this node started, and the
/// replay guard, which then holds the envelope as pending until [`settle`](super::deliver::settle).
pub(crate) fn check(
    net: &Network,
    auth: Auth,
    envelope: &Envelope,
    signature_checked: bool,
    bindings: &HashMap<Address, u64>,
    known: impl Fn(&crate::SchemaDigest) -> bool,
) -> Result<(), Refusal> {
    let now = unix_now_ms();
    let policy = VerifyPolicy::default().with_max_payload(net.config.max_frame);
    let checked = match auth {
        Auth::Signed if !signature_checked => envelope.verify_stateless(&policy, now, known),
        Auth::Signed => envelope.verify_unsigned(&policy, now, known),
        Auth::Bound => match bindings.get(&envelope.sender) {
            Some(expires) if *expires >= now => envelope.verify_unsigned(&policy, now, known),
            Some(_) => return Err(refuse(Cause::NoBinding, "the sender's session binding has expired")),
            None => return Err(refuse(Cause::NoBinding, "the sender has no session binding on this connection")),
        },
    };
    checked.map_err(|err| Refusal::Verdict(Verdict::Rejected(err.rejection())))?;
    if net.ceiling.before_restart(&envelope.sender, envelope.timestamp_ms) {
        crate::metrics::replay_refused("restart");
        return Err(refuse(
            Cause::MayHaveBeenHandled,
            "sealed before this node started; an earlier copy may have been handled before it stopped",
        ));
    }
    match net.replay.lock().check_and_insert(envelope.sender, envelope.nonce, envelope.expires_ms, now) {
        Ok(()) => Ok(()),
        Err(EnvelopeError::Replayed { .. }) => Err(Refusal::Duplicate),
        Err(err) => {
            match err {
                EnvelopeError::ReplayGuardFull { .. } => crate::metrics::replay_refused("capacity"),
                EnvelopeError::BelowWindow { .. } => crate::metrics::replay_refused("below_window"),
                _ => {}
            }
            Err(Refusal::Verdict(Verdict::Rejected(err.rejection())))
        }
    }
}

fn refuse(cause: Cause, detail: &str) -> Refusal {
    Refusal::Verdict(Verdict::rejected(cause, detail))
}
