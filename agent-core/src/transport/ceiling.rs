//! What keeps a restarted node from handling an envelope twice: durable ceilings on the
//! timestamps it has accepted.
//!
//! The replay guard lives in memory and is lost with the process. Every envelope a node
//! accepts is stamped below a ceiling that is on disk before the envelope is acknowledged.
//! A restarted node refuses, as [`Cause::MayHaveBeenHandled`](crate::Cause::MayHaveBeenHandled),
//! every envelope stamped below the ceilings it left: exactly those it may have handled
//! before it stopped, including ones stamped up to the allowed clock skew ahead.
//!
//! One ceiling covers every sender and is kept a little ahead of the clock ([`AHEAD`]) by
//! a background task, one small durable write every half of that: envelopes from senders
//! whose clocks agree with this node's never wait for it. A sender stamping further ahead
//! gets a ceiling of its own, written before its envelope is acknowledged, so its clock
//! delays no one else's envelopes after a restart. Those are forgotten once the clock
//! passes them. A graceful stop lowers the shared ceiling to just above what it covered;
//! after a crash, a node restarted within [`AHEAD`] waits out the rest before accepting,
//! rather than refusing fresh envelopes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::envelope::unix_now_ms;
use crate::identity::Address;
use crate::store::{StoreError, Table, WriteBehind};

const TABLE: Table = Table::new("agora.transport");
const SHARED_KEY: &[u8] = b"ceiling";
const SENDER_PREFIX: &[u8] = b"ceiling/";

/// How far ahead of the clock the shared ceiling is kept.
pub(crate) const AHEAD: Duration = Duration::from_secs(2);

/// Senders with a ceiling of their own, at most; past it, the shared ceiling is raised.
const MAX_SENDER_CEILINGS: usize = 100_000;

pub(crate) struct Ceiling {
    /// Every envelope accepted from now on is stamped below this, or below its sender's.
    shared: AtomicU64,
    /// The highest timestamp accepted under the shared ceiling.
    highest: AtomicU64,
    /// Ceilings of senders stamping ahead of the shared one.
    senders: Mutex<HashMap<Address, u64>>,
    /// What the previous run left: envelopes stamped below may have been handled by it.
    previous_shared: u64,
    previous_senders: HashMap<Address, u64>,
    store: Option<WriteBehind>,
    raising: tokio::sync::Mutex<()>,
}

fn sender_key(sender: &Address) -> Vec<u8> {
    [SENDER_PREFIX, sender.as_bytes().as_slice()].concat()
}

