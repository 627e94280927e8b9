//! A database in a redb file: reads through snapshots that never block writers, writes in
//! atomic transactions, one at a time, and the file opened again after an I/O error.

use std::path::PathBuf;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use super::{io, successor, Entry, StoreError, Table, TablesOf};

/// Opens the file (again, after an I/O error).
pub(super) type Opener = Box<dyn Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync>;

pub(super) struct File {
    /// `None` only while the file is being reopened.
    engine: parking_lot::RwLock<Option<Arc<redb::Database>>>,
    reopen: Opener,
    path: PathBuf,
}

type ReadTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type WriteTable<'txn> = redb::Table<'txn, &'static [u8], &'static [u8]>;

impl File {
    pub(super) fn open(path: PathBuf, open: Opener) -> Result<File, StoreError> {
        let engine = open().map_err(|source| StoreError::Open { path: path.clone(), source })?;
        Ok(File { engine: parking_lot::RwLock::new(Some(Arc::new(engine))), reopen: open, path })
    }

    /// The engine, unless it is being reopened.
    fn engine(&self) -> Result<Arc<redb::Database>, StoreError> {
        self.engine.read().clone().ok_or(StoreError::Reopening)
    }

    /// Closes and opens the file again, after an I/O error made the engine refuse work.
    /// Waits for no one: if a read is still using the engine, it fails and a later write
    /// tries again.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.engine.write();
        if let Some(current) = slot.take() {
            match Arc::try_unwrap(current) {
                Ok(engine) => drop(engine), // Releases the file.
                Err(in_use) => {
                    *slot = Some(in_use);
                    return Err(StoreError::Reopening);
                }
            }
        }
        let engine = (self.reopen)().map_err(|source| StoreError::Open { path: self.path.clone(), source })?;
        *slot = Some(Arc::new(engine));
        tracing::warn!(path = %self.path.display(), "database reopened after an I/O error");
        Ok(())
    }

    pub(super) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(table, |table| match table {
            Some(table) => Ok(table.get(key).map_err(io("get"))?.map(|value| value.value().to_vec())),
            None => Ok(None),
        })
    }

    /// Up to `limit` entries of `table` whose key starts with `prefix`, in key order or
    /// (`newest_first`) reversed.
    pub(super) fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        limit: usize,
        newest_first: bool,
    ) -> Result<Vec<Entry>, StoreError> {
        self.read(table, |table| {
            let Some(table) = table else {
                return Ok(Vec::new());
            };
            let range = match successor(prefix) {
                Some(end) => table.range::<&[u8]>(prefix..end.as_slice()),
                None => table.range::<&[u8]>(prefix..),
            }
            .map_err(io("scan"))?;
            let entries: Box<dyn Iterator<Item = _>> =
                if newest_first { Box::new(range.rev()) } else { Box::new(range) };
            let mut out = Vec::new();
            for entry in entries.take(limit) {
                let (key, value) = entry.map_err(io("scan"))?;
                out.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(out)
        })
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

    /// [`Database::write`](super::Database::write) on the file.
    pub(super) fn write<T, E>(
        &self,
        durable: bool,
        apply: impl FnOnce(&mut super::Tables<'_>) -> Result<T, E>,
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
        // The tables are closed (their roots written back) before the commit.
        let applied = apply(&mut super::Tables(TablesOf::File(Tables { txn: &txn, open: Vec::new() })));
        match applied {
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

/// The tables of one write transaction, each opened once on first use: opening a table
/// costs a lookup and, on closing, a write-back of its root, so a transaction that touches
/// a table many times should open it once.
pub(super) struct Tables<'txn> {
    txn: &'txn redb::WriteTransaction,
    open: Vec<(Table, WriteTable<'txn>)>,
}

impl<'txn> Tables<'txn> {
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

    pub(super) fn get(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let table = self.table(table)?;
        let value = table.get(key).map_err(io("get"))?.map(|value| value.value().to_vec());
        Ok(value)
    }

    pub(super) fn put(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let table = self.table(table)?;
        match value {
            Some(value) => table.insert(key, value).map(drop).map_err(io("insert")),
            None => table.remove(key).map(drop).map_err(io("remove")),
        }
    }
}
