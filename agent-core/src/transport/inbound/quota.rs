//! What one peer may hold of this node: streams, requests in flight, and, once it has
//! sent too many envelopes that fail authentication, nothing for a while.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Envelope streams one peer may have open to this node at once (it needs one).
pub(super) const MAX_STREAMS_PER_PEER: usize = 4;

/// Envelopes or bindings failing authentication that one stream may send before its peer
/// is disconnected and banned. A few, since an honest peer sends none: a binding racing
/// its renewal is the only innocent cause.
pub(super) const AUTH_FAILURES_ALLOWED: u32 = 8;

/// The first ban; each further one doubles, up to [`MAX_BAN`].
const FIRST_BAN: Duration = Duration::from_secs(10);
const MAX_BAN: Duration = Duration::from_secs(600);

/// Peers remembered as banned, at most; past it, the ban closest to its end is dropped.
const MAX_BANNED: usize = 10_000;

/// One peer's quota: open streams, and requests in flight (shared by its streams, so
/// opening more streams does not buy more).
struct Quota {
    streams: usize,
    requests: Arc<Semaphore>,
}

/// A ban: until when, and how many bans this peer has had (each doubles the next).
struct Ban {
    until: Instant,
    strikes: u32,
}

#[derive(Default)]
struct State {
    quotas: HashMap<PeerId, Quota>,
    banned: HashMap<PeerId, Ban>,
}

/// Quotas of every peer, shared by the node's inbound streams.
#[derive(Clone, Default)]
pub(super) struct Quotas(Arc<Mutex<State>>);

/// Why a stream was refused.
pub(super) enum Refused {
    TooManyStreams,
    Banned { remaining: Duration },
}

impl Quotas {
    /// A place for a new stream of `peer`, or why it gets none.
    pub(super) fn take(&self, peer: PeerId, max_requests: usize) -> Result<StreamPlace, Refused> {
        let mut state = self.0.lock();
        if let Some(ban) = state.banned.get(&peer) {
            let remaining = ban.until.saturating_duration_since(Instant::now());
            if !remaining.is_zero() {
                return Err(Refused::Banned { remaining });
            }
        }
        let quota = state
            .quotas
            .entry(peer)
            .or_insert_with(|| Quota { streams: 0, requests: Arc::new(Semaphore::new(max_requests)) });
        if quota.streams >= MAX_STREAMS_PER_PEER {
            return Err(Refused::TooManyStreams);
        }
        quota.streams += 1;
        Ok(StreamPlace { quotas: self.clone(), peer, requests: Arc::clone(&quota.requests) })
    }

    /// Bans `peer`: its streams are refused for a while, longer each time. Returns how long.
    pub(super) fn ban(&self, peer: PeerId) -> Duration {
        let mut state = self.0.lock();
        let now = Instant::now();
        if state.banned.len() >= MAX_BANNED && !state.banned.contains_key(&peer) {
            state.banned.retain(|_, ban| ban.until > now);
            if state.banned.len() >= MAX_BANNED {
                if let Some(soonest) = state.banned.iter().min_by_key(|(_, ban)| ban.until).map(|(peer, _)| *peer) {
                    state.banned.remove(&soonest);
                }
            }
        }
        let strikes = state.banned.get(&peer).map_or(0, |ban| ban.strikes) + 1;
        let length = FIRST_BAN.saturating_mul(1 << (strikes - 1).min(16)).min(MAX_BAN);
        state.banned.insert(peer, Ban { until: now + length, strikes });
        length
    }
}

/// One open stream counted in its peer's quota; closing it gives the place back.
pub(super) struct StreamPlace {
    quotas: Quotas,
    peer: PeerId,
    pub(super) requests: Arc<Semaphore>,
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut state = self.quotas.0.lock();
        if let Some(quota) = state.quotas.get_mut(&self.peer) {
            quota.streams -= 1;
            if quota.streams == 0 {
                // Requests still in flight hold the semaphore itself; they finish normally.
                state.quotas.remove(&self.peer);
            }
        }
    }
}
