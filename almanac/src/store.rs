//! The embedded almanac: records in memory with indexes, optionally persisted in an
//! embedded database (`almanac.redb` in its data directory).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use agent_core::store::{Database, Table, WriteBehind};
use agent_core::{Address, Manifest, ProtocolDigest};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::query::{Event, Page, Query};
use crate::record::Registration;
use crate::{AlmanacError, Registered};

/// Limits on what a registration may hold. Defaults on each setter.
#[derive(Clone)]
pub struct Config {
    min_ttl_ms: u64,
    max_ttl_ms: u64,
    max_records: usize,
    max_manifests: usize,
    max_manifests_per_publisher: usize,
    max_record_bytes: usize,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            min_ttl_ms: 1_000,
            max_ttl_ms: 24 * 3_600_000,
            max_records: 10_000_000,
            max_manifests: 100_000,
            max_manifests_per_publisher: 100,
            max_record_bytes: 16 * 1024,
            clock: Arc::new(agent_core::envelope::unix_now_ms),
        }
    }
}

impl Config {
    /// Shortest accepted time to live (default 1 s).
    pub fn with_min_ttl_ms(mut self, ms: u64) -> Self {
        self.min_ttl_ms = ms;
        self
    }

    /// Longest accepted time to live (default 24 h).
    pub fn with_max_ttl_ms(mut self, ms: u64) -> Self {
        self.max_ttl_ms = ms;
        self
    }

    /// Most records held (default 10 million); new agents are refused beyond it.
    pub fn with_max_records(mut self, records: usize) -> Self {
        self.max_records = records;
        self
    }

    /// Most manifests held (default 100,000); new ones are refused beyond it.
    pub fn with_max_manifests(mut self, manifests: usize) -> Self {
        self.max_manifests = manifests;
        self
    }

    /// Most manifests one publisher may publish (default 100), counted by
    /// [`Almanac::publish_manifest_from`]; the server counts per requesting peer.
    pub fn with_max_manifests_per_publisher(mut self, manifests: usize) -> Self {
        self.max_manifests_per_publisher = manifests;
        self
    }

