//! Remembers which (sender, nonce) pairs were accepted, in a bounded window per sender.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::EnvelopeError;
use crate::error::Cause;
use crate::identity::Address;

/// What became of the first copy of an envelope, as its receiver remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstCopy {
    /// Accepted by the guard; its delivery has not ended yet.
    Pending,
    /// Delivered to its agent.
    Delivered,
    /// Refused, for this cause.
    Rejected(Cause),
    /// Seen, but summed up in the sender's floor or expired: its verdict is forgotten.
    Forgotten,
}

/// Nonces remembered per sender, at most; older ones are summed up by the sender's floor.
pub const WINDOW_PER_SENDER: usize = 16_384;

/// A bounded memory of accepted (sender, nonce) pairs.
///
/// Senders number their envelopes with increasing nonces ([`next_nonce`](super::next_nonce)),
/// so a receiver need not remember every nonce until its envelope expires, which at a high
/// rate would be millions. Per sender it keeps the last [`WINDOW_PER_SENDER`] nonces
/// exactly and a floor below them: a nonce at or under the floor is refused
/// ([`EnvelopeError::BelowWindow`]), a nonce in the window is refused if seen
/// ([`EnvelopeError::Replayed`]). Envelopes from one sender may arrive out of order by
/// up to the window (the transport's queues and windows are far smaller). Entries also
/// leave when their envelopes expire, since an expired envelope is refused anyway.
///
/// `capacity` bounds the entries of all senders together: at capacity, a known sender's
/// new nonce pushes out its own oldest one (raising its floor), and a sender with nothing
/// to give back is refused with [`EnvelopeError::ReplayGuardFull`] rather than forgetting a
/// nonce early, which would let a replay through.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: HashMap<Address, Window>,
    /// Every remembered nonce, by the expiry of its envelope.
    by_expiry: BTreeSet<(u64, Address, u64)>,
    /// Every floor, by the expiry of the last envelope it sums up.
    floors: BTreeSet<(u64, Address)>,
    capacity: usize,
}

/// What is remembered of one sender.
#[derive(Debug, Default)]
struct Window {
    /// Nonce → expiry of its envelope, and what became of it.
    seen: BTreeMap<u64, (u64, FirstCopy)>,
    /// Every nonce at or under this is refused.
    floor: Option<u64>,
    /// When the last envelope summed up by the floor expires; the floor is needed until then.
    floor_until: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

impl ReplayGuard {
    /// A guard that holds at most `capacity` nonces, all senders together.
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard {
            senders: HashMap::new(),
            by_expiry: BTreeSet::new(),
            floors: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records (sender, nonce) until `expires_ms`, or refuses it as a (possible) replay.
    pub fn check_and_insert(
        &mut self,
        sender: Address,
        nonce: u64,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), EnvelopeError> {
        self.prune(now_ms);
        let full = self.by_expiry.len() >= self.capacity;
        let window = match self.senders.get_mut(&sender) {
            Some(window) => window,
            None if full => return Err(EnvelopeError::ReplayGuardFull { capacity: self.capacity }),
            None => self.senders.entry(sender).or_default(),
        };
        if let Some(floor) = window.floor.filter(|floor| nonce <= *floor) {
            return Err(EnvelopeError::BelowWindow { sender, nonce, floor });
        }
        if window.seen.contains_key(&nonce) {
            return Err(EnvelopeError::Replayed { sender, nonce });
        }
        if full && window.seen.is_empty() {
            return Err(EnvelopeError::ReplayGuardFull { capacity: self.capacity });
        }
        window.seen.insert(nonce, (expires_ms, FirstCopy::Pending));
        self.by_expiry.insert((expires_ms, sender, nonce));
        if full || window.seen.len() > WINDOW_PER_SENDER {
            // Sum the oldest nonce up in the floor; it may be the one just accepted.
            if let Some((oldest, (expires, _))) = window.seen.pop_first() {
                self.by_expiry.remove(&(expires, sender, oldest));
                window.floor = Some(oldest);
                if expires > window.floor_until {
                    self.floors.remove(&(window.floor_until, sender));
                    window.floor_until = expires;
                    self.floors.insert((expires, sender));
                }
            }
        }
        Ok(())
    }

    /// Records what became of the envelope (sender, nonce) accepted earlier, so that a
    /// resend of it can be answered with the same verdict.
    pub fn settle(&mut self, sender: Address, nonce: u64, outcome: FirstCopy) {
        if let Some((_, first)) = self.senders.get_mut(&sender).and_then(|window| window.seen.get_mut(&nonce)) {
            *first = outcome;
        }
    }

    /// What became of the first copy of (sender, nonce), for a copy the guard refused.
    pub fn first_copy(&self, sender: &Address, nonce: u64) -> FirstCopy {
        match self.senders.get(sender).and_then(|window| window.seen.get(&nonce)) {
            Some((_, first)) => *first,
            None => FirstCopy::Forgotten,
        }
    }

    /// Forgets every nonce whose envelope expired before `now_ms`, and the senders of whom
    /// nothing unexpired is left.
    pub fn prune(&mut self, now_ms: u64) {
        while let Some(&(expires, sender, nonce)) = self.by_expiry.first() {
            if expires >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            if let Some(window) = self.senders.get_mut(&sender) {
                window.seen.remove(&nonce);
                if window.seen.is_empty() && window.floor.is_none() {
                    self.senders.remove(&sender);
                }
            }
        }
        // A floor is needed while an envelope it sums up could still be accepted.
        while let Some(&(until, sender)) = self.floors.first() {
            if until >= now_ms {
                break;
            }
            self.floors.pop_first();
            if let Some(window) = self.senders.get_mut(&sender) {
                window.floor = None;
                window.floor_until = 0;
                if window.seen.is_empty() {
                    self.senders.remove(&sender);
                }
            }
        }
    }

    /// How many nonces are held.
    pub fn len(&self) -> usize {
        self.by_expiry.len()
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.by_expiry.is_empty()
    }
}
