//! Many writers, one committer: writes are queued in memory, visible to readers at once,
//! and committed in groups by one thread; [`WriteBehind::flush`] waits for the commit that
//! covers every write made before it.
//!
//! Every commit of the database goes through that one thread, so concurrent flushes cannot
//! race inside the engine, and 64 agents flushing at once cost one disk sync per group,
//! not 64.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Database, Entry, StoreError, Table};

/// A [`Database`] written through one committer thread. Cheap to clone; clones share the
/// queue. When the last clone is dropped, queued writes are committed (one last attempt:
/// if it fails, they are lost and logged) and the thread ends; the drop waits for that.
///
/// A store made with [`on_flush`](Self::on_flush) has no thread: it commits only when
/// flushed, on the flushing task's thread. [`crash`](Self::crash) stops either kind as a
/// crash of the process would.
#[derive(Clone)]
pub struct WriteBehind {
    shared: Arc<Shared>,
    _committer: Arc<Committer>,
}

type Key = (Table, Vec<u8>);
/// Hashed, not ordered: every write of every agent lands here, and keys share long
/// prefixes (an agent's address, then its own key's prefix), so an ordered map compared
/// most of each key many times per write. Order is restored where it matters: a scan
/// sorts what it finds, and a commit writes its batch in key order. Hashed with foldhash,
/// several times faster than the standard hasher on keys this long, seeded as [`Seeded`].
type Writes = HashMap<Key, Option<Queued>, Seeded>;

/// Gives a value's bytes when they are needed: when the value is committed to a file, or
/// read before that (in memory, at each read). Each call must give the same bytes.
pub type Encode = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// A value waiting for its commit: its bytes, or how to make them
/// ([`WriteBehind::put_encoded_later`]).
#[derive(Clone)]
pub(super) enum Queued {
    Bytes(Vec<u8>),
    Later(Encode),
}

impl Queued {
    fn bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match self {
            Queued::Bytes(bytes) => std::borrow::Cow::Borrowed(bytes),
            Queued::Later(encode) => std::borrow::Cow::Owned(encode()),
        }
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        match self {
            Queued::Bytes(bytes) => bytes,
            Queued::Later(encode) => encode(),
        }
    }
}

/// foldhash seeded from the operating system's randomness (through `rand`), as the
/// standard hasher is: a seed of its own for each batch's map, and one shared seed drawn once
/// per process. Keys include ids a peer chooses (a dialogue's); foldhash's own default seed
/// comes from addresses and the time, which this does not rely on. The shared seed is the
/// one process-wide value here: it is random and never changes, so stores in one process
/// cannot see each other through it.
#[derive(Clone)]
struct Seeded(foldhash::fast::SeedableRandomState);

impl Default for Seeded {
    fn default() -> Seeded {
        static SHARED: std::sync::OnceLock<foldhash::SharedSeed> = std::sync::OnceLock::new();
        let shared = SHARED.get_or_init(|| foldhash::SharedSeed::from_u64(rand::random()));
        Seeded(foldhash::fast::SeedableRandomState::with_seed(rand::random(), shared))
    }
}