fn decode(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

impl Ceiling {
    /// The ceilings left by the previous run in `store`. Without a store (a node whose
    /// bureau keeps storage in memory), nothing survives a restart, and only envelopes
    /// sealed before this start are refused.
    pub(crate) fn load(store: Option<WriteBehind>) -> Result<Ceiling, StoreError> {
        let now = unix_now_ms();
        let (mut previous_shared, mut previous_senders) = (now, HashMap::new());
        if let Some(store) = &store {
            if let Some(shared) = store.get(TABLE, SHARED_KEY)?.as_deref().and_then(decode) {
                previous_shared = previous_shared.max(shared);
            }
            for (key, value) in store.scan_prefix(TABLE, SENDER_PREFIX)? {
                let address = key.get(SENDER_PREFIX.len()..).and_then(|bytes| bytes.try_into().ok());
                if let (Some(address), Some(ceiling)) = (address, decode(&value)) {
                    previous_senders.insert(Address::from_bytes(address), ceiling);
                }
            }
        }
        let shared = if store.is_some() { previous_shared } else { u64::MAX };
        Ok(Ceiling {
            shared: AtomicU64::new(shared),
            highest: AtomicU64::new(0),
            senders: Mutex::new(previous_senders.clone()),
            previous_shared,
            previous_senders,
            store,
            raising: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether an envelope from `sender` stamped `timestamp_ms` may have been handled by
    /// this node's previous run.
    pub(crate) fn before_restart(&self, sender: &Address, timestamp_ms: u64) -> bool {
        timestamp_ms < self.previous_shared || self.previous_senders.get(sender).is_some_and(|c| timestamp_ms < *c)
    }

    /// Whether an envelope from `sender` stamped `timestamp_ms` is covered already, so it
    /// may be accepted without a write.
    pub(crate) fn covers(&self, sender: &Address, timestamp_ms: u64) -> bool {
        if timestamp_ms < self.shared.load(Ordering::SeqCst) {
            // Recorded, then checked again: lowering the ceiling on stop stores first and
            // reads this after, so either it sees this timestamp or this sees the lowered
            // ceiling (and takes the raising path).
            self.highest.fetch_max(timestamp_ms, Ordering::SeqCst);
            if timestamp_ms < self.shared.load(Ordering::SeqCst) {
                return true;
            }
        }
        self.senders.lock().get(sender).is_some_and(|ceiling| timestamp_ms < *ceiling)
    }

    /// Makes a ceiling durably cover `timestamp_ms` from `sender`.
    pub(crate) async fn raise(&self, sender: &Address, timestamp_ms: u64) -> Result<(), StoreError> {
        let _one_at_a_time = self.raising.lock().await;
        if self.covers(sender, timestamp_ms) {
            return Ok(());
        }
        let Some(store) = &self.store else { return Ok(()) };
        // With room for the sender's next envelopes, so a clock ahead costs one write per
        // `AHEAD`, not one per envelope.
        let ceiling = timestamp_ms + 1 + AHEAD.as_millis() as u64;
        if self.senders.lock().len() < MAX_SENDER_CEILINGS {
            store.put(TABLE, sender_key(sender), Some(ceiling.to_be_bytes().to_vec()))?;
            store.flush().await?;
            self.senders.lock().insert(*sender, ceiling);
        } else {
            self.raise_shared(store, ceiling).await?;
            self.highest.fetch_max(timestamp_ms, Ordering::SeqCst);
        }
        Ok(())
    }

    async fn raise_shared(&self, store: &WriteBehind, ceiling: u64) -> Result<(), StoreError> {
        store.put(TABLE, SHARED_KEY.to_vec(), Some(ceiling.to_be_bytes().to_vec()))?;
        store.flush().await?;
        self.shared.fetch_max(ceiling, Ordering::SeqCst);
        Ok(())
    }

    /// How long a node restarted right after a crash should wait before accepting, so that
    /// fresh envelopes are not refused as possibly handled (at most [`AHEAD`]).
    pub(crate) fn wait_before_accepting(&self) -> Duration {
        let ahead = self.previous_shared.saturating_sub(unix_now_ms());
        Duration::from_millis(ahead.min(AHEAD.as_millis() as u64))
    }

    /// Keeps the shared ceiling ahead of the clock, and forgets senders' ceilings the clock
    /// has passed, until `stop`.
    pub(crate) async fn keep_ahead(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(store) = &self.store else { return };
        let mut tick = tokio::time::interval(AHEAD / 4);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    let now = unix_now_ms();
                    let raised = async {
                        let _one_at_a_time = self.raising.lock().await;
                        if self.shared.load(Ordering::Acquire) < now + AHEAD.as_millis() as u64 / 2 {
                            self.raise_shared(store, now + AHEAD.as_millis() as u64).await?;
                        }
                        // The shared ceiling now covers senders' ceilings below it.
                        let shared = self.shared.load(Ordering::Acquire);
                        let passed: Vec<Address> =
                            self.senders.lock().iter().filter(|(_, c)| **c <= shared).map(|(a, _)| *a).collect();
                        // What they covered is the shared ceiling's now: never lowered below it.
                        if !passed.is_empty() {
                            self.highest.fetch_max(shared.saturating_sub(1), Ordering::SeqCst);
                        }
                        for sender in &passed {
                            store.put(TABLE, sender_key(sender), None)?;
                        }
                        if !passed.is_empty() {
                            store.flush().await?;
                            let mut senders = self.senders.lock();
                            for sender in passed {
                                senders.remove(&sender);
                            }
                        }
                        Ok::<(), StoreError>(())
                    };
                    if let Err(err) = raised.await {
                        tracing::warn!(error = %crate::error::chain(&err), "cannot raise the acceptance ceiling; envelopes wait for it");
                    }
                }
            }
        }
    }

    /// On a graceful stop: lowers the shared ceiling to just above what it covered, so that
    /// a restart need not wait. Envelopes accepted after this must raise it again.
    pub(crate) fn lower_on_stop(&self) {
        let Some(store) = &self.store else { return };
        // A raise in progress would leave the value in memory above the one stored: keep
        // the higher ceiling instead.
        let Ok(_no_raise) = self.raising.try_lock() else { return };
        let lowered = self.highest.load(Ordering::SeqCst) + 1;
        self.shared.store(lowered, Ordering::SeqCst);
        // Re-read: an acceptance that passed the old ceiling just now is covered too.
        let lowered = lowered.max(self.highest.load(Ordering::SeqCst) + 1);
        if let Err(err) = store.put(TABLE, SHARED_KEY.to_vec(), Some(lowered.to_be_bytes().to_vec())) {
            tracing::warn!(error = %crate::error::chain(&err), "cannot lower the acceptance ceiling");
        }
    }
}
