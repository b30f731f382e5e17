//! [`ExpiringIdSet`]: a compact, persisted set of 64-bit ids (fingerprints) that expire by event time.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use super::{StateScope, WriteBatch};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Tag after the store prefix that starts every chunk key.
const CHUNK_TAG: u8 = 0x01;

/// The ids that share one expiry, and the backend chunks that hold the flushed part of them.
#[derive(Debug, Default)]
struct Bucket {
    ids: Vec<u64>,
    /// `ids[..flushed]` are in the backend, in the chunks numbered `chunks`.
    flushed: usize,
    chunks: Vec<u64>,
}

/// A set of 64-bit ids, each remembered until the watermark reaches its expiry — e.g. "which events
/// were counted" for as long as a redelivery could still change a result.
///
/// Built for many small entries that are inserted once and dropped in bulk, unlike [`super::KeyedStore`]
/// (a hash map whose pages are rewritten whole when one entry changes, with an expiry index per key):
///
/// - memory: one hash-set slot and one vector slot per id (about 20 bytes), ids grouped by expiry;
/// - [`Self::flush_into`] appends the ids inserted since the last flush as one chunk per expiry
///   (`store prefix ‖ 0x01 ‖ expiry ‖ flush sequence` → the ids, 8 bytes each), so a commit writes
///   only what is new;
/// - [`Self::expire`] drops every expiry group at or below the watermark at once, and the next flush
///   deletes their chunks.
///
/// Callers store fingerprints: two different ids with the same 64-bit fingerprint are one entry (with
/// a good hash, about n²/2⁶⁵ for n live ids: 3·10⁻⁸ for a million).
#[derive(Debug)]
pub struct ExpiringIdSet {
    name: String,
    chunk_prefix: Vec<u8>,
    persistent: bool,
    ids: FxHashSet<u64>,
    buckets: BTreeMap<Timestamp, Bucket>,
    /// Expiries with ids not flushed yet (each listed once).
    pending: Vec<Timestamp>,
    /// Chunks of expired buckets, to delete at the next flush.
    deleted: Vec<(Timestamp, u64)>,
    next_chunk: u64,
}

fn encode_ts(t: Timestamp) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_ts(b: [u8; 8]) -> Timestamp {
    (u64::from_be_bytes(b) ^ (1 << 63)) as Timestamp
}

impl ExpiringIdSet {
    /// Opens set `name` in `scope`, loading every chunk the backend holds for it.
    pub fn open(scope: &StateScope, name: &str) -> Result<Self> {
        let mut chunk_prefix = scope.store_prefix(name);
        chunk_prefix.push(CHUNK_TAG);
        let mut set = Self::empty(name, chunk_prefix, true);
        for (k, v) in scope.backend().scan_prefix(&set.chunk_prefix)? {
            let rest = &k[set.chunk_prefix.len()..];
            let (Ok(t), Ok(seq)) = (
                <[u8; 8]>::try_from(rest.get(..8).unwrap_or_default()),
                <[u8; 8]>::try_from(rest.get(8..).unwrap_or_default()),
            ) else {
                return Err(decode_err(name, format!("malformed chunk key {k:02x?}")));
            };
            if v.len() % 8 != 0 {
                return Err(decode_err(name, format!("chunk of {} bytes (not a multiple of 8)", v.len())));
            }
            let (expires_at, seq) = (decode_ts(t), u64::from_be_bytes(seq));
            set.next_chunk = set.next_chunk.max(seq.saturating_add(1));
            let bucket = set.buckets.entry(expires_at).or_default();
            for id in v.chunks_exact(8) {
                // Infallible: chunks_exact yields 8 bytes.
                let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
                if set.ids.insert(id) {
                    bucket.ids.push(id);
                }
            }
            bucket.flushed = bucket.ids.len();
            bucket.chunks.push(seq);
        }
        Ok(set)
    }

    /// A set that lives only in memory (no backend): [`Self::flush_into`] writes nothing for it.
    pub fn transient(name: &str) -> Self {
        Self::empty(name, Vec::new(), false)
    }

    fn empty(name: &str, chunk_prefix: Vec<u8>, persistent: bool) -> Self {
        Self {
            name: name.to_string(),
            chunk_prefix,
            persistent,
            ids: FxHashSet::default(),
            buckets: BTreeMap::new(),
            pending: Vec::new(),
            deleted: Vec::new(),
            next_chunk: 0,
        }
    }

    /// The set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is held.
    pub fn contains(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Adds `id`, to be dropped once the watermark reaches `expires_at`. Returns false (and keeps the
    /// first expiry) when `id` is already held.
    pub fn insert(&mut self, id: u64, expires_at: Timestamp) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        let bucket = self.buckets.entry(expires_at).or_default();
        if bucket.flushed == bucket.ids.len() {
            self.pending.push(expires_at);
        }
        bucket.ids.push(id);
        true
    }

    /// Drops every id whose expiry is `<= watermark`; returns how many.
    pub fn expire(&mut self, watermark: Timestamp) -> usize {
        let mut dropped = 0;
        while let Some(first) = self.buckets.first_entry() {
            if *first.key() > watermark {
                break;
            }
            let (expires_at, bucket) = first.remove_entry();
            for id in &bucket.ids {
                self.ids.remove(id);
            }
            dropped += bucket.ids.len();
            if self.persistent {
                self.deleted.extend(bucket.chunks.iter().map(|&seq| (expires_at, seq)));
            }
        }
        if dropped > 0 && self.ids.capacity() > 4 * self.ids.len().max(1024) {
            self.ids.shrink_to(2 * self.ids.len());
        }
        dropped
    }

    /// The earliest expiry of an id held, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.buckets.keys().next().copied()
    }

