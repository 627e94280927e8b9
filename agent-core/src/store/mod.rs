//! The embedded database under every durable store: agent storage and the almanac server.
//!
//! [`Database`] is one [redb](https://docs.rs/redb) file: tables of byte keys and byte
//! values, read through snapshots that never block writers, and written by one thread at a
//! time in atomic transactions that are on disk when [`Database::write`] returns. Held in
//! memory ([`Database::temporary`]), it is a map with the same tables and transactions, and
//! nothing on disk. Use it directly when one thread owns all writes and needs
//! read-modify-write transactions; use [`WriteBehind`] when many tasks write and some of
//! them wait for durability (agent storage, the almanac): it queues their writes, makes them
//! visible at once, and commits them in groups on one thread.
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
mod file;
mod memory;
mod write_behind;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::TableDefinition;

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
    /// The database file is being reopened after an I/O error: try again later.
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

/// An embedded database: a redb file, or a map held in memory ([`temporary`](Self::temporary)).
/// Cheap to clone; clones share the data. See the module docs.
///
/// After an I/O error a file's engine refuses every operation until the file is opened
/// again; the next write does that (redb repairs the file on opening, back to its last
/// commit), so a disk that recovers (space freed, device back) makes the store work again
/// without a restart.
#[derive(Clone)]
pub struct Database {
    engine: Arc<Engine>,
}

enum Engine {
    File(file::File),
    Memory(memory::Memory),
}

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

    fn with_opener(path: PathBuf, open: file::Opener) -> Result<Database, StoreError> {
        Ok(Database { engine: Arc::new(Engine::File(file::File::open(path, open)?)) })
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

    /// A database held in memory, gone when the last handle is dropped: what a bureau
    /// without a data directory and every simulated host keep their agents' storage in.
    ///
    /// It is a map, not redb on a memory backend: with nothing to make durable, the
    /// copy-on-write pages, checksums and page allocation of redb's commits are all cost
    /// (with them, a bureau's storage commits were nearly half of a contract-net round's
    /// instructions). A [`WriteBehind`]'s commit moves its writes in as they were queued:
    /// a value waiting to be encoded is encoded when it is read, if ever. Transactions are
    /// still atomic (a failed [`write`](Self::write) changes nothing) and writers still go
    /// one at a time. There are no snapshots: a read waits while a commit moves its
    /// changes into the map (map inserts only: about a millisecond for a thousand writes),
    /// and a commit waits for the reads under way, a long scan included. Never fails: the
    /// `Result` is the file's.
    pub fn temporary() -> Result<Database, StoreError> {
        Ok(Database { engine: Arc::new(Engine::Memory(memory::Memory::default())) })
    }

    /// The value at `key` in `table`, as committed.
    pub fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match &*self.engine {
            Engine::File(file) => file.get(table, key),
            Engine::Memory(memory) => Ok(memory.get(table, key)),
        }
    }

    /// Whether `key` in `table` holds a value, as committed. A value in memory waiting to
    /// be encoded is not encoded to answer.
    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        match &*self.engine {
            Engine::File(file) => Ok(file.get(table, key)?.is_some()),
            Engine::Memory(memory) => Ok(memory.contains(table, key)),
        }
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order, as committed.
    pub fn scan_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        match &*self.engine {
            Engine::File(file) => file.scan(table, prefix, usize::MAX, false),
            Engine::Memory(memory) => Ok(memory.scan(table, prefix, usize::MAX, false)),
        }
    }

    /// The keys of `table` that start with `prefix`, in key order, as committed: what
    /// [`scan_prefix`](Self::scan_prefix) gives without the values.
    pub fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        match &*self.engine {
            Engine::File(file) => {
                Ok(file.scan(table, prefix, usize::MAX, false)?.into_iter().map(|(k, _)| k).collect())
            }
            Engine::Memory(memory) => Ok(memory.scan_keys(table, prefix)),
        }
    }

    /// The database in memory, for a write-behind store to merge its batches into.
    fn in_memory(&self) -> Option<&memory::Memory> {
        match &*self.engine {
            Engine::Memory(memory) => Some(memory),
            Engine::File(_) => None,
        }
    }

    /// The last `limit` entries of `table` whose key starts with `prefix`, newest (highest
    /// key) first, as committed.
    pub fn last_with_prefix(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        match &*self.engine {
            Engine::File(file) => file.scan(table, prefix, limit, true),
            Engine::Memory(memory) => Ok(memory.scan(table, prefix, limit, true)),
        }
    }

    /// Runs `apply` in one write transaction and commits it; when this returns `Ok` the
    /// changes are on disk if `durable` (a database in memory has no disk: `durable` means
    /// nothing to it), and otherwise survive a crash only once a later durable commit
    /// returns. If `apply` fails, nothing it wrote is committed. Blocks the calling thread
    /// while another write runs: call it from a thread of its own.
    pub fn write<T, E>(
        &self,
        durable: bool,
        apply: impl FnOnce(&mut Tables<'_>) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        match &*self.engine {
            Engine::File(file) => file.write(durable, apply),
            Engine::Memory(memory) => Ok(memory.write(apply)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").finish_non_exhaustive()
    }
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

/// The tables of one write transaction, as [`Database::write`] hands them to its closure.
/// Reads see the transaction's own writes.
pub struct Tables<'txn>(TablesOf<'txn>);

enum TablesOf<'txn> {
    File(file::Tables<'txn>),
    Memory(memory::Staged<'txn>),
}

impl Tables<'_> {
    /// The value at `key` in `table`.
    pub fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match &mut self.0 {
            TablesOf::File(tables) => tables.get(table, key),
            TablesOf::Memory(staged) => Ok(staged.get(table, key)),
        }
    }

    /// `value` at `key` in `table`, or removes it when `None`.
    pub fn put(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        match &mut self.0 {
            TablesOf::File(tables) => tables.put(table, key, value),
            TablesOf::Memory(staged) => {
                staged.put(table, key, value);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
