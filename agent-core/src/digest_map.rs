//! Maps keyed by addresses and digests, which are uniform already and need no hashing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes keys that are already uniform digests (addresses, schema digests) by taking
/// their first eight bytes: these maps only hold locally chosen keys, never a peer's.
#[derive(Default)]
pub(crate) struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut head = [0u8; 8];
        let n = bytes.len().min(8);
        head[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(head);
    }

    fn write_usize(&mut self, _: usize) {}
}

pub(crate) type DigestMap<K, V> = HashMap<K, V, BuildHasherDefault<DigestHasher>>;