impl std::hash::BuildHasher for Seeded {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

struct Shared {
    db: Database,
    /// Commits happen only in [`WriteBehind::flush`] (and when a batch is full), on the
    /// caller's thread: there is no committer thread.
    on_flush: bool,
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: tokio::sync::watch::Sender<Progress>,
}

/// Writes not yet committed. While commits succeed, `pending` needs no cap of its own: it
/// holds at most one entry per key written since the last commit began (a rewrite replaces
/// the entry) and the committer drains it continuously. While commits fail it could grow
/// without end, so then writes beyond [`MAX_BACKLOG`] are refused.
#[derive(Default)]
struct Queue {
    /// Written since the current commit began.
    pending: Writes,
    /// Being committed now; still read from until the commit has landed.
    committing: Arc<Writes>,
    /// Sequence number of the latest write.
    written: u64,
    /// Why the last commit failed, while it is not followed by a successful one.
    failing: Option<Arc<StoreError>>,
    /// Someone waits in [`WriteBehind::flush`]: commit without gathering more writes.
    flush_wanted: bool,
    closing: bool,
    /// Closed by [`WriteBehind::crash`]: what was pending was dropped, and nothing more
    /// is committed.
    crashed: bool,
    /// Writes are refused for now ([`WriteBehind::refuse_writes`]).
    refusing: bool,
}

#[derive(Clone, Default)]
struct Progress {
    /// Every write up to this sequence number is on disk.
    durable: u64,
    /// The last commit failed: writes up to this number wait for a retry.
    failed: Option<(u64, Arc<StoreError>)>,
}

/// Writes that may wait while commits fail, at most.
pub(super) const MAX_BACKLOG: usize = 65_536;
/// The first wait before retrying a failed commit; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(50);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// While no one waits for a flush, the committer gathers writes this long (or up to
/// [`GATHER_MAX`] of them) before committing: many small writes then cost one disk sync
/// and one transaction instead of one each, and leave the other cores to the agents.
const GATHER: Duration = Duration::from_millis(50);
const GATHER_MAX: usize = 65_536;

/// Owns the committer thread: dropping it closes the queue and waits for the last commit.
struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        if self.shared.on_flush {
            // The last handle is going: the last commit that a thread would have made.
            let _end = EndOfCommits(&self.shared);
            // After a crash there is nothing to commit, and nothing may be.
            let crashed = self.shared.queue.lock().crashed;
            if !crashed {
                if let Err(err) = self.shared.commit_pending() {
                    tracing::error!(error = %crate::error::chain(&*err), "storage closed with writes it could not commit");
                }
            }
            return;
        }
        self.shared.queue.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the storage committer thread panicked");
            }
        }
    }
}

/// Whatever way the committer thread ends, including a panic, no writer is left waiting:
/// the queue closes and every waiting flush is told its writes were not committed.
struct EndOfCommits<'a>(&'a Shared);

impl Drop for EndOfCommits<'_> {
    fn drop(&mut self) {
        let mut queue = self.0.queue.lock();
        queue.closing = true;
        let last = queue.written;
        drop(queue);
        if self.0.progress.borrow().durable >= last {
            return;
        }
        let closed = Arc::new(StoreError::Closed);
        self.0.progress.send_modify(|p| p.failed = Some((last, closed)));
    }
}

impl WriteBehind {
    /// Starts the committer thread for `db`.
    pub fn new(db: Database) -> Result<WriteBehind, StoreError> {
        let shared = Shared::new(db, false);
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("storage-committer".into())
            .spawn(move || worker.commit_loop())
            .map_err(StoreError::Spawn)?;
        let committer = Arc::new(Committer { shared: Arc::clone(&shared), thread: Mutex::new(Some(thread)) });
        Ok(WriteBehind { shared, _committer: committer })
    }

    /// A store for `db` that commits only when [`flush`](Self::flush) is called (or
    /// 65,536 writes are queued), on the flushing task's own thread, and has no
    /// committer thread. Simulations use it: on a paused clock a flush then takes no
    /// simulated time and does not let the clock run while another thread works, and a
    /// [`crash`](Self::crash) loses exactly the writes made since the last flush, every
    /// time, instead of whatever a timer had not yet committed.
    ///
    /// A flush blocks its thread for the length of the commit: meant for in-memory
    /// databases ([`Database::temporary`]), whose commits take microseconds.
    pub fn on_flush(db: Database) -> WriteBehind {
        let shared = Shared::new(db, true);
        let committer = Arc::new(Committer { shared: Arc::clone(&shared), thread: Mutex::new(None) });
        WriteBehind { shared, _committer: committer }
    }

    /// While `refuse` holds, every write is refused with [`StoreError::Unavailable`]
    /// (nothing queued) and reads are served as before: a storage outage that the agents
    /// outlive, for simulations.
    pub(crate) fn refuse_writes(&self, refuse: bool) {
        self.shared.queue.lock().refusing = refuse;
    }

