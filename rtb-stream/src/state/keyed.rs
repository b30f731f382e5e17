//! [`KeyedStore`]: typed keyed state with dirty tracking and event-time TTL.

use std::collections::BTreeMap;
use std::hash::Hash;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{StateScope, WriteBatch};
use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};
use crate::time::Timestamp;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot<V> {
    value: V,
    expires_at: Option<Timestamp>,
}

/// A typed map from `K` to `V`, restored from its backend when opened and written back incrementally by
/// [`KeyedStore::flush_into`]. Entries may carry an event-time expiry; [`KeyedStore::expire`] removes (and
/// returns) those whose expiry is at or below a watermark.
#[derive(Debug)]
pub struct KeyedStore<K, V> {
    name: String,
    prefix: Vec<u8>,
    map: FxHashMap<K, Slot<V>>,
    dirty: FxHashSet<K>,
    expiry: BTreeMap<Timestamp, Vec<K>>,
}

impl<K, V> KeyedStore<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Opens store `name` in `scope`, loading every entry the backend holds for it.
    pub fn open(scope: &StateScope, name: &str) -> Result<Self> {
        let mut prefix = scope.store_prefix(name);
        prefix.push(0);
        let mut store = Self {
            name: name.to_string(),
            prefix,
            map: FxHashMap::default(),
            dirty: FxHashSet::default(),
            expiry: BTreeMap::new(),
        };
        for (k, v) in scope.backend().scan_prefix(&store.prefix)? {
            let key: K = Bincode.decode(&k[store.prefix.len()..]).map_err(|r| store.decode_err(r))?;
            let slot: Slot<V> = Bincode.decode(&v).map_err(|r| store.decode_err(r))?;
            if let Some(t) = slot.expires_at {
                store.expiry.entry(t).or_default().push(key.clone());
            }
            store.map.insert(key, slot);
        }
        Ok(store)
    }

    /// A store that lives only in memory (no backend) — for operators used outside a runtime.
    pub fn transient(name: &str) -> Self {
        Self {
            name: name.to_string(),
            prefix: Vec::new(),
            map: FxHashMap::default(),
            dirty: FxHashSet::default(),
            expiry: BTreeMap::new(),
        }
    }

    fn decode_err(&self, reason: String) -> Error {
        Error::StateDecode { store: self.name.clone(), reason }
    }

    fn touch(&mut self, key: &K) {
        if !self.dirty.contains(key) {
            self.dirty.insert(key.clone());
        }
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Reads an entry.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|s| &s.value)
    }

    /// Mutable access; marks the entry changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        if self.map.contains_key(key) {
            self.touch(key);
        }
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Mutable access **without** marking the entry changed: one hash lookup instead of three, for hot
    /// paths that know whether the entry was already marked since the last flush (e.g. by keeping a flush
    /// epoch inside the value). A caller that changes the value must call [`Self::mark_changed`] before the
    /// next [`Self::flush_into`], or the change is not written.
    pub fn get_mut_untracked(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Marks `key` changed, so the next [`Self::flush_into`] writes it (or deletes it if absent).
    pub fn mark_changed(&mut self, key: &K) {
        self.touch(key);
    }

    /// Mutable access to the entry, created with `init` if absent; marks it changed.
    pub fn get_or_insert_with(&mut self, key: K, init: impl FnOnce() -> V) -> &mut V {
        self.touch(&key);
        &mut self.map.entry(key).or_insert_with(|| Slot { value: init(), expires_at: None }).value
    }

    /// Inserts or replaces an entry without expiry; returns the old value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.touch(&key);
        self.map.insert(key, Slot { value, expires_at: None }).map(|s| s.value)
    }

    /// Inserts or replaces an entry that [`Self::expire`] removes once the watermark reaches `expires_at`.
    pub fn insert_with_expiry(&mut self, key: K, value: V, expires_at: Timestamp) -> Option<V> {
        self.touch(&key);
        self.expiry.entry(expires_at).or_default().push(key.clone());
        self.map.insert(key, Slot { value, expires_at: Some(expires_at) }).map(|s| s.value)
    }

    /// Changes (or sets) the expiry of an existing entry. Returns false if the key is absent.
    pub fn set_expiry(&mut self, key: &K, expires_at: Timestamp) -> bool {
        let Some(slot) = self.map.get_mut(key) else { return false };
        slot.expires_at = Some(expires_at);
        self.expiry.entry(expires_at).or_default().push(key.clone());
        self.touch(key);
        true
    }

    /// The expiry of an entry.
    pub fn expiry_of(&self, key: &K) -> Option<Timestamp> {
        self.map.get(key).and_then(|s| s.expires_at)
    }

    /// Removes an entry.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let old = self.map.remove(key).map(|s| s.value);
        if old.is_some() {
            self.touch(key);
        }
        old
    }

    /// Removes and returns, in expiry order, every entry whose expiry is `<= watermark`.
    pub fn expire(&mut self, watermark: Timestamp) -> Vec<(K, V)> {
        let mut out = Vec::new();
        while let Some(entry) = self.expiry.first_entry() {
            if *entry.key() > watermark {
                break;
            }
            let (t, keys) = entry.remove_entry();
            for k in keys {
                // The index is lazy: skip keys whose expiry changed or which were removed since.
                if self.map.get(&k).and_then(|s| s.expires_at) == Some(t) {
                    if let Some(slot) = self.map.remove(&k) {
                        self.touch(&k);
                        out.push((k, slot.value));
                    }
                }
            }
        }
        out
    }

    /// The earliest pending expiry, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry.keys().next().copied()
    }

    /// Iterates over live entries (arbitrary order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, s)| (k, &s.value))
    }

    /// Number of entries changed since the last flush.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Writes every entry changed since the last flush into `batch` (puts and deletes) and clears the
    /// dirty set. The caller commits the batch atomically with the source offsets.
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        for key in self.dirty.drain() {
            let mut k = self.prefix.clone();
            Bincode
                .encode_into(&key, &mut k)
                .map_err(|reason| Error::StateEncode { store: self.name.clone(), reason })?;
            match self.map.get(&key) {
                Some(slot) => {
                    let v = Bincode
                        .encode(slot)
                        .map_err(|reason| Error::StateEncode { store: self.name.clone(), reason })?;
                    batch.put(k, v);
                }
                None => batch.delete(k),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(scope: &StateScope, s: &mut KeyedStore<String, u64>) {
        let mut b = WriteBatch::new();
        s.flush_into(&mut b).expect("flush");
        scope.backend().apply(b).expect("apply");
    }

    #[test]
    fn survives_reopen_only_after_flush() {
        let scope = StateScope::in_memory().child("t");
        let mut s: KeyedStore<String, u64> = scope.keyed("counts").expect("open");
        *s.get_or_insert_with("a".into(), || 0) += 5;
        s.insert("b".into(), 1);
        let reopened: KeyedStore<String, u64> = scope.keyed("counts").expect("open");
        assert!(reopened.is_empty(), "nothing committed yet");
        commit(&scope, &mut s);
        s.remove(&"b".into());
        commit(&scope, &mut s);
        let reopened: KeyedStore<String, u64> = scope.keyed("counts").expect("open");
        assert_eq!(reopened.get(&"a".into()), Some(&5));
        assert_eq!(reopened.get(&"b".into()), None);
        assert_eq!(reopened.len(), 1);
    }

    #[test]
    fn expiry_at_exactly_the_watermark_and_rescheduling() {
        let scope = StateScope::in_memory();
        let mut s: KeyedStore<String, u64> = scope.keyed("ttl").expect("open");
        s.insert_with_expiry("x".into(), 1, 100);
        s.insert_with_expiry("y".into(), 2, 200);
        assert!(s.expire(99).is_empty());
        assert_eq!(s.expire(100), vec![("x".to_string(), 1)], "expiry == watermark expires");
        assert!(s.set_expiry(&"y".into(), 300));
        assert!(s.expire(250).is_empty(), "the old index entry is stale");
        assert_eq!(s.next_expiry(), Some(300));
        commit(&scope, &mut s);
        let mut r: KeyedStore<String, u64> = scope.keyed("ttl").expect("open");
        assert_eq!(r.expiry_of(&"y".into()), Some(300));
        assert_eq!(r.expire(300), vec![("y".to_string(), 2)]);
    }

    #[test]
    fn stores_in_one_scope_are_separate() {
        let scope = StateScope::in_memory();
        let mut a: KeyedStore<String, u64> = scope.keyed("a").expect("open");
        a.insert("k".into(), 1);
        commit(&scope, &mut a);
        let b: KeyedStore<String, u64> = scope.keyed("ab").expect("open");
        assert!(b.is_empty());
    }
}
