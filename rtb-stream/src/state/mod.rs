//! Keyed state: a byte-level [`StoreBackend`] (in-memory or sled) under typed stores.
//!
//! Operators keep their working state in memory ([`KeyedStore`] is a hash map with a dirty set) and the
//! runtime commits it: every store writes its changes since the last commit into one [`WriteBatch`], the
//! runtime adds the source offsets those changes came from, and the backend applies the batch
//! **atomically**. After a crash the backend holds the state and offsets of the last commit, and both agree:
//! replay starts exactly after the last record whose effect is in the state.
//!
//! ## Key layout
//!
//! Keys are built from self-delimiting segments, so no key of one scope or store is ever a prefix of, or
//! inside the range of, another's (a keyed store `a` and a child scope `a` never see each other's keys):
//!
//! - scope root: `varint(len) ‖ prefix` (from [`StateScope::new`]);
//! - child scope: `‖ 0x02 ‖ varint(len) ‖ name`; internal runtime data (offsets, metadata):
//!   `‖ 0x03 ‖ varint(len) ‖ name`, a tag the public API never produces;
//! - store: `‖ 0x01 ‖ varint(len) ‖ name` ([`StateScope::store_prefix`]); a single value
//!   ([`StateScope::write_value`], [`ValueStore`]) lives at exactly that key, a [`KeyedStore`] writes pages
//!   at `store prefix ‖ 0x00 ‖ page id (u32, big endian)`, each holding many entries (see [`KeyedStore`]);
//!   an [`ExpiringIdSet`] writes chunks at `store prefix ‖ 0x01 ‖ expiry ‖ flush sequence`.

mod id_set;
mod journal;
mod keyed;
mod memory;
mod sled_backend;
mod value;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};

use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};

pub use id_set::ExpiringIdSet;
pub use keyed::{KeyedOptions, KeyedStore};
pub use memory::MemoryBackend;
pub use journal::{JournalBackend, JournalOptions};
pub use sled_backend::SledBackend;
pub use value::ValueStore;

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
    /// Appends every operation of `other`, after this batch's own.
    pub fn extend(&mut self, other: WriteBatch) {
        if self.ops.is_empty() {
            self.ops = other.ops;
        } else {
            self.ops.extend(other.ops);
        }
    }
    /// Drops every operation after the first `len` (used to undo a half-written flush).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.ops.truncate(len);
    }
}

/// A byte-level ordered key-value store with atomic batches. Implementations: [`MemoryBackend`],
/// [`JournalBackend`] (the durable default: state in memory, a journal of batches on disk),
/// [`SledBackend`].
pub trait StoreBackend: Send + Sync + std::fmt::Debug {
    /// Reads one key.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All entries whose key starts with `prefix`, in key order. Not necessarily one consistent snapshot
    /// while another thread applies batches to the same keys (sled reads key by key); stores are opened by
    /// the one task that owns their scope, before it writes.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies every operation of `batch` atomically: after a crash either all of them are visible or none.
    fn apply(&self, batch: WriteBatch) -> Result<()>;
    /// Makes everything applied so far durable (no-op for memory).
    fn flush(&self) -> Result<()>;

    /// Brings the committed state of each task `(group, partition)` (its scope, see
    /// [`crate::runtime::task_scope`]) up to date with what other processes committed for it since this
    /// backend read it: called before a task starts on a partition that a consumer group moved to this
    /// process, and to watch tasks that other processes run. A backend that one process owns (memory, the
    /// journal, sled) has nothing to re-read: the default does nothing.
    fn refresh_tasks(&self, tasks: &[(String, u32)]) -> Result<()> {
        let _ = tasks;
        Ok(())
    }
}

/// Committed read positions: `(topic, partition) → next offset to read`.
pub type OffsetMap = BTreeMap<(String, u32), u64>;

/// A namespace inside a backend: one per task (consumer group × partition), so tasks never share keys.
#[derive(Debug, Clone)]
pub struct StateScope {
    backend: Arc<dyn StoreBackend>,
    prefix: Vec<u8>,
}