    /// Stops the store as a crash of the process would: writes not yet committed are
    /// dropped, so only what a returned [`flush`](Self::flush) covered (and any commit
    /// already under way on the committer thread) is in the database. Later writes fail
    /// with [`StoreError::Closed`], and flushes still waiting are told their writes were
    /// not committed. Returns how many queued writes were dropped.
    pub fn crash(&self) -> usize {
        let mut queue = self.shared.queue.lock();
        queue.closing = true;
        queue.crashed = true;
        let dropped = std::mem::take(&mut queue.pending).len();
        let last = queue.written;
        drop(queue);
        self.shared.wake.notify_one();
        if self.shared.progress.borrow().durable < last {
            self.shared.progress.send_modify(|p| p.failed = Some((last, Arc::new(StoreError::Closed))));
        }
        dropped
    }

    /// The database underneath, for reads of committed data.
    pub fn database(&self) -> &Database {
        &self.shared.db
    }

    /// The value at `key` in `table`, including writes not yet committed.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // Taken out under the lock, encoded (if it waits to be) after it.
        let queued = self.shared.queue.lock().queued(table, key);
        if let Some(queued) = queued {
            return Ok(queued.map(Queued::into_bytes));
        }
        // Not queued: committed already, and a read that begins now sees that commit.
        self.shared.db.get(table, key)
    }

    /// Whether `key` in `table` holds a value, including writes not yet committed. A value
    /// waiting to be encoded is not encoded to answer.
    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        let queued = self.shared.queue.lock().queued(table, key);
        match queued {
            Some(queued) => Ok(queued.is_some()),
            None => self.shared.db.contains(table, key),
        }
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order, including
    /// writes not yet committed.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let queued = self.queued_in(table, prefix);
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = self.shared.db.scan_prefix(table, prefix)?.into_iter().collect();
        for (key, value) in queued {
            match value {
                Some(value) => entries.insert(key, value.into_bytes()),
                None => entries.remove(&key),
            };
        }
        Ok(entries.into_iter().collect())
    }

    /// The keys [`scan_prefix`](Self::scan_prefix) would give, without their values: a
    /// value waiting to be encoded is not encoded to list its key.
    pub fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let queued = self.queued_in(table, prefix);
        let mut keys: BTreeSet<Vec<u8>> = self.shared.db.scan_keys(table, prefix)?.into_iter().collect();
        for (key, value) in queued {
            match value {
                Some(_) => keys.insert(key),
                None => keys.remove(&key),
            };
        }
        Ok(keys.into_iter().collect())
    }

    /// The queued writes under `prefix` in `table`, newest for each key, taken out under
    /// the lock (and encoded, where a reader needs it, after it).
    fn queued_in(&self, table: Table, prefix: &[u8]) -> BTreeMap<Vec<u8>, Option<Queued>> {
        let queue = self.shared.queue.lock();
        let in_scope = |(key, _): &(&Key, &Option<Queued>)| key.0 == table && key.1.starts_with(prefix);
        let mut merged: BTreeMap<Vec<u8>, Option<Queued>> = BTreeMap::new();
        // `pending` is newer than `committing`, so it is applied last.
        for writes in [&*queue.committing, &queue.pending] {
            for (key, value) in writes.iter().filter(in_scope) {
                merged.insert(key.1.clone(), value.clone());
            }
        }
        merged
    }

    /// Queues `value` at `key` in `table` (or its removal when `None`); readers see it at
    /// once, and it is durable once a later [`flush`](Self::flush) returns.
    ///
    /// Fails with [`StoreError::Backlog`] when commits keep failing and too many writes
    /// already wait, and with [`StoreError::Closed`] once the store is closing.
    pub fn put(&self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        self.queue_write(table, key, value.map(Queued::Bytes))
    }

    /// Queues a value at `key` in `table` whose bytes `encode` gives when they are needed:
    /// when it is committed to a file, on the committer's thread, or read before that (a
    /// database in memory keeps `encode` and calls it at each read). For a writer
    /// that rewrites a key several times between commits (a dialogue at each step): only
    /// the last value is ever encoded, and not on the writer's thread. Fails as
    /// [`put`](Self::put) does.
    pub fn put_encoded_later(&self, table: Table, key: Vec<u8>, encode: Encode) -> Result<(), StoreError> {
        self.queue_write(table, key, Some(Queued::Later(encode)))
    }

    fn queue_write(&self, table: Table, key: Vec<u8>, value: Option<Queued>) -> Result<(), StoreError> {
        let mut queue = self.shared.queue.lock();
        queue.admit()?;
        queue.pending.insert((table, key), value);
        queue.written += 1;
        let wake = queue.wants_committer(self.shared.on_flush);
        drop(queue);
        if wake {
            self.shared.wake_committer();
        }
        Ok(())
    }

    /// Queues the removal of `key` from `table`; returns whether it held a value. The check
    /// and the removal are one step: of two concurrent removals, one returns true.
    pub fn remove(&self, table: Table, key: Vec<u8>) -> Result<bool, StoreError> {
        let mut queue = self.shared.queue.lock();
        queue.admit()?;
        let present = match queue.queued(table, &key) {
            Some(queued) => queued.is_some(),
            // Read under the lock, so no write to this key can slip in between.
            None => self.shared.db.contains(table, &key)?,
        };
        if present {
            queue.pending.insert((table, key), None);
            queue.written += 1;
            let wake = queue.wants_committer(self.shared.on_flush);
            drop(queue);
            if wake {
                self.shared.wake_committer();
            }
        }
        Ok(present)
    }

    /// Waits until every write queued before this call is on disk.
    ///
    /// Cancel safety: cancelling the wait cancels nothing else; the writes are still
    /// committed. An error says the commit failed: the writes stay queued and are retried,
    /// but may be lost if the process stops before a retry succeeds.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if self.shared.on_flush {
            return self.shared.commit_pending().map_err(StoreError::NotDurable);
        }
        let target = {
            let mut queue = self.shared.queue.lock();
            queue.flush_wanted = true;
            queue.written
        };
        self.shared.wake.notify_one();
        let mut progress = self.shared.progress.subscribe();
        loop {
            {
                let now = progress.borrow_and_update();
                if now.durable >= target {
                    return Ok(());
                }
                if let Some((up_to, reason)) = &now.failed {
                    if *up_to >= target {
                        return Err(StoreError::NotDurable(Arc::clone(reason)));
                    }
                }
            }
            if progress.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }
}

