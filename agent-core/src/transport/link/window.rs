//! The envelopes a link has taken on and not yet seen answered: how each is written, and
//! how each ends (acknowledged, or past its deadline).

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

use super::super::frame::{Auth, Frame, Verdict};
use super::super::{Endpoint, Outbound, Outcome};
use crate::identity::Address;

pub(super) struct Sent {
    pub(super) out: Outbound,
    pub(super) seq: u64,
    /// How many streams it was written to: none means it never left.
    pub(super) attempts: u32,
}

pub(super) fn encode(buf: &mut Vec<u8>, sent: &mut Sent, bound: &mut HashMap<Address, u64>) {
    if let (Auth::Bound, Some(binding)) = (sent.out.auth, &sent.out.binding) {
        if bound.get(&sent.out.sender).is_none_or(|expires| *expires < binding.expires_ms) {
            Frame::Bind(binding.clone()).encode(buf);
            bound.insert(sent.out.sender, binding.expires_ms);
        }
    }
    // The envelope bytes are copied into the frame; they stay in `sent` for resends.
    Frame::Envelope { seq: sent.seq, auth: sent.out.auth, bytes: sent.out.bytes.clone() }.encode(buf);
}

pub(super) fn acknowledge(unacked: &mut VecDeque<Sent>, seq: u64, verdict: Verdict) {
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
    // The sender may have stopped waiting (its future was dropped): no one to tell.
    let _ = sent.out.done.send(outcome);
}

/// Reports the envelopes whose deadline has passed: timed out if they were written to a
/// stream (they may have arrived), unreachable with `last_failure` if never.
pub(super) fn expire(unacked: &mut VecDeque<Sent>, endpoint: &Endpoint, last_failure: &str) {
    let now = Instant::now();
    unacked.retain_mut(|sent| {
        if sent.out.deadline > now {
            return true;
        }
        let (done, _) = tokio::sync::oneshot::channel();
        let done = std::mem::replace(&mut sent.out.done, done);
        let (after, endpoint) = (sent.out.timeout, endpoint.to_string());
        // As above: a sender that stopped waiting needs no report.
        let _ = done.send(if sent.attempts == 0 {
            Outcome::Unreachable { after, endpoint, reason: last_failure.to_owned() }
        } else {
            Outcome::TimedOut { after, endpoint }
        });
        false
    });
}
