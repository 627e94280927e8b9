//! The embedded database under every durable store: agent storage, the almanac server and
//! the local ledger.
//!
//! [`Database`] is one [redb](https://docs.rs/redb) file: tables of byte keys and byte
//! values, read through snapshots that never block writers, and written by one thread at a
//! time in atomic transactions that are on disk when [`Database::write`] returns. Use it
//! directly when one thread owns all writes and needs read-modify-write transactions (the
//! ledger's committer); use [`WriteBehind`] when many tasks write and some of them wait
//! for durability (agent storage, the almanac): it queues their writes, makes them visible
//! at once, and commits them in groups on one thread.
//!
//! # Why redb, not sled
//! sled 0.34 deadlocks when several tasks flush one database at once (upstream issue 1308,
//! fixed only on an unreleased branch) and under plain concurrent load (issue 1412, open);
//! it is no longer released. redb is maintained, crash-safe by design (copy-on-write pages,
//! checksummed commits) and serialises writers itself. `docs/architecture.md` records the
//! measurements behind the choice.
//!
//! # Bounds and shutdown
//! Each file is opened by one `Database` at a time (a second open in the same process fails
//! with [`StoreError::Open`]); it is released when the last handle is dropped.

mod faults;
mod write_behind;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

pub use faults::Faults;
pub use write_behind::{Encode, WriteBehind};

/// A table: byte keys to byte values, created on its first write. Declare each as a
/// constant: `const RECORDS: Table = Table::new("records");`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Table(&'static str);

impl Table {
    /// The table called `name`.
    pub const fn new(name: &'static str) -> Table {
        Table(name)
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.0
    }

    fn definition(self) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
        TableDefinition::new(self.0)
    }
}