    /// Largest encoded registration (default 16 KiB).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes;
        self
    }

    /// The clock, in ms since the Unix epoch (default: the system clock).
    pub fn with_clock(mut self, clock: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

#[derive(Default)]
struct State {
    records: HashMap<Address, Registration>,
    /// Every address in `records`, in order: an unfiltered query pages through it instead
    /// of sorting every key under the lock.
    ordered: BTreeSet<Address>,
    by_protocol: HashMap<ProtocolDigest, BTreeSet<Address>>,
    by_attribute: HashMap<(String, String), BTreeSet<Address>>,
    by_expiry: BTreeSet<(u64, Address)>,
    /// Agents whose record expired: when, and the record's sequence, kept until no older
    /// record of the agent can still be valid, so a stale record cannot be registered
    /// again and lookups can say when the agent's record expired.
    expired: HashMap<Address, Tombstone>,
    /// The same tombstones, by when they may be forgotten.
    forget: BTreeSet<(u64, Address)>,
    manifests: HashMap<ProtocolDigest, Manifest>,
    /// Manifests published (or being published) per publisher.
    publishers: HashMap<String, usize>,
    subscribers: Vec<(Query, mpsc::Sender<Event>)>,
    /// Registrations queued for the disk and not yet served, the newest per agent: a
    /// registration is served (and announced) only once it is on disk.
    persisting: HashMap<Address, Registration>,
}

/// Tombstones kept at most. Past this the one closest to being forgotten goes first: the
/// memory bound wins over the last hours of a tombstone's watch.
const MAX_TOMBSTONES: usize = 1_000_000;

/// What is left of an expired registration.
#[derive(Clone, Copy)]
struct Tombstone {
    at_ms: u64,
    sequence: u64,
    /// When it may be forgotten (its key in `State::forget`).
    until: u64,
}
/// Registrations by address.
const RECORDS: Table = Table::new("records");
/// Manifests by digest.
const MANIFESTS: Table = Table::new("manifests");
/// Who published each manifest, by digest (manifests published locally have no entry).
const MANIFEST_PUBLISHERS: Table = Table::new("manifest-publishers");
const SUBSCRIBER_QUEUE: usize = 1024;

/// An almanac in this process. Cheap to clone; clones share the records.
#[derive(Clone)]
pub struct Almanac {
    state: Arc<Mutex<State>>,
    config: Config,
    db: Option<WriteBehind>,
}

impl Almanac {
    /// An in-memory almanac.
    pub fn new(config: Config) -> Almanac {
        Almanac { state: Arc::new(Mutex::new(State::default())), config, db: None }
    }

    /// An almanac persisted in the directory `path` (created if missing); records and
    /// manifests stored there are loaded first. Expired records are kept as tombstones
    /// until no older record of their agent can be valid, then dropped from the database;
    /// records that do not decode (written by another version,
    /// or damaged) are skipped, counted in a warning, and left on disk untouched.
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Almanac, AlmanacError> {
        Self::with_database(Database::open_in(path, "almanac.redb").map_err(storage)?, config)
    }

    /// An almanac persisted in `db`, which may be any [`Database`], for example one whose
    /// disk fails on demand in a test; what it holds is loaded first, as by [`open`](Self::open).
    pub fn with_database(db: Database, config: Config) -> Result<Almanac, AlmanacError> {
        let store = WriteBehind::new(db).map_err(storage)?;
        let almanac = Almanac { state: Arc::new(Mutex::new(State::default())), config, db: None };
        let mut stored = Vec::new();
        let mut expired = Vec::new();
        let mut undecodable = 0usize;
        let now = (almanac.config.clock)();
        let keep_ms = almanac.config.max_ttl_ms;
        for (key, bytes) in store.scan_prefix(RECORDS, b"").map_err(storage)? {
            match serde_json::from_slice::<Registration>(&bytes) {
                Ok(record) if record.expires_ms > now => stored.push(record),
                // Expired, but an older record of the agent could still be valid: kept on
                // disk and in memory as a tombstone, so it survives restarts too.
                Ok(record) if record.expires_ms.saturating_add(keep_ms) > now => {
                    bury(&mut almanac.state.lock(), &record, keep_ms)
                }
                Ok(_) => expired.push(key),
                Err(_) => undecodable += 1,
            }
        }
        if undecodable > 0 {
            tracing::warn!(records = undecodable, "stored registrations that do not decode were skipped");
        }
        // Verified when they were registered.
        almanac.import_trusted(stored);
        for key in expired {
            store.put(RECORDS, key, None).map_err(storage)?;
        }
        for (_, bytes) in store.scan_prefix(MANIFESTS, b"").map_err(storage)? {
            if let Ok(manifest) = Manifest::from_json(&String::from_utf8_lossy(&bytes)) {
                almanac.state.lock().manifests.insert(manifest.digest(), manifest);
            }
        }
        for (_, publisher) in store.scan_prefix(MANIFEST_PUBLISHERS, b"").map_err(storage)? {
            *almanac.state.lock().publishers.entry(String::from_utf8_lossy(&publisher).into_owned()).or_default() += 1;
        }
        Ok(Almanac { db: Some(store), ..almanac })
    }

    /// Adds records that were verified before (read back from this almanac's own
    /// database, or replicated from a trusted peer) without checking their signatures
    /// again. Expired records and older sequences are skipped. Returns how many were added.
    pub fn import_trusted(&self, records: impl IntoIterator<Item = Registration>) -> usize {
        let now = (self.config.clock)();
        let mut state = self.state.lock();
        let mut added = 0;
        for record in records {
            let newer = state.records.get(&record.address).is_none_or(|stored| stored.sequence < record.sequence);
            if record.expires_ms <= now || !newer {
                continue;
            }
            if let Some(old) = state.records.remove(&record.address) {
                unindex(&mut state, &old);
            }
            index(&mut state, &record);
            state.records.insert(record.address, record);
            added += 1;
        }
        added
    }

    /// Checks and stores `record`. Refused records leave the stored ones untouched.
    /// Registering the same record again is harmless (it is acknowledged as stored).
    ///
    /// A persisted almanac writes first and publishes after: the record is served by
    /// lookups and announced to subscribers only once it is on disk. Registrations of one
    /// agent reach the disk in sequence order, so the newest one is what a restart finds.
    pub async fn register(&self, record: Registration) -> Result<Registered, AlmanacError> {
        let now = (self.config.clock)();
        let encoded = self.validate(&record, now)?;
        let registered = Registered { sequence: record.sequence, expires_ms: record.expires_ms };
        let Some(store) = &self.db else {
            let mut state = self.state.lock();
            purge(&mut state, now, self.config.max_ttl_ms);
            if !self.admit(&state, &record, state.records.get(&record.address))? {
                publish_stored(&mut state, record);
            }
            return Ok(registered);
        };
        {
            let mut state = self.state.lock();
            purge(&mut state, now, self.config.max_ttl_ms);
            if state.records.get(&record.address) == Some(&record) {
                return Ok(registered); // Served, so already on disk.
            }
            // Compared with what is on its way to the disk too, not only with what is served.
            let newest = state.persisting.get(&record.address).or_else(|| state.records.get(&record.address));
            if !self.admit(&state, &record, newest)? {
                // Queued under the state lock: the disk sees one agent's registrations in
                // the order they were admitted, which is sequence order.
                store.put(RECORDS, record.address.as_bytes().to_vec(), Some(encoded)).map_err(storage)?;
                state.persisting.insert(record.address, record.clone());
            }
        }
        let flushed = store.flush().await;
        let mut state = self.state.lock();
        if state.persisting.get(&record.address) == Some(&record) {
            state.persisting.remove(&record.address);
        }
        // A failed flush leaves the write queued and retried: the record may still be
        // stored, which `AlmanacError::Storage` says.
        flushed.map_err(storage)?;
        publish_stored(&mut state, record);
        Ok(registered)
    }

    /// Whether `record` is already known (identical to `newest`, the agent's newest
    /// registration: nothing to store), or an error if it is refused: an older sequence, or
    /// a full almanac.
    fn admit(&self, state: &State, record: &Registration, newest: Option<&Registration>) -> Result<bool, AlmanacError> {
        if let Some(tomb) = state.expired.get(&record.address) {
            if newest.is_none() && record.sequence <= tomb.sequence {
                return Err(AlmanacError::StaleSequence { stored: tomb.sequence, offered: record.sequence });
            }
        }
        match newest {
            Some(newest) if newest == record => Ok(true),
            Some(newest) if newest.sequence >= record.sequence => {
                Err(AlmanacError::StaleSequence { stored: newest.sequence, offered: record.sequence })
            }
            Some(_) => Ok(false),
            None if !state.records.contains_key(&record.address) && state.records.len() >= self.config.max_records => {
                Err(AlmanacError::Full { capacity: self.config.max_records })
            }
            None => Ok(false),
        }
    }

    /// Checks `record` and returns its encoding.
    fn validate(&self, record: &Registration, now: u64) -> Result<Vec<u8>, AlmanacError> {
        let encoded = serde_json::to_vec(record).map_err(|e| AlmanacError::Malformed(e.to_string()))?;
        let size = encoded.len();
        if size > self.config.max_record_bytes {
            return Err(AlmanacError::Malformed(format!(
                "record of {size} bytes exceeds {}",
                self.config.max_record_bytes
            )));
        }
        record.verify()?;
        let ttl = record.expires_ms.saturating_sub(now);
        if record.expires_ms <= now || ttl < self.config.min_ttl_ms || ttl > self.config.max_ttl_ms {
            return Err(AlmanacError::TtlOutOfBounds {
                ttl_ms: ttl,
                min_ms: self.config.min_ttl_ms,
                max_ms: self.config.max_ttl_ms,
            });
        }
        Ok(encoded)
    }

    /// The registration of `address`.
    pub fn lookup(&self, address: &Address) -> Result<Registration, AlmanacError> {
        let now = (self.config.clock)();
        let mut state = self.state.lock();
        match state.records.get(address) {
            Some(record) if record.expires_ms > now => Ok(record.clone()),
            Some(record) => {
                let at_ms = record.expires_ms;
                purge(&mut state, now, self.config.max_ttl_ms);
                Err(AlmanacError::Expired { at_ms })
            }
            None => match state.expired.get(address) {
                Some(tomb) => Err(AlmanacError::Expired { at_ms: tomb.at_ms }),
                None => Err(AlmanacError::NotRegistered(*address)),
            },
        }
    }

    /// Unexpired registrations matching `query`, in address order, one page at a time.
    pub fn query(&self, query: &Query) -> Page {
        let now = (self.config.clock)();
        let state = self.state.lock();
        let limit = query.limit.clamp(1, crate::query::MAX_LIMIT);
        let mut records = Vec::new();
        let mut next = None;
        let mut consider = |address: &Address, records: &mut Vec<Registration>| -> bool {
            let Some(record) = state.records.get(address) else { return true };
            if record.expires_ms <= now || !query.matches(record) {
                return true;
            }
            if records.len() == limit {
                next = records.last().map(|r: &Registration| r.address);
                return false;
            }
            records.push(record.clone());
            true
        };
        let start = std::ops::Bound::Excluded(query.after.unwrap_or(Address::from_bytes([0; 32])));
        let start = if query.after.is_some() { start } else { std::ops::Bound::Unbounded };
        // Walk the narrowest index available.
        if let Some(protocol) = &query.protocol {
            if let Some(set) = state.by_protocol.get(protocol) {
                for address in set.range((start, std::ops::Bound::Unbounded)) {
                    if !consider(address, &mut records) {
                        break;
                    }
                }
            }
        } else if let Some((key, value)) = query.attributes.first() {
            if let Some(set) = state.by_attribute.get(&(key.clone(), value.clone())) {
                for address in set.range((start, std::ops::Bound::Unbounded)) {
                    if !consider(address, &mut records) {
                        break;
                    }
                }
            }
        } else {
            for address in state.ordered.range((start, std::ops::Bound::Unbounded)) {
                if !consider(address, &mut records) {
                    break;
                }
            }
        }
        Page { records, next }
    }

    /// Up to `count` distinct agents speaking `protocol`, drawn at random with probability
    /// proportional to their total endpoint weight.
    pub fn sample(&self, protocol: &ProtocolDigest, count: usize) -> Vec<Registration> {
        use rand::Rng;
        let now = (self.config.clock)();
        let state = self.state.lock();
        let mut candidates: Vec<(&Registration, u64)> = state
            .by_protocol
            .get(protocol)
            .into_iter()
            .flatten()
            .filter_map(|a| state.records.get(a))
            .filter(|r| r.expires_ms > now)
            .map(|r| (r, r.endpoints.iter().map(|e| u64::from(e.weight)).sum::<u64>()))
            .filter(|(_, w)| *w > 0)
            .collect();
        let mut rng = rand::thread_rng();
        let mut chosen = Vec::new();
        while chosen.len() < count && !candidates.is_empty() {
            let total: u64 = candidates.iter().map(|(_, w)| w).sum();
            let mut pick = rng.gen_range(0..total);
            let index = candidates
                .iter()
                .position(|(_, w)| {
                    if pick < *w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            chosen.push(candidates.swap_remove(index).0.clone());
        }
        chosen
    }

    /// Events for registrations matching `query`: registered, changed, expired. Instead of
    /// polling. A subscriber that does not keep up loses events rather than slowing the
    /// almanac (its queue holds 1024); dropping the receiver ends the subscription.
    pub fn subscribe(&self, query: Query) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        self.state.lock().subscribers.push((query, tx));
        rx
    }

    /// Removes expired records now (queries never return them either way), telling
    /// subscribers. Returns how many were removed.
    pub fn purge_expired(&self) -> usize {
        let now = (self.config.clock)();
        purge(&mut self.state.lock(), now, self.config.max_ttl_ms)
    }

    /// Purges expired records every `period` in a background task, so subscribers hear of
    /// expiries without anyone querying. The task ends when the handle is aborted.
    pub fn start_expiry(&self, period: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let almanac = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                almanac.purge_expired();
            }
        })
    }

    /// Publishes a protocol manifest (its JSON); returns its digest. Publishing one that is
    /// held already is harmless. Counts against the total only: for manifests published
    /// in this process.
    pub async fn publish_manifest(&self, json: &str) -> Result<ProtocolDigest, AlmanacError> {
        self.publish(None, json).await
    }

    /// Publishes a manifest on behalf of `publisher` (the almanac server passes the
    /// requesting peer's id), counted against that publisher's quota and the total.
    pub async fn publish_manifest_from(&self, publisher: &str, json: &str) -> Result<ProtocolDigest, AlmanacError> {
        self.publish(Some(publisher), json).await
    }

    async fn publish(&self, publisher: Option<&str>, json: &str) -> Result<ProtocolDigest, AlmanacError> {
        if json.len() > 256 * 1024 {
            return Err(AlmanacError::Malformed("manifest larger than 256 KiB".into()));
        }
        let manifest = Manifest::from_json(json).map_err(|e| AlmanacError::Malformed(e.to_string()))?;
        let digest = manifest.digest();
        {
            let mut state = self.state.lock();
            if state.manifests.contains_key(&digest) {
                return Ok(digest);
            }
            let held: usize = state.manifests.len();
            if held >= self.config.max_manifests {
                return Err(AlmanacError::ManifestLimit { limit: self.config.max_manifests, per_publisher: false });
            }
            if let Some(publisher) = publisher {
                let published = state.publishers.entry(publisher.to_owned()).or_default();
                if *published >= self.config.max_manifests_per_publisher {
                    let limit = self.config.max_manifests_per_publisher;
                    return Err(AlmanacError::ManifestLimit { limit, per_publisher: true });
                }
                // Counted now, so concurrent publications cannot pass the quota together.
                *published += 1;
            }
        }
        let stored = self.persist_manifest(publisher, &digest, &manifest).await;
        let mut state = self.state.lock();
        if let Err(err) = stored {
            if let Some(count) = publisher.and_then(|p| state.publishers.get_mut(p)) {
                *count = count.saturating_sub(1);
            }
            return Err(err);
        }
        state.manifests.insert(digest, manifest);
        Ok(digest)
    }

    async fn persist_manifest(
        &self,
        publisher: Option<&str>,
        digest: &ProtocolDigest,
        manifest: &Manifest,
    ) -> Result<(), AlmanacError> {
        let Some(store) = &self.db else { return Ok(()) };
        if let Some(publisher) = publisher {
            let entry = Some(publisher.as_bytes().to_vec());
            store.put(MANIFEST_PUBLISHERS, digest.as_bytes().to_vec(), entry).map_err(storage)?;
        }
        store.put(MANIFESTS, digest.as_bytes().to_vec(), Some(manifest.to_json().into_bytes())).map_err(storage)?;
        store.flush().await.map_err(storage)
    }

    /// A published manifest.
    pub fn manifest(&self, digest: &ProtocolDigest) -> Option<Manifest> {
        self.state.lock().manifests.get(digest).cloned()
    }

    /// How many records are held (expired ones until purged included).
    pub fn len(&self) -> usize {
        self.state.lock().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A database failure as the almanac reports it, with its cause chain.
fn storage(err: agent_core::store::StoreError) -> AlmanacError {
    AlmanacError::Storage(agent_core::error::chain(&err))
}

/// Serves `record` (indexes it and tells subscribers), unless a newer or equal sequence
/// of its agent is served already.
fn publish_stored(state: &mut State, record: Registration) {
    let changed = match state.records.get(&record.address) {
        Some(served) if served.sequence >= record.sequence => return,
        Some(_) => true,
        None => false,
    };
    if let Some(old) = state.records.remove(&record.address) {
        unindex(state, &old);
    }
    index(state, &record);
    let event = if changed { Event::Changed(record.clone()) } else { Event::Registered(record.clone()) };
    publish(state, &record, event);
    state.records.insert(record.address, record);
}

fn index(state: &mut State, record: &Registration) {
    state.ordered.insert(record.address);
    for protocol in &record.protocols {
        state.by_protocol.entry(*protocol).or_default().insert(record.address);
    }
    for (key, value) in &record.attributes {
        state.by_attribute.entry((key.clone(), value.clone())).or_default().insert(record.address);
    }
    state.by_expiry.insert((record.expires_ms, record.address));
    if let Some(tomb) = state.expired.remove(&record.address) {
        state.forget.remove(&(tomb.until, record.address));
    }
}

fn unindex(state: &mut State, record: &Registration) {
    state.ordered.remove(&record.address);
    for protocol in &record.protocols {
        if let Some(set) = state.by_protocol.get_mut(protocol) {
            set.remove(&record.address);
        }
    }
    for (key, value) in &record.attributes {
        if let Some(set) = state.by_attribute.get_mut(&(key.clone(), value.clone())) {
            set.remove(&record.address);
        }
    }
    state.by_expiry.remove(&(record.expires_ms, record.address));
}

/// Removes the records expired at `now` (leaving tombstones watched for `keep_ms` past
/// each expiry: the longest lifetime an older record of the agent could have had), and
/// forgets the tombstones whose watch is over.
fn purge(state: &mut State, now: u64, keep_ms: u64) -> usize {
    while let Some(&(until, address)) = state.forget.first() {
        if until > now {
            break;
        }
        state.forget.pop_first();
        state.expired.remove(&address);
    }
    let mut removed = 0;
    while let Some(&(expires, address)) = state.by_expiry.first() {
        if expires > now {
            break;
        }
        state.by_expiry.pop_first();
        if let Some(record) = state.records.remove(&address) {
            unindex(state, &record);
            bury(state, &record, keep_ms);
            publish(state, &record, Event::Expired { address, at_ms: record.expires_ms });
            removed += 1;
        }
    }
    removed
}

/// Leaves a tombstone of the expired `record`, watched until `keep_ms` after its expiry.
fn bury(state: &mut State, record: &Registration, keep_ms: u64) {
    if state.expired.len() >= MAX_TOMBSTONES {
        if let Some((_, oldest)) = state.forget.pop_first() {
            state.expired.remove(&oldest);
        }
    }
    let until = record.expires_ms.saturating_add(keep_ms);
    let tomb = Tombstone { at_ms: record.expires_ms, sequence: record.sequence, until };
    if let Some(old) = state.expired.insert(record.address, tomb) {
        state.forget.remove(&(old.until, record.address));
    }
    state.forget.insert((until, record.address));
}

fn publish(state: &mut State, record: &Registration, event: Event) {
    state.subscribers.retain(|(query, tx)| {
        if query.matches(record) {
            // A full queue drops this event for that subscriber; a closed one unsubscribes.
            !matches!(tx.try_send(event.clone()), Err(mpsc::error::TrySendError::Closed(_)))
        } else {
            !tx.is_closed()
        }
    });
}
