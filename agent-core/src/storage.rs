//! Per-agent persistent key-value storage, typed through serde, backed by sled.
//!
//! Each agent gets its own sled tree, named by its address, inside the bureau's database.
//! Values are stored as JSON. Writes are durable once [`Storage::flush`] returns; the
//! bureau flushes on shutdown, and sled flushes in the background every 500 ms.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::identity::Address;

/// An agent's key-value store. Cloning is cheap; clones share the same tree.
#[derive(Clone)]
pub struct Storage {
    tree: sled::Tree,
}

/// Why a storage operation failed. Nothing already stored is lost by a failed operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database failed (I/O error or corruption).
    #[error("storage I/O failed: {0}")]
    Io(#[from] sled::Error),
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
    pub(crate) fn open(db: &sled::Db, owner: Address) -> Result<Storage, StorageError> {
        Ok(Storage { tree: db.open_tree(owner.as_bytes())? })
    }

    /// The value at `key`, decoded as `T`, or `None`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        match self.tree.get(key.as_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StorageError::Decode { key: key.to_owned(), source }),
        }
    }

    /// Stores `value` at `key`, replacing any previous value.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StorageError::Encode { key: key.to_owned(), source })?;
        self.tree.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.tree.remove(key.as_bytes())?.is_some())
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, key: &str) -> Result<bool, StorageError> {
        Ok(self.tree.contains_key(key.as_bytes())?)
    }

    /// Every key, in byte order (keys that are not UTF-8 are skipped).
    pub fn keys(&self) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        for entry in self.tree.iter().keys() {
            if let Ok(key) = String::from_utf8(entry?.to_vec()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Waits until every write so far is on disk.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.tree.flush_async().await?;
        Ok(())
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("entries", &self.tree.len()).finish()
    }
}