/// Why a database operation failed. Nothing already committed is lost by a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or created (missing permission, a corrupt
    /// file, or already open in this process).
    #[error("cannot open the database at {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// The directory meant to hold the database could not be created.
    #[error("cannot create the directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A read or write failed (I/O error or corruption). A failed write committed nothing.
    #[error("database {operation} failed")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// The directory holds a database of the sled engine that earlier versions of Agora
    /// used. It is not read (its data would silently be missing), nor touched.
    #[error(
        "{dir} holds a sled database from an earlier Agora version; it is left untouched. \
         Move it aside to start empty, or migrate it with the earlier version's export"
    )]
    LegacyDatabase {
        /// The directory.
        dir: PathBuf,
    },
    /// Writes were queued but the commit that should have made them durable failed (the
    /// source says why). They stay queued and are retried; until a retry succeeds they may
    /// be lost on a crash.
    #[error("writes not yet durable")]
    NotDurable(#[source] Arc<StoreError>),
    /// Writes were refused because commits have been failing and the queue of writes
    /// waiting for one is full. Nothing was queued.
    #[error("{queued} writes already wait for a commit that keeps failing; write refused")]
    Backlog {
        /// How many writes wait.
        queued: usize,
        /// Why the last commit failed.
        #[source]
        last_failure: Arc<StoreError>,
    },
    /// The committer thread could not be started.
    #[error("cannot start the committer thread")]
    Spawn(#[source] std::io::Error),
    /// The commit itself failed: its writes may or may not be on disk. Read the state back
    /// to learn which.
    #[error("commit failed; its writes may or may not be on disk")]
    Commit(#[source] redb::CommitError),
    /// The database is being reopened after an I/O error (or, held in memory, cannot be):
    /// try again later.
    #[error("the database is being reopened after an I/O error")]
    Reopening,
    /// The database was closed before the write was committed.
    #[error("the database is closed; the write was not committed")]
    Closed,
    /// The store refuses writes for now: a simulated storage outage
    /// ([`Host::fail_storage`](crate::sim::Host::fail_storage)). Nothing was queued; what
    /// was written before is kept, and reads are served.
    #[error("storage is unavailable (an outage); the write was not queued")]
    Unavailable,
}

impl StoreError {
    fn io(operation: &'static str) -> impl FnOnce(redb::Error) -> StoreError {
        move |source| StoreError::Io { operation, source }
    }
}

/// Converts any of redb's specific errors into a [`StoreError::Io`].
fn io<E: Into<redb::Error>>(operation: &'static str) -> impl FnOnce(E) -> StoreError {
    move |source| StoreError::io(operation)(source.into())
}

/// A key and its value, as scans return them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An embedded database. Cheap to clone; clones share the file. See the module docs.
///
/// After an I/O error the engine refuses every operation until the file is opened again;
/// the next write does that (redb repairs the file on opening, back to its last commit),
/// so a disk that recovers (space freed, device back) makes the store work again without
/// a restart.
#[derive(Clone)]
pub struct Database {
    shared: Arc<Handle>,
}

type Opener = Box<dyn Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync>;

struct Handle {
    /// `None` only while the file is being reopened.
    engine: parking_lot::RwLock<Option<Arc<redb::Database>>>,
    /// Opens the file again (none for a database in memory).
    reopen: Option<Opener>,
    path: PathBuf,
}

/// The transaction handed to [`Database::write`]'s closure.
pub type WriteTransaction = redb::WriteTransaction;

impl Database {
    /// Opens (or creates) the database file `file`, creating its directory if needed.
    pub fn open(file: impl AsRef<Path>) -> Result<Database, StoreError> {
        let file = file.as_ref();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let path = file.to_path_buf();
        Database::with_opener(path.clone(), Box::new(move || redb::Database::create(&path)))
    }

    fn with_opener(path: PathBuf, open: Opener) -> Result<Database, StoreError> {
        let engine = open().map_err(|source| StoreError::Open { path: path.clone(), source })?;
        let handle = Handle { engine: parking_lot::RwLock::new(Some(Arc::new(engine))), reopen: Some(open), path };
        Ok(Database { shared: Arc::new(handle) })
    }

    /// Opens the database named `name` inside the directory `dir` (created if missing).
    /// A directory that holds a sled database of an earlier Agora version is refused with
    /// [`StoreError::LegacyDatabase`], so old data is never silently ignored.
    pub fn open_in(dir: impl AsRef<Path>, name: &str) -> Result<Database, StoreError> {
        let dir = dir.as_ref();
        // sled keeps a `conf` file and a `db` file side by side in its directory.
        if dir.join("conf").is_file() && dir.join("db").is_file() {
            return Err(StoreError::LegacyDatabase { dir: dir.to_path_buf() });
        }
        Self::open(dir.join(name))
    }

    /// Opens (or creates) the database file `file` with `faults` able to make its writes
    /// and syncs fail, for tests of what a store does when its disk fails.
    pub fn open_with_faults(file: impl AsRef<Path>, faults: Faults) -> Result<Database, StoreError> {
        let file = file.as_ref();
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        let path = file.to_path_buf();
        let open = move || {
            let handle = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
            redb::Builder::new().create_with_backend(faults::FaultyFile::new(handle, faults.clone())?)
        };
        Database::with_opener(file.to_path_buf(), Box::new(open))
    }

    /// A database held in memory, gone when the last handle is dropped.
    pub fn temporary() -> Result<Database, StoreError> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|source| StoreError::Open { path: PathBuf::from("(memory)"), source })?;
        let handle = Handle {
            engine: parking_lot::RwLock::new(Some(Arc::new(db))),
            reopen: None,
            path: PathBuf::from("(memory)"),
        };
        Ok(Database { shared: Arc::new(handle) })
    }

    /// The engine, unless it is being reopened.
    fn engine(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.shared.engine.read().clone().ok_or(StoreError::Reopening)
    }

    /// Closes and opens the file again, after an I/O error made the engine refuse work.
    /// Waits for no one: if a read is still using the engine, it fails and a later write
    /// tries again.
    fn reopen(&self) -> Result<(), StoreError> {
        let Some(open) = &self.shared.reopen else {
            return Err(StoreError::Reopening);
        };
        let mut slot = self.shared.engine.write();
        if let Some(current) = slot.take() {
            match Arc::try_unwrap(current) {
                Ok(engine) => drop(engine), // Releases the file.
                Err(in_use) => {
                    *slot = Some(in_use);
                    return Err(StoreError::Reopening);
                }
            }
        }
        let engine = open().map_err(|source| StoreError::Open { path: self.shared.path.clone(), source })?;
        *slot = Some(Arc::new(engine));
        tracing::warn!(path = %self.shared.path.display(), "database reopened after an I/O error");
        Ok(())
    }

    /// The value at `key` in `table`, as committed.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(table, |table| match table {
            Some(table) => Ok(table.get(key).map_err(io("get"))?.map(|value| value.value().to_vec())),
            None => Ok(None),
        })
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order, as committed.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        self.read(table, |table| collect(table, prefix, usize::MAX, false))
    }

    /// The last `limit` entries of `table` whose key starts with `prefix`, newest (highest
    /// key) first, as committed.
    pub fn last_with_prefix(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.read(table, |table| collect(table, prefix, limit, true))
    }

    /// Runs `read` on a snapshot of `table` (`None`: the table was never written).
    fn read<T>(
        &self,
        table: Table,
        read: impl FnOnce(Option<&ReadTable>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let engine = self.engine()?;
        let snapshot = engine.begin_read().map_err(io("begin read"))?;
        match snapshot.open_table(table.definition()) {
            Ok(table) => read(Some(&table)),
            Err(redb::TableError::TableDoesNotExist(_)) => read(None),
            Err(e) => Err(io("open table")(e)),
        }
    }

    /// Runs `apply` in one write transaction and commits it; when this returns `Ok` the
    /// changes are on disk if `durable`, and otherwise survive a crash only once a later
    /// durable commit returns. If `apply` fails, nothing it wrote is committed. Blocks the
    /// calling thread while another write runs: call it from a thread of its own.
    pub fn write<T, E>(
        &self,
        durable: bool,
        apply: impl FnOnce(&WriteTransaction) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        let engine = self.engine()?;
        let mut txn = match engine.begin_write() {
            Ok(txn) => txn,
            // After an I/O error the engine refuses every write until it is reopened.
            Err(first) => {
                drop(engine);
                self.reopen().map_err(|_| io("begin write")(first))?;
                self.engine()?.begin_write().map_err(io("begin write"))?
            }
        };
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(io("set durability"))?;
        }
        match apply(&txn) {
            Ok(value) => {
                txn.commit().map_err(StoreError::Commit)?;
                Ok(Ok(value))
            }
            Err(err) => {
                txn.abort().map_err(io("abort"))?;
                Ok(Err(err))
            }
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type WriteTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

/// Up to `limit` entries of `table` whose key starts with `prefix`, in key order or
/// (`newest_first`) reversed.
fn collect(
    table: Option<&ReadTable>,
    prefix: &[u8],
    limit: usize,
    newest_first: bool,
) -> Result<Vec<Entry>, StoreError> {
    let Some(table) = table else {
        return Ok(Vec::new());
    };
    let range = match successor(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice()),
        None => table.range::<&[u8]>(prefix..),
    }
    .map_err(io("scan"))?;
    let entries: Box<dyn Iterator<Item = _>> = if newest_first { Box::new(range.rev()) } else { Box::new(range) };
    let mut out = Vec::new();
    for entry in entries.take(limit) {
        let (key, value) = entry.map_err(io("scan"))?;
        out.push((key.value().to_vec(), value.value().to_vec()));
    }
    Ok(out)
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The tables of one write transaction, each opened once on first use: opening a table
/// costs a lookup and, on closing, a write-back of its root, so a transaction that touches
/// a table many times should open it once. Reads see the transaction's own writes.
pub struct Tables<'txn> {
    txn: &'txn WriteTransaction,
    open: Vec<(Table, WriteTable<'txn>)>,
}

impl<'txn> Tables<'txn> {
    /// No table open yet in `txn`.
    pub fn new(txn: &'txn WriteTransaction) -> Tables<'txn> {
        Tables { txn, open: Vec::new() }
    }

    fn table(&mut self, table: Table) -> Result<&mut WriteTable<'txn>, StoreError> {
        let index = match self.open.iter().position(|(name, _)| *name == table) {
            Some(index) => index,
            None => {
                let opened = self.txn.open_table(table.definition()).map_err(io("open table"))?;
                self.open.push((table, opened));
                self.open.len() - 1
            }
        };
        Ok(&mut self.open[index].1)
    }

    /// The value at `key` in `table`.
    pub fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.table(table)?;
        let value = table.get(key).map_err(io("get"))?.map(|value| value.value().to_vec());
        Ok(value)
    }

    /// `value` at `key` in `table`, or removes it when `None`.
    pub fn put(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let table = self.table(table)?;
        match value {
            Some(value) => table.insert(key, value).map(drop).map_err(io("insert")),
            None => table.remove(key).map(drop).map_err(io("remove")),
        }
    }
}

#[cfg(test)]
mod tests;