    /// Writes the changes since the last flush into `batch`: one new chunk per expiry that got ids, and
    /// deletes of the chunks of expired ids. The caller commits the batch atomically with the source
    /// offsets; after it fails to apply one, reopen the set from the backend.
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        if !self.persistent {
            self.pending.clear();
            for bucket in self.buckets.values_mut() {
                bucket.flushed = bucket.ids.len();
            }
            return Ok(());
        }
        for (expires_at, seq) in self.deleted.drain(..) {
            batch.delete(chunk_key(&self.chunk_prefix, expires_at, seq));
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let seq = self.next_chunk;
        self.next_chunk = self.next_chunk.checked_add(1).ok_or_else(|| Error::StateEncode {
            store: self.name.clone(),
            reason: "chunk sequence exhausted".to_string(),
        })?;
        for expires_at in self.pending.drain(..) {
            // Expired before this flush: nothing of it was written, nothing to write.
            let Some(bucket) = self.buckets.get_mut(&expires_at) else { continue };
            let new = &bucket.ids[bucket.flushed..];
            if new.is_empty() {
                continue;
            }
            let mut value = Vec::with_capacity(new.len() * 8);
            for id in new {
                value.extend_from_slice(&id.to_le_bytes());
            }
            batch.put(chunk_key(&self.chunk_prefix, expires_at, seq), value);
            bucket.flushed = bucket.ids.len();
            bucket.chunks.push(seq);
        }
        Ok(())
    }
}

fn chunk_key(prefix: &[u8], expires_at: Timestamp, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&encode_ts(expires_at));
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn decode_err(store: &str, reason: String) -> Error {
    Error::StateDecode { store: store.to_string(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(scope: &StateScope, set: &mut ExpiringIdSet) -> ExpiringIdSet {
        let mut batch = WriteBatch::new();
        set.flush_into(&mut batch).unwrap();
        scope.backend().apply(batch).unwrap();
        ExpiringIdSet::open(scope, set.name()).unwrap()
    }

    #[test]
    fn ids_are_held_until_their_expiry_and_dropped_in_bulk() {
        let mut s = ExpiringIdSet::transient("t");
        assert!(s.insert(1, 100));
        assert!(s.insert(2, 100));
        assert!(s.insert(3, 200));
        assert!(!s.insert(1, 300), "a held id is not inserted again");
        assert_eq!(s.len(), 3);
        assert_eq!(s.next_expiry(), Some(100));
        assert_eq!(s.expire(99), 0);
        assert_eq!(s.expire(100), 2);
        assert!(!s.contains(1) && !s.contains(2) && s.contains(3));
        assert!(s.insert(1, 300), "an expired id can be inserted again");
        assert_eq!(s.expire(i64::MAX), 2);
        assert!(s.is_empty());
    }

    #[test]
    fn a_flush_writes_only_new_ids_and_reopen_restores_them() {
        let scope = StateScope::in_memory();
        let mut s = ExpiringIdSet::open(&scope, "seen").unwrap();
        s.insert(1, 100);
        s.insert(2, 200);
        let mut s = reopen(&scope, &mut s);
        assert_eq!(s.len(), 2);
        s.insert(3, 100);
        let mut batch = WriteBatch::new();
        s.flush_into(&mut batch).unwrap();
        assert_eq!(batch.len(), 1, "only the expiry that got an id is written");
        assert_eq!(batch.ops()[0].1.as_ref().map(Vec::len), Some(8), "and only the new id");
        scope.backend().apply(batch).unwrap();
        let mut empty = WriteBatch::new();
        s.flush_into(&mut empty).unwrap();
        assert!(empty.is_empty(), "nothing changed, nothing written");
        let mut s = ExpiringIdSet::open(&scope, "seen").unwrap();
        assert!(s.contains(1) && s.contains(2) && s.contains(3));
        assert!(!s.insert(3, 100));
        // Expiry deletes the chunks of the dropped ids: after reopening they are gone.
        assert_eq!(s.expire(150), 2);
        let s = reopen(&scope, &mut s);
        assert_eq!(s.len(), 1);
        assert!(s.contains(2) && !s.contains(1) && !s.contains(3));
        assert_eq!(scope.backend().scan_prefix(&scope.store_prefix("seen")).unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_chunk_is_a_decode_error() {
        let scope = StateScope::in_memory();
        let mut key = scope.store_prefix("seen");
        key.push(CHUNK_TAG);
        key.extend_from_slice(&encode_ts(5));
        key.extend_from_slice(&0_u64.to_be_bytes());
        let mut batch = WriteBatch::new();
        batch.put(key, vec![1, 2, 3]);
        scope.backend().apply(batch).unwrap();
        let err = ExpiringIdSet::open(&scope, "seen").unwrap_err();
        assert!(matches!(err, Error::StateDecode { .. }), "{err}");
    }
}