/// Segment tags of the key layout (see the module docs).
const TAG_STORE: u8 = 0x01;
const TAG_SCOPE: u8 = 0x02;
const TAG_SYSTEM: u8 = 0x03;

const OFFSETS: &str = "offsets";
const META: &str = "meta";

impl StateScope {
    /// A scope over `backend` whose keys all start with (an encoding of) `prefix`. Scopes with different
    /// prefixes never share keys, even when one prefix is a prefix of the other (`g/1`, `g/10`).
    pub fn new(backend: Arc<dyn StoreBackend>, prefix: impl Into<Vec<u8>>) -> Self {
        let raw: Vec<u8> = prefix.into();
        let mut encoded = Vec::with_capacity(raw.len() + 2);
        push_segment(&mut encoded, &raw);
        Self { backend, prefix: encoded }
    }

    /// A fresh in-memory scope (tests, benches, batch jobs).
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryBackend::new()), Vec::new())
    }

    /// A nested scope named `name`; its keys never collide with this scope's stores or other children.
    pub fn child(&self, name: &str) -> Self {
        self.tagged_child(TAG_SCOPE, name)
    }

    fn tagged_child(&self, tag: u8, name: &str) -> Self {
        let mut prefix = self.prefix.clone();
        prefix.push(tag);
        push_segment(&mut prefix, name.as_bytes());
        Self { backend: Arc::clone(&self.backend), prefix }
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn StoreBackend> {
        &self.backend
    }

    /// The key prefix of store `name` in this scope (also the exact key of a single value named `name`).
    pub fn store_prefix(&self, name: &str) -> Vec<u8> {
        let mut p = Vec::with_capacity(self.prefix.len() + name.len() + 3);
        p.extend_from_slice(&self.prefix);
        p.push(TAG_STORE);
        push_segment(&mut p, name.as_bytes());
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

    /// Opens (and restores) the single typed value `name`, starting from `V::default()` if none was
    /// committed.
    pub fn value<V>(&self, name: &str) -> Result<ValueStore<V>>
    where
        V: Serialize + DeserializeOwned + Default,
    {
        ValueStore::open(self, name)
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
        let bytes =
            Bincode.encode(value).map_err(|reason| Error::StateEncode { store: name.to_string(), reason })?;
        batch.put(self.store_prefix(name), bytes);
        Ok(())
    }

    /// The offsets committed with this scope's state.
    pub fn read_offsets(&self) -> Result<OffsetMap> {
        Ok(self
            .tagged_child(TAG_SYSTEM, OFFSETS)
            .read_value::<Vec<(String, u32, u64)>>(OFFSETS)?
            .unwrap_or_default()
            .into_iter()
            .map(|(t, p, o)| ((t, p), o))
            .collect())
    }

    /// Adds the offsets to `batch`, so they commit atomically with the state in it.
    pub fn write_offsets(&self, offsets: &OffsetMap, batch: &mut WriteBatch) -> Result<()> {
        let flat: Vec<(String, u32, u64)> = offsets.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect();
        self.tagged_child(TAG_SYSTEM, OFFSETS).write_value(OFFSETS, &flat, batch)
    }

    /// Reads the runtime's metadata value `name` (e.g. the committed watermark).
    pub fn read_meta<V: Serialize + DeserializeOwned>(&self, name: &str) -> Result<Option<V>> {
        self.tagged_child(TAG_SYSTEM, META).read_value(name)
    }

    /// Adds the runtime metadata value `name` to `batch`.
    pub fn write_meta<V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        value: &V,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        self.tagged_child(TAG_SYSTEM, META).write_value(name, value, batch)
    }
}

