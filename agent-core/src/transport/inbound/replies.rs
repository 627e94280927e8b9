//! Replies written back on an inbound stream, awaiting the requester's acknowledgements.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::super::frame::{Auth, Frame, Verdict};
use super::super::{BackReply, Outcome};
use crate::identity::Address;

#[derive(Default)]
pub(super) struct Replies {
    next_seq: u64,
    bound: HashMap<Address, u64>,
    awaiting: HashMap<u64, oneshot::Sender<Outcome>>,
}

impl Replies {
    pub(super) fn encode(&mut self, reply: BackReply, out: &mut Vec<u8>) {
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

    /// Whether no reply written here awaits its acknowledgement.
    pub(super) fn is_empty(&self) -> bool {
        self.awaiting.is_empty()
    }

    pub(super) fn acknowledge(&mut self, seq: u64, verdict: Verdict) {
        if let Some(done) = self.awaiting.remove(&seq) {
            // The replier may have stopped waiting for this ack (its deadline passed).
            let _ = done.send(match verdict {
                Verdict::Delivered => Outcome::Delivered,
                Verdict::Rejected(rejection) => Outcome::Rejected(rejection),
            });
        }
    }
}