impl Queue {
    /// Whether a write just queued should wake the committer: it is the first of a batch
    /// (the committer thread sleeps until there is one), or the batch is full (the only
    /// reason a store that commits on flush commits unasked).
    fn wants_committer(&self, on_flush: bool) -> bool {
        (self.pending.len() == 1 && !on_flush) || self.pending.len() >= GATHER_MAX
    }

    /// The queued value at `key` (`Some(None)`: a queued removal), newest first.
    fn queued(&self, table: Table, key: &[u8]) -> Option<Option<Queued>> {
        let lookup = (table, key.to_vec());
        self.pending.get(&lookup).or_else(|| self.committing.get(&lookup)).cloned()
    }

    /// The pending writes, for a commit. The next batch starts with room for as many: a
    /// steady stream of writes then does not regrow (and rehash) the map in every batch.
    fn take_pending(&mut self) -> Writes {
        let room = self.pending.len();
        std::mem::replace(&mut self.pending, Writes::with_capacity_and_hasher(room, Default::default()))
    }

    /// Whether one more write may be queued.
    fn admit(&self) -> Result<(), StoreError> {
        if self.closing || self.crashed {
            return Err(StoreError::Closed);
        }
        if self.refusing {
            return Err(StoreError::Unavailable);
        }
        if let Some(last_failure) = &self.failing {
            let queued = self.pending.len() + self.committing.len();
            if queued >= MAX_BACKLOG {
                return Err(StoreError::Backlog { queued, last_failure: Arc::clone(last_failure) });
            }
        }
        Ok(())
    }
}

