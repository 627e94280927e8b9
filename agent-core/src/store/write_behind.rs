//! Many writers, one committer: writes are queued in memory, visible to readers at once,
//! and committed in groups by one thread; [`WriteBehind::flush`] waits for the commit that
//! covers every write made before it.
//!
//! Every flush of the database goes through that one thread, so concurrent flushes cannot
//! race inside the engine, and 64 agents flushing at once cost one disk sync per group,
//! not 64.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{Database, Entry, StoreError, Table};

/// A [`Database`] written through one committer thread. Cheap to clone; clones share the
/// queue. When the last clone is dropped, queued writes are committed and the thread ends.
#[derive(Clone)]
pub struct WriteBehind {
    shared: Arc<Shared>,
    _committer: Arc<Committer>,
}

type Key = (Table, Vec<u8>);
type Writes = BTreeMap<Key, Option<Vec<u8>>>;

struct Shared {
    db: Database,
    queue: Mutex<Queue>,
    wake: Condvar,
    progress: tokio::sync::watch::Sender<Progress>,
}

/// Writes not yet committed. `pending` has no size cap of its own: it holds at most one
/// entry per key written since the last commit (a rewrite replaces the entry), so it is
/// bounded by what the writers store, and the committer drains it continuously.
#[derive(Default)]
struct Queue {
    /// Written since the current commit began.
    pending: Writes,
    /// Being committed now; still read from until the commit has landed.
    committing: Arc<Writes>,
    /// Sequence number of the latest write.
    written: u64,
    closing: bool,
}

#[derive(Clone, Default)]
struct Progress {
    /// Every write up to this sequence number is on disk.
    durable: u64,
    /// The last commit failed: writes up to this number wait for a retry.
    failed: Option<(u64, Arc<str>)>,
}

/// Owns the committer thread: dropping it closes the queue and waits for the last commit.
struct Committer {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.queue.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            if thread.join().is_err() {
                tracing::error!("the storage committer thread panicked");
            }
        }
    }
}

/// How long a failed commit waits before it is retried.
const RETRY: std::time::Duration = std::time::Duration::from_millis(100);

impl WriteBehind {
    /// Starts the committer thread for `db`.
    pub fn new(db: Database) -> Result<WriteBehind, StoreError> {
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        let shared = Arc::new(Shared { db, queue: Mutex::new(Queue::default()), wake: Condvar::new(), progress });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("storage-committer".into())
            .spawn(move || worker.commit_loop())
            .map_err(|e| StoreError::NotDurable(format!("cannot start the committer thread: {e}").into()))?;
        let committer = Arc::new(Committer { shared: Arc::clone(&shared), thread: Mutex::new(Some(thread)) });
        Ok(WriteBehind { shared, _committer: committer })
    }

    /// The database underneath, for reads of committed data.
    pub fn database(&self) -> &Database {
        &self.shared.db
    }

    /// The value at `key` in `table`, including writes not yet committed.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let lookup = (table, key.to_vec());
        {
            let queue = self.shared.queue.lock();
            if let Some(value) = queue.pending.get(&lookup).or_else(|| queue.committing.get(&lookup)) {
                return Ok(value.clone());
            }
        }
        // Not queued: committed already, and a read that begins now sees that commit.
        self.shared.db.get(table, key)
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order, including
    /// writes not yet committed.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let queued: Vec<(Vec<u8>, Option<Vec<u8>>)> = {
            let queue = self.shared.queue.lock();
            let in_table = |(k, _): &(&Key, &Option<Vec<u8>>)| k.0 == table && k.1.starts_with(prefix);
            // `pending` is newer than `committing`, so it is applied last.
            let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for (k, v) in queue.committing.iter().filter(in_table).chain(queue.pending.iter().filter(in_table)) {
                merged.insert(k.1.clone(), v.clone());
            }
            merged.into_iter().collect()
        };
        let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = self.shared.db.scan_prefix(table, prefix)?.into_iter().collect();
        for (key, value) in queued {
            match value {
                Some(value) => entries.insert(key, value),
                None => entries.remove(&key),
            };
        }
        Ok(entries.into_iter().collect())
    }

    /// Queues `value` at `key` in `table` (or its removal when `None`); readers see it at
    /// once, and it is durable once a later [`flush`](Self::flush) returns.
    pub fn put(&self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), StoreError> {
        let mut queue = self.shared.queue.lock();
        if queue.closing {
            return Err(StoreError::Closed);
        }
        queue.pending.insert((table, key), value);
        queue.written += 1;
        drop(queue);
        self.shared.wake.notify_one();
        Ok(())
    }

    /// Waits until every write queued before this call is on disk.
    ///
    /// Cancel safety: cancelling the wait cancels nothing else; the writes are still
    /// committed. An error says the commit failed: the writes stay queued and are retried,
    /// but may be lost if the process stops before a retry succeeds.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let target = self.shared.queue.lock().written;
        let mut progress = self.shared.progress.subscribe();
        loop {
            {
                let now = progress.borrow_and_update();
                if now.durable >= target {
                    return Ok(());
                }
                if let Some((up_to, reason)) = &now.failed {
                    if *up_to >= target {
                        return Err(StoreError::NotDurable(reason.clone()));
                    }
                }
            }
            if progress.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }
}

impl Shared {
    fn commit_loop(&self) {
        loop {
            let (batch, up_to) = {
                let mut queue = self.queue.lock();
                while queue.pending.is_empty() && !queue.closing {
                    self.wake.wait(&mut queue);
                }
                if queue.pending.is_empty() {
                    return;
                }
                let batch = Arc::new(std::mem::take(&mut queue.pending));
                queue.committing = Arc::clone(&batch);
                (batch, queue.written)
            };
            let result = self.commit(&batch);
            let mut queue = self.queue.lock();
            let committing = std::mem::take(&mut queue.committing);
            match result {
                Ok(()) => {
                    drop(queue);
                    self.progress.send_modify(|p| {
                        p.durable = up_to;
                        p.failed = None;
                    });
                }
                Err(err) => {
                    tracing::error!(error = %err, writes = batch.len(), "storage commit failed; retrying");
                    // Back into the queue, under anything written since.
                    for (key, value) in committing.iter() {
                        queue.pending.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                    let closing = queue.closing;
                    drop(queue);
                    self.progress.send_modify(|p| p.failed = Some((up_to, err.to_string().into())));
                    if closing {
                        tracing::error!("storage closed with writes that could not be committed");
                        return;
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
    }

    fn commit(&self, batch: &Writes) -> Result<(), StoreError> {
        self.db
            .write(true, |txn| {
                for ((table, key), value) in batch {
                    super::put(txn, *table, key, value.as_deref())?;
                }
                Ok::<(), StoreError>(())
            })
            .and_then(|applied| applied)
    }
}
