//! Remembers which (sender, nonce) pairs were accepted, until their envelopes expire.

use std::collections::{BTreeSet, HashMap};

use super::EnvelopeError;
use crate::identity::Address;

/// A bounded memory of accepted (sender, nonce) pairs.
///
/// An envelope is refused once its expiry has passed, so a nonce needs remembering only
/// until then: entries are pruned as they expire. When `capacity` unexpired nonces are
/// held, new envelopes are refused with [`EnvelopeError::ReplayGuardFull`] rather than
/// forgetting a nonce early, which would let a replay through.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashMap<(Address, u64), u64>,
    by_expiry: BTreeSet<(u64, Address, u64)>,
    capacity: usize,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

impl ReplayGuard {
    /// A guard that holds at most `capacity` unexpired nonces.
    pub fn with_capacity(capacity: usize) -> Self {
        ReplayGuard { seen: HashMap::new(), by_expiry: BTreeSet::new(), capacity }
    }

    /// Records (sender, nonce) until `expires_ms`, or refuses it as a replay.
    pub fn check_and_insert(
        &mut self,
        sender: Address,
        nonce: u64,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), EnvelopeError> {
        self.prune(now_ms);
        if self.seen.contains_key(&(sender, nonce)) {
            return Err(EnvelopeError::Replayed { sender, nonce });
        }
        if self.seen.len() >= self.capacity {
            return Err(EnvelopeError::ReplayGuardFull { capacity: self.capacity });
        }
        self.seen.insert((sender, nonce), expires_ms);
        self.by_expiry.insert((expires_ms, sender, nonce));
        Ok(())
    }

    /// Forgets every nonce whose envelope expired before `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        while let Some(&(expires, sender, nonce)) = self.by_expiry.first() {
            if expires >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(sender, nonce));
        }
    }

    /// How many unexpired nonces are held.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is held.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
