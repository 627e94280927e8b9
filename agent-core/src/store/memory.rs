//! A database held in memory ([`Database::temporary`](super::Database::temporary)): one
//! ordered map per table behind a lock, written in transactions staged beside it, or
//! merged into by a [`WriteBehind`](super::WriteBehind)'s commits as its writes were
//! queued: a value waiting to be encoded is encoded when it is read, if it ever is.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use parking_lot::{Mutex, RwLock};

use super::write_behind::Queued;
use super::{successor, Entry, Table, TablesOf};

type Rows = BTreeMap<Vec<u8>, Queued>;

#[derive(Default)]
pub(super) struct Memory {
    tables: RwLock<HashMap<Table, Rows>>,
    /// Held through a whole transaction: a read-modify-write sees no other writer's
    /// changes between its read and its commit, as in a file.
    writer: Mutex<()>,
}

impl Memory {
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        // Taken out under the lock, encoded (if it waits to be) after it.
        let value = self.tables.read().get(&table)?.get(key).cloned();
        value.map(Queued::into_bytes)
    }

    pub(super) fn contains(&self, table: Table, key: &[u8]) -> bool {
        self.tables.read().get(&table).is_some_and(|rows| rows.contains_key(key))
    }

    /// Up to `limit` entries of `table` whose key starts with `prefix`, in key order or
    /// (`newest_first`) reversed.
    pub(super) fn scan(&self, table: Table, prefix: &[u8], limit: usize, newest_first: bool) -> Vec<Entry> {
        let tables = self.tables.read();
        let Some(rows) = tables.get(&table) else {
            return Vec::new();
        };
        let range = starting_with(rows, prefix);
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Queued)>> =
            if newest_first { Box::new(range.rev()) } else { Box::new(range) };
        let found: Vec<(Vec<u8>, Queued)> = entries.take(limit).map(|(k, v)| (k.clone(), v.clone())).collect();
        drop(tables);
        found.into_iter().map(|(key, value)| (key, value.into_bytes())).collect()
    }

    /// The keys [`scan`](Self::scan) would give, without encoding their values.
    pub(super) fn scan_keys(&self, table: Table, prefix: &[u8]) -> Vec<Vec<u8>> {
        let tables = self.tables.read();
        let Some(rows) = tables.get(&table) else {
            return Vec::new();
        };
        starting_with(rows, prefix).map(|(key, _)| key.clone()).collect()
    }

    /// Moves a write-behind store's batch in as one commit: `None` removes a key. Nothing
    /// is encoded here; a reader encodes what it reads.
    pub(super) fn merge(&self, writes: impl IntoIterator<Item = (Table, Vec<u8>, Option<Queued>)>) {
        let _writer = self.writer.lock();
        let mut committed = self.tables.write();
        for (table, key, value) in writes {
            let rows = committed.entry(table).or_default();
            match value {
                Some(value) => rows.insert(key, value),
                None => rows.remove(&key),
            };
        }
    }

    /// Runs `apply` on changes staged beside the map, and moves them in if it succeeds.
    pub(super) fn write<T, E>(&self, apply: impl FnOnce(&mut super::Tables<'_>) -> Result<T, E>) -> Result<T, E> {
        let _writer = self.writer.lock();
        let mut changes = Changes::new();
        let value = apply(&mut super::Tables(TablesOf::Memory(Staged { memory: self, changes: &mut changes })))?;
        let mut committed = self.tables.write();
        for (table, changes) in changes {
            let rows = committed.entry(table).or_default();
            for (key, value) in changes {
                match value {
                    Some(value) => rows.insert(key, Queued::Bytes(value)),
                    None => rows.remove(&key),
                };
            }
        }
        Ok(value)
    }
}

/// The rows of `rows` whose key starts with `prefix`, in key order.
fn starting_with<'a>(rows: &'a Rows, prefix: &[u8]) -> std::collections::btree_map::Range<'a, Vec<u8>, Queued> {
    let end = successor(prefix);
    rows.range::<[u8], _>((Bound::Included(prefix), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded)))
}

/// The changes of one transaction in memory, by table: a value, or `None` for a removal.
type Changes = HashMap<Table, BTreeMap<Vec<u8>, Option<Vec<u8>>>>;

/// A transaction in memory: its changes, staged, and the map they go into.
pub(super) struct Staged<'txn> {
    memory: &'txn Memory,
    changes: &'txn mut Changes,
}

impl Staged<'_> {
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        match self.changes.get(&table).and_then(|changes| changes.get(key)) {
            Some(changed) => changed.clone(),
            None => self.memory.get(table, key),
        }
    }

    pub(super) fn put(&mut self, table: Table, key: &[u8], value: Option<&[u8]>) {
        self.changes.entry(table).or_default().insert(key.to_vec(), value.map(<[u8]>::to_vec));
    }
}
