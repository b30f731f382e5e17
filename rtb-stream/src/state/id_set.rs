//! [`ExpiringIdSet`]: a compact, persisted set of 64-bit ids (fingerprints) that expire by event time.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;

use super::{StateScope, WriteBatch};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Tag after the store prefix that starts every chunk key.
const CHUNK_TAG: u8 = 0x01;

/// The ids that share one expiry.
#[derive(Debug, Default)]
struct Bucket {
    ids: Vec<u64>,
    /// `ids[..flushed]` are in the backend.
    flushed: usize,
}

/// A set of 64-bit ids, each remembered until the watermark reaches its expiry — e.g. "which events
/// were counted" for as long as a redelivery could still change a result.
///
/// Built for many small entries that are inserted once and dropped in bulk, unlike [`super::KeyedStore`]
/// (a hash map whose pages are rewritten whole when one entry changes, with an expiry index per key):
///
/// - memory: one hash-set slot and one vector slot per id (about 20 bytes), ids grouped by expiry;
/// - [`Self::flush_into`] appends the ids inserted since the last flush as **one** chunk
///   (`store prefix ‖ 0x01 ‖ latest expiry in it ‖ flush sequence` → groups of `expiry, count, ids`),
///   so a commit writes one key holding only what is new, however many expiries it spans;
/// - [`Self::expire`] drops every expiry group at or below the watermark at once; a chunk is deleted
///   (at the next flush) once the watermark passes the latest expiry in it. Until then a chunk may
///   still hold ids already dropped from memory; reopening drops them again at the first watermark.
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
    /// Chunks in the backend: (latest expiry in it, flush sequence).
    chunks: BTreeMap<Timestamp, Vec<u64>>,
    /// Chunks whose ids have all expired, to delete at the next flush.
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
            let (latest, seq) = (decode_ts(t), u64::from_be_bytes(seq));
            let mut rest = v.as_slice();
            while !rest.is_empty() {
                let (Some(expiry), Some(count)) = (rest.get(..8), rest.get(8..12)) else {
                    return Err(decode_err(name, format!("chunk {seq}: truncated group header")));
                };
                // Infallible: the slices have 8 and 4 bytes.
                let expires_at = i64::from_le_bytes(expiry.try_into().unwrap_or_default());
                let count = u32::from_le_bytes(count.try_into().unwrap_or_default()) as usize;
                let Some(ids) = count.checked_mul(8).and_then(|n| rest.get(12..12 + n)) else {
                    return Err(decode_err(name, format!("chunk {seq}: group of {count} ids is truncated")));
                };
                if expires_at > latest {
                    return Err(decode_err(name, format!("chunk {seq}: expiry {expires_at} after its key's {latest}")));
                }
                let bucket = set.buckets.entry(expires_at).or_default();
                for id in ids.chunks_exact(8) {
                    // Infallible: chunks_exact yields 8 bytes.
                    let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
                    if set.ids.insert(id) {
                        bucket.ids.push(id);
                    }
                }
                bucket.flushed = bucket.ids.len();
                rest = &rest[12 + ids.len()..];
            }
            set.next_chunk = set.next_chunk.max(seq.saturating_add(1));
            set.chunks.entry(latest).or_default().push(seq);
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
            chunks: BTreeMap::new(),
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
            for id in &first.remove().ids {
                self.ids.remove(id);
                dropped += 1;
            }
        }
        while let Some(first) = self.chunks.first_entry() {
            if *first.key() > watermark {
                break;
            }
            let (latest, seqs) = first.remove_entry();
            self.deleted.extend(seqs.into_iter().map(|seq| (latest, seq)));
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

    /// Writes the changes since the last flush into `batch`: one new chunk with the ids inserted since
    /// (if any are still held), and deletes of the chunks whose ids have all expired. The caller commits the batch atomically with the source
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
        let mut value = Vec::new();
        let mut latest = None;
        for expires_at in self.pending.drain(..) {
            // Expired before this flush: nothing of it was written, nothing to write.
            let Some(bucket) = self.buckets.get_mut(&expires_at) else { continue };
            let new = &bucket.ids[bucket.flushed..];
            if new.is_empty() {
                continue;
            }
            let Ok(count) = u32::try_from(new.len()) else {
                return Err(Error::StateEncode { store: self.name.clone(), reason: format!("{} ids in one flush", new.len()) });
            };
            value.reserve(12 + new.len() * 8);
            value.extend_from_slice(&expires_at.to_le_bytes());
            value.extend_from_slice(&count.to_le_bytes());
            for id in new {
                value.extend_from_slice(&id.to_le_bytes());
            }
            bucket.flushed = bucket.ids.len();
            latest = latest.max(Some(expires_at));
        }
        if let Some(latest) = latest {
            let seq = self.next_chunk;
            self.next_chunk = seq.saturating_add(1);
            batch.put(chunk_key(&self.chunk_prefix, latest, seq), value);
            self.chunks.entry(latest).or_default().push(seq);
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
        set.flush_into(&mut batch).expect("flush");
        scope.backend().apply(batch).expect("apply");
        ExpiringIdSet::open(scope, set.name()).expect("open")
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
        let mut s = ExpiringIdSet::open(&scope, "seen").expect("open");
        s.insert(1, 100);
        s.insert(2, 200);
        let mut s = reopen(&scope, &mut s);
        assert_eq!(s.len(), 2);
        s.insert(3, 100);
        s.insert(4, 300);
        let mut batch = WriteBatch::new();
        s.flush_into(&mut batch).expect("flush");
        assert_eq!(batch.len(), 1, "one chunk per flush, whatever expiries it spans");
        assert_eq!(batch.ops()[0].1.as_ref().map(Vec::len), Some(2 * (12 + 8)), "holding only the new ids");
        scope.backend().apply(batch).expect("apply");
        let mut empty = WriteBatch::new();
        s.flush_into(&mut empty).expect("flush");
        assert!(empty.is_empty(), "nothing changed, nothing written");
        let mut s = ExpiringIdSet::open(&scope, "seen").expect("open");
        assert!(s.contains(1) && s.contains(2) && s.contains(3) && s.contains(4));
        assert!(!s.insert(3, 100));
        let chunks = |scope: &StateScope| scope.backend().scan_prefix(&scope.store_prefix("seen")).expect("scan").len();
        assert_eq!(chunks(&scope), 2);
        // A chunk goes once every id in it has expired: the first (ids 1 and 2, up to 200) at 200.
        assert_eq!(s.expire(150), 2);
        let mut s = reopen(&scope, &mut s);
        assert_eq!(chunks(&scope), 2, "the first chunk still holds id 2");
        assert_eq!(s.expire(150), 2, "ids 1 and 3, reloaded from chunks still held, are dropped again");
        assert!(s.contains(2) && !s.contains(1) && !s.contains(3) && s.contains(4));
        assert_eq!(s.expire(200), 1);
        let mut s = reopen(&scope, &mut s);
        assert_eq!(chunks(&scope), 1, "the first chunk is deleted");
        assert_eq!(s.len(), 2, "the second chunk brings back id 3 (expired) with id 4");
        assert_eq!(s.expire(200), 1, "id 3 is dropped again at the first watermark");
        assert!(s.contains(4) && !s.contains(3));
        assert_eq!(s.expire(300), 1);
        let s = reopen(&scope, &mut s);
        assert!(s.is_empty());
        assert_eq!(chunks(&scope), 0);
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
        scope.backend().apply(batch).expect("apply");
        let err = ExpiringIdSet::open(&scope, "seen").expect_err("corrupt");
        assert!(matches!(err, Error::StateDecode { .. }), "{err}");
    }
}
