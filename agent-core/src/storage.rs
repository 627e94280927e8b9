//! Per-agent persistent key-value storage, typed through serde, in the bureau's database.
//!
//! Each agent's keys live under its address in one table of the bureau's
//! [`Database`](crate::store::Database). Values are stored as JSON. A write is visible to
//! reads at once and is committed in the background by the bureau's one committer thread
//! (see [`WriteBehind`]); it is durable once [`Storage::flush`] returns. The bureau
//! flushes on shutdown.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::identity::Address;
use crate::store::{StoreError, Table, WriteBehind};

/// Every agent's entries, keyed by the agent's address followed by its key.
const TABLE: Table = Table::new("agent-storage");

/// An agent's key-value store. Cheap to clone; clones share the same entries.
#[derive(Clone)]
pub struct Storage {
    store: WriteBehind,
    owner: Address,
}

/// Why a storage operation failed. Nothing already stored is lost by a failed operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database failed (I/O error or corruption), or a commit failed before the write
    /// was durable.
    #[error("agent storage failed")]
    Store(#[from] StoreError),
    /// The value could not be serialised.
    #[error("cannot encode value for key {key:?}: {source}")]
    Encode {
        /// The key.
        key: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// The stored bytes do not decode as the requested type.
    #[error("value at key {key:?} does not decode as the requested type: {source}")]
    Decode {
        /// The key.
        key: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

impl Storage {
    pub(crate) fn open(store: &WriteBehind, owner: Address) -> Storage {
        Storage { store: store.clone(), owner }
    }

    fn key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(32 + key.len());
        full.extend_from_slice(self.owner.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// The value at `key`, decoded as `T`, or `None`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.store.get(TABLE, &self.key(key))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StorageError::Decode { key: key.to_owned(), source }),
        }
    }

    /// Stores `value` at `key`, replacing any previous value. Visible to reads at once;
    /// durable once a later [`flush`](Self::flush) returns.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StorageError::Encode { key: key.to_owned(), source })?;
        self.store.put(TABLE, self.key(key), Some(bytes))?;
        Ok(())
    }

    /// Stores `json`, a value its caller encoded as JSON itself, at `key`, as
    /// [`set`](Self::set) would store it: for writers on a hot path with an encoder of their
    /// own (dialogues write a record at every step of every conversation). Bytes that are
    /// not one JSON value are stored all the same, and a later [`get`](Self::get) of them
    /// fails with [`StorageError::Decode`].
    pub fn set_json(&self, key: &str, json: Vec<u8>) -> Result<(), StorageError> {
        self.store.put(TABLE, self.key(key), Some(json))?;
        Ok(())
    }

    /// Stores at `key` the JSON that `encode` gives, encoded only when it is needed: when
    /// the store commits it to its file (on the store's own thread), or when it is read
    /// before that. A bureau without a data directory keeps `encode` itself as the value
    /// and calls it at each read, if any.
    /// For a writer that rewrites one key many times between commits (a dialogue records
    /// itself at every step, a few milliseconds apart): only the last value is encoded,
    /// and not on the writer's thread. `encode` must give the same bytes at every call, so
    /// it should own a snapshot of what it encodes, not a view of something that changes;
    /// and it must not panic: it runs on the store's committer thread, whose end closes the
    /// store for every agent of the bureau. Encode what cannot fail to encode (hand-written
    /// JSON, a value already checked), or use [`set`](Self::set).
    pub fn set_json_later(
        &self,
        key: &str,
        encode: impl Fn() -> Vec<u8> + Send + Sync + 'static,
    ) -> Result<(), StorageError> {
        self.store.put_encoded_later(TABLE, self.key(key), std::sync::Arc::new(encode))?;
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.store.remove(TABLE, self.key(key))?)
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.store.contains(TABLE, &self.key(key))?)
    }

    /// Every key, in byte order (keys that are not UTF-8 are skipped).
    pub fn keys(&self) -> Result<Vec<String>, StorageError> {
        self.keys_starting_with("")
    }

    /// Every key that starts with `prefix`, in byte order (keys that are not UTF-8 are
    /// skipped): for a reader of one kind of record kept under a prefix of its own (a
    /// protocol's records, read back when the agent starts), which then reads only those
    /// keys, however many others the agent keeps.
    pub fn keys_starting_with(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let owner_len = self.owner.as_bytes().len();
        let keys = self.store.scan_keys(TABLE, &self.key(prefix))?;
        Ok(keys.into_iter().filter_map(|key| String::from_utf8(key[owner_len..].to_vec()).ok()).collect())
    }

    /// Waits until every write so far is on disk. Flushes of all agents of a bureau are
    /// committed together by one thread, so many agents flushing at once share disk syncs.
    ///
    /// Cancel safety: cancelling the wait leaves the writes queued; they are still committed.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.store.flush().await?;
        Ok(())
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("owner", &self.owner).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{Storage, TABLE};
    use crate::identity::Address;
    use crate::store::{Database, WriteBehind};

    fn keys_of(storage: &Storage, prefix: &str) -> Vec<String> {
        storage.keys_starting_with(prefix).unwrap()
    }

    #[tokio::test]
    async fn a_prefix_scan_gives_this_agents_keys_with_the_prefix_only() {
        let store = WriteBehind::on_flush(Database::temporary().unwrap());
        let mine = Storage::open(&store, Address::from_bytes([1; 32]));
        let theirs = Storage::open(&store, Address::from_bytes([2; 32]));
        for key in ["order/2", "order/1", "order", "orders/1", "a", "z", "order/gone"] {
            mine.set(key, &1).unwrap();
        }
        theirs.set("order/3", &1).unwrap();
        // A key that is not UTF-8 under the prefix, as only another writer could leave it.
        let mut raw = Address::from_bytes([1; 32]).as_bytes().to_vec();
        raw.extend_from_slice(b"order/\xff");
        store.put(TABLE, raw, Some(b"1".to_vec())).unwrap();
        mine.flush().await.unwrap();
        // Queued writes, not yet committed, are seen as the committed ones are.
        mine.set("order/0", &1).unwrap();
        assert!(mine.remove("order/gone").unwrap());

        assert_eq!(keys_of(&mine, "order/"), ["order/0", "order/1", "order/2"]);
        assert_eq!(keys_of(&theirs, "order/"), ["order/3"]);
        assert_eq!(keys_of(&mine, "x"), Vec::<String>::new());
        assert_eq!(mine.keys().unwrap(), ["a", "order", "order/0", "order/1", "order/2", "orders/1", "z"]);
    }
}