impl Shared {
    fn commit_loop(&self) {
        let _end = EndOfCommits(self);
        let mut retry = FIRST_RETRY;
        loop {
            let (batch, up_to) = {
                let mut queue = self.queue.lock();
                while queue.pending.is_empty() && !queue.closing {
                    self.wake.wait(&mut queue);
                }
                if queue.pending.is_empty() {
                    return;
                }
                let gathered = std::time::Instant::now() + GATHER;
                while !queue.flush_wanted
                    && !queue.closing
                    && queue.pending.len() < GATHER_MAX
                    && std::time::Instant::now() < gathered
                {
                    self.wake.wait_until(&mut queue, gathered);
                }
                if queue.crashed {
                    // What was gathered is gone with the crash.
                    return;
                }
                queue.flush_wanted = false;
                let batch = Arc::new(queue.take_pending());
                queue.committing = Arc::clone(&batch);
                (batch, queue.written)
            };
            match self.commit_batch(&batch, up_to) {
                Ok(()) => retry = FIRST_RETRY,
                Err(_) => {
                    let closing = self.queue.lock().closing;
                    if closing {
                        tracing::error!(writes = batch.len(), "storage closed with writes it could not commit");
                        return;
                    }
                    // Wait before retrying, but not past a close: the last handle's drop waits
                    // for this thread.
                    let deadline = std::time::Instant::now() + retry;
                    let mut queue = self.queue.lock();
                    while !queue.closing && std::time::Instant::now() < deadline {
                        self.wake.wait_until(&mut queue, deadline);
                    }
                    drop(queue);
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }

    fn new(db: Database, on_flush: bool) -> Arc<Shared> {
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        Arc::new(Shared { db, on_flush, queue: Mutex::new(Queue::default()), wake: Condvar::new(), progress })
    }

    /// A batch is ready: the committer thread is woken, or, for a store without one, the
    /// batch (full by now) is committed here.
    fn wake_committer(&self) {
        if !self.on_flush {
            self.wake.notify_one();
            return;
        }
        // A failure needs no handling here: the writes stay queued, the next flush retries
        // them and reports the failure to whoever waits for durability.
        let _ = self.commit_pending();
    }

    /// Commits every pending write on this thread (for a store without a committer thread).
    fn commit_pending(&self) -> Result<(), Arc<StoreError>> {
        let (batch, up_to) = {
            let mut queue = self.queue.lock();
            if queue.crashed {
                return Err(Arc::new(StoreError::Closed));
            }
            if queue.pending.is_empty() {
                return Ok(());
            }
            let batch = Arc::new(queue.take_pending());
            queue.committing = Arc::clone(&batch);
            (batch, queue.written)
        };
        self.commit_batch(&batch, up_to)
    }

    /// Commits `batch` (writes up to number `up_to`, now in `committing`) and settles the
    /// outcome: progress for the flushes waiting, or the writes back into the queue.
    fn commit_batch(&self, batch: &Writes, up_to: u64) -> Result<(), Arc<StoreError>> {
        let result = self.commit(batch);
        let mut queue = self.queue.lock();
        let committing = std::mem::take(&mut queue.committing);
        match result {
            Ok(()) => {
                queue.failing = None;
                // A crash during this commit failed the flushes waiting for later writes:
                // they stay failed.
                let crashed = queue.crashed;
                drop(queue);
                self.progress.send_modify(|p| {
                    p.durable = up_to;
                    if !crashed {
                        p.failed = None;
                    }
                });
                Ok(())
            }
            Err(err) => {
                let err = Arc::new(err);
                if queue.failing.is_none() {
                    tracing::error!(error = %crate::error::chain(&*err), writes = batch.len(), "storage commit failed; retrying");
                }
                queue.failing = Some(Arc::clone(&err));
                // Back into the queue, under anything written since; not after a crash,
                // which loses them as it lost the pending writes.
                if !queue.crashed {
                    for (key, value) in committing.iter() {
                        queue.pending.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
                drop(queue);
                self.progress.send_modify(|p| p.failed = Some((up_to, Arc::clone(&err))));
                Err(err)
            }
        }
    }

    fn commit(&self, batch: &Writes) -> Result<(), StoreError> {
        if let Some(memory) = self.db.in_memory() {
            // Nothing to make durable: the values go in as they were queued, and one
            // waiting to be encoded is encoded only if it is read.
            let values = batch.iter().map(|((table, key), value)| (*table, key.clone(), value.clone()));
            memory.merge(values);
            return Ok(());
        }
        // In key order, as the database's B-trees take them best.
        let mut sorted: Vec<(&Key, &Option<Queued>)> = batch.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.db
            .write(true, |tables| {
                for ((table, key), value) in sorted {
                    tables.put(*table, key, value.as_ref().map(Queued::bytes).as_deref())?;
                }
                Ok::<(), StoreError>(())
            })
            .and_then(|applied| applied)
    }
}
