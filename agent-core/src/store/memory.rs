//! A database held in memory ([`Database::temporary`](super::Database::temporary)): one
//! ordered map per table behind a lock, written in transactions staged beside it.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use parking_lot::{Mutex, RwLock};

use super::{successor, Entry, Table, TablesOf};

type Rows = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub(super) struct Memory {
    tables: RwLock<HashMap<Table, Rows>>,
    /// Held through a whole transaction: a read-modify-write sees no other writer's
    /// changes between its read and its commit, as in a file.
    writer: Mutex<()>,
}

impl Memory {
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.tables.read().get(&table)?.get(key).cloned()
    }

    /// Up to `limit` entries of `table` whose key starts with `prefix`, in key order or
    /// (`newest_first`) reversed.
    pub(super) fn scan(&self, table: Table, prefix: &[u8], limit: usize, newest_first: bool) -> Vec<Entry> {
        let tables = self.tables.read();
        let Some(rows) = tables.get(&table) else {
            return Vec::new();
        };
        let end = successor(prefix);
        let end = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let range = rows.range::<[u8], _>((Bound::Included(prefix), end));
        let entries: Box<dyn Iterator<Item = (&Vec<u8>, &Vec<u8>)>> =
            if newest_first { Box::new(range.rev()) } else { Box::new(range) };
        entries.take(limit).map(|(key, value)| (key.clone(), value.clone())).collect()
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
                    Some(value) => rows.insert(key, value),
                    None => rows.remove(&key),
                };
            }
        }
        Ok(value)
    }
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