/// Appends `varint(len) ‖ bytes` (LEB128 length), a self-delimiting segment of any length.
fn push_segment(buf: &mut Vec<u8>, bytes: &[u8]) {
    let mut len = bytes.len();
    loop {
        // Truncation intended: the low seven bits of `len`.
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            buf.push(low);
            break;
        }
        buf.push(low | 0x80);
    }
    buf.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit_keyed(scope: &StateScope, store: &mut KeyedStore<String, u64>) {
        let mut b = WriteBatch::new();
        store.flush_into(&mut b).expect("flush");
        scope.backend().apply(b).expect("apply");
    }

    #[test]
    fn child_scopes_do_not_collide() {
        let s = StateScope::in_memory();
        // "ab" + "c" must not equal "a" + "bc".
        assert_ne!(s.child("ab").store_prefix("c"), s.child("a").store_prefix("bc"));
    }

    #[test]
    fn keyed_store_and_child_scope_of_the_same_name_are_separate() {
        // Regression: with `prefix ‖ len ‖ name ‖ 0x00 ‖ key`, the pages of keyed store `a` covered every
        // key of `child("a")`, so opening `a` failed to decode (or silently read foreign entries).
        let scope = StateScope::in_memory();
        let mut inner: KeyedStore<String, u64> = scope.child("a").keyed("x").expect("open");
        inner.insert("k".into(), 1);
        commit_keyed(&scope, &mut inner);
        let mut outer: KeyedStore<String, u64> = scope.keyed("a").expect("open outer");
        assert!(outer.is_empty());
        outer.insert("o".into(), 2);
        commit_keyed(&scope, &mut outer);
        let inner: KeyedStore<String, u64> = scope.child("a").keyed("x").expect("reopen");
        assert_eq!(inner.len(), 1);
        assert_eq!(inner.get(&"k".into()), Some(&1));
    }

    #[test]
    fn scope_prefixes_that_extend_each_other_are_separate() {
        let backend: Arc<dyn StoreBackend> = Arc::new(MemoryBackend::new());
        let g1 = StateScope::new(Arc::clone(&backend), "g/1");
        let g10 = StateScope::new(Arc::clone(&backend), "g/10");
        let mut a: KeyedStore<String, u64> = g1.keyed("s").expect("open");
        a.insert("k".into(), 1);
        commit_keyed(&g1, &mut a);
        let mut o = OffsetMap::new();
        o.insert(("t".into(), 0), 9);
        let mut b = WriteBatch::new();
        g1.write_offsets(&o, &mut b).expect("offsets");
        backend.apply(b).expect("apply");
        assert!(g10.keyed::<String, u64>("s").expect("open").is_empty());
        assert!(g10.read_offsets().expect("read").is_empty());
        assert!(backend.scan_prefix(&g10.store_prefix("s")).expect("scan").is_empty());
    }

    #[test]
    fn user_stores_cannot_overwrite_offsets_or_meta() {
        let s = StateScope::in_memory();
        let mut b = WriteBatch::new();
        let mut o = OffsetMap::new();
        o.insert(("t".into(), 1), 5);
        s.write_offsets(&o, &mut b).expect("offsets");
        s.write_meta("watermark", &77_i64, &mut b).expect("meta");
        // Values whose names look like the runtime's own must land elsewhere.
        for name in ["offsets", "__offsets", "meta", "__meta", "watermark"] {
            s.write_value(name, &"user".to_string(), &mut b).expect("value");
            s.child(name).write_value("watermark", &"user".to_string(), &mut b).expect("value");
        }
        s.backend().apply(b).expect("apply");
        assert_eq!(s.read_offsets().expect("read"), o);
        assert_eq!(s.read_meta::<i64>("watermark").expect("read"), Some(77));
    }

    #[test]
    fn long_names_are_not_truncated() {
        let s = StateScope::in_memory();
        let a = "x".repeat(70_000);
        let b = format!("{a}y");
        assert_ne!(s.store_prefix(&a), s.store_prefix(&b));
        assert_ne!(s.child(&a).store_prefix("v"), s.child(&b).store_prefix("v"));
    }

    #[test]
    fn segment_lengths_are_leb128() {
        let mut buf = Vec::new();
        push_segment(&mut buf, &[7; 300]);
        assert_eq!(&buf[..2], &[0xac, 0x02], "300 = 0b10_0101100");
        assert_eq!(buf.len(), 302);
        let mut empty = Vec::new();
        push_segment(&mut empty, b"");
        assert_eq!(empty, vec![0]);
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
