//! Keyed state: a byte-level [`StoreBackend`] (in-memory or sled) under typed stores.
//!
//! Operators keep their working state in memory ([`KeyedStore`] is a hash map with a dirty set) and the
//! runtime commits it: every store writes its changes since the last commit into one [`WriteBatch`], the
//! runtime adds the source offsets those changes came from, and the backend applies the batch
//! **atomically**. After a crash the backend holds the state and offsets of the last commit, and both agree:
//! replay starts exactly after the last record whose effect is in the state.
//!
//! Layout of keys inside a backend: `scope prefix ‖ store name ‖ 0x00 ‖ bincode(key)`.

mod keyed;
mod memory;
mod sled_backend;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};

pub use keyed::KeyedStore;
pub use memory::MemoryBackend;
pub use sled_backend::SledBackend;

/// One atomic unit of writes: puts and deletes applied all together or not at all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// The operations in order (a later operation on the same key wins).
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }
    /// Consumes the batch.
    pub fn into_ops(self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// A byte-level ordered key-value store with atomic batches. Implementations: [`MemoryBackend`],
/// [`SledBackend`].
pub trait StoreBackend: Send + Sync + std::fmt::Debug {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies every operation of `batch` atomically.
    fn apply(&self, batch: WriteBatch) -> Result<()>;
    /// Makes everything applied so far durable (no-op for memory).
    fn flush(&self) -> Result<()>;
}

/// Committed read positions: `(topic, partition) → next offset to read`.
pub type OffsetMap = BTreeMap<(String, u32), u64>;

/// A namespace inside a backend: one per task (consumer group × partition), so tasks never share keys.
#[derive(Debug, Clone)]
pub struct StateScope {
    backend: Arc<dyn StoreBackend>,
    prefix: Vec<u8>,
}

const OFFSETS: &str = "__offsets";
const META: &str = "__meta";

impl StateScope {
    /// A scope over `backend` whose keys all start with `prefix`.
    pub fn new(backend: Arc<dyn StoreBackend>, prefix: impl Into<Vec<u8>>) -> Self {
        Self { backend, prefix: prefix.into() }
    }

    /// A fresh in-memory scope (tests, benches, batch jobs).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryBackend::new()), Vec::new())
    }

    /// A nested scope: `prefix ‖ len(name) ‖ name`.
    pub fn child(&self, name: &str) -> Self {
        let mut prefix = self.prefix.clone();
        push_name(&mut prefix, name);
        Self { backend: Arc::clone(&self.backend), prefix }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn StoreBackend> {
        &self.backend
    }

    /// The key prefix of store `name` in this scope.
    pub fn store_prefix(&self, name: &str) -> Vec<u8> {
        let mut p = self.prefix.clone();
        push_name(&mut p, name);
        p
    }

    /// Opens (and restores) the typed keyed store `name`.
    pub fn keyed<K, V>(&self, name: &str) -> Result<KeyedStore<K, V>>
    where
        K: std::hash::Hash + Eq + Clone + Serialize + DeserializeOwned,
        V: Serialize + DeserializeOwned,
    {
        KeyedStore::open(self, name)
    }

    /// Reads a single typed value stored under `name` in this scope.
    pub fn read_value<V: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Option<V>> {
        let key = self.store_prefix(name);
        match self.backend.get(&key)? {
            None => Ok(None),
            Some(bytes) => Bincode
                .decode(&bytes)
                .map(Some)
                .map_err(|reason| Error::StateDecode { store: name.to_string(), reason }),
        }
    }

    /// Adds a write of a single typed value `name` to `batch`.
    pub fn write_value<V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        value: &V,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let bytes = Bincode
            .encode(value)
            .map_err(|reason| Error::StateEncode { store: name.to_string(), reason })?;
        batch.put(self.store_prefix(name), bytes);
        Ok(())
    }

    /// The offsets committed with this scope's state.
    pub fn read_offsets(&self) -> Result<OffsetMap> {
        Ok(self.read_value::<Vec<(String, u32, u64)>>(OFFSETS)?
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect())
    }

    /// Adds the offsets to `batch`, so they commit atomically with the state in it.
    pub fn write_offsets(&self, offsets: &OffsetMap, batch: &mut WriteBatch) -> Result<()> {
        let flat: Vec<(String, u32, u64)> =
            offsets.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        self.write_value(OFFSETS, &flat, batch)
    }

    /// Reads the runtime's metadata value `name` (e.g. the committed watermark).
    pub fn read_meta<V: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Option<V>> {
        self.child(META).read_value(name)
    }

    /// Adds the runtime metadata value `name` to `batch`.
    pub fn write_meta<V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        value: &V,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        self.child(META).write_value(name, value, batch)
    }
}

fn push_name(buf: &mut Vec<u8>, name: &str) {
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&name.as_bytes()[..usize::from(len)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_scopes_do_not_collide() {
        let s = StateScope::in_memory();
        // "ab" + "c" must not equal "a" + "bc".
        assert_ne!(s.child("ab").store_prefix("c"), s.child("a").store_prefix("bc"));
    }

    #[test]
    fn offsets_round_trip_through_a_batch() {
        let s = StateScope::in_memory().child("task-0");
        assert!(s.read_offsets().expect("read").is_empty());
        let mut o = OffsetMap::new();
        o.insert(("ad-events".into(), 3), 42);
        let mut b = WriteBatch::new();
        s.write_offsets(&o, &mut b).expect("write");
        s.backend().apply(b).expect("apply");
        assert_eq!(s.read_offsets().expect("read"), o);
    }
}
