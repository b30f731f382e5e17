//! [`KeyedStore`]: typed keyed state with dirty tracking and event-time TTL, persisted in pages.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHashSet, FxHasher};
use serde::{de::DeserializeOwned, Serialize, Serializer};

use super::{StateScope, WriteBatch};
use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Tag after the store prefix that starts every page key (see the `state` module docs).
const PAGE_TAG: u8 = 0x00;

/// How a [`KeyedStore`] groups its entries into pages. The defaults suit small values (counters, short
/// records); every page is rewritten whole when one of its entries changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedOptions {
    /// At most this many entries per page on average; the page count doubles when the store outgrows it.
    pub max_page_entries: usize,
    /// Target encoded size of a page in bytes: stores of large values use fewer entries per page.
    pub target_page_bytes: usize,
}

impl Default for KeyedOptions {
    fn default() -> Self {
        Self { max_page_entries: 256, target_page_bytes: 16 * 1024 }
    }
}

/// One live entry. `touched` is the flush generation in which it last changed.
#[derive(Debug, Clone)]
struct Entry<V> {
    value: V,
    expires_at: Option<Timestamp>,
    touched: u32,
}

type Page<K, V> = FxHashMap<K, Entry<V>>;

/// What changed since the last flush: dirty pages (to write) and the number of changed keys.
#[derive(Debug)]
struct Dirty<K> {
    /// Entries with `touched == generation` changed since the last flush (never 0: loaded entries are 0).
    generation: u32,
    /// Dirty flag per page, and the dirty pages in the order they became dirty.
    page_flags: Vec<bool>,
    pages: Vec<u32>,
    /// Distinct keys changed (put or deleted) since the last flush.
    keys: usize,
    /// Keys removed since the last flush, so re-creating one does not count it twice.
    removed: FxHashSet<K>,
    /// Stored pages outside the current page range (their entries were moved), to delete.
    stale: Vec<u32>,
}

impl<K: Hash + Eq> Dirty<K> {
    fn new(pages: usize) -> Self {
        Self {
            generation: 1,
            page_flags: vec![false; pages],
            pages: Vec::new(),
            keys: 0,
            removed: FxHashSet::default(),
            stale: Vec::new(),
        }
    }

    fn mark_page(&mut self, page: usize) {
        if !self.page_flags[page] {
            self.page_flags[page] = true;
            // Page counts are bounded by `MAX_PAGES`, so the id fits.
            self.pages.push(page as u32);
        }
    }

    /// An existing entry changed.
    fn touch(&mut self, page: usize, touched: &mut u32) {
        if *touched != self.generation {
            *touched = self.generation;
            self.keys += 1;
            self.mark_page(page);
        }
    }

    /// A new entry (stamped with the current generation) was created.
    fn created(&mut self, page: usize, key: &K) {
        if self.removed.is_empty() || !self.removed.remove(key) {
            self.keys += 1;
        }
        self.mark_page(page);
    }

    /// An entry stamped `touched` was removed.
    fn removed(&mut self, page: usize, touched: u32, key: K) {
        if touched != self.generation {
            self.keys += 1;
        }
        self.removed.insert(key);
        self.mark_page(page);
    }

    /// Starts a new change set. Returns true when the generation wrapped and every entry's stamp must be
    /// reset to 0 (else an entry stamped 2³² flushes ago would look changed and its page would not be
    /// marked dirty).
    #[must_use]
    fn committed(&mut self) -> bool {
        for &p in &self.pages {
            self.page_flags[p as usize] = false;
        }
        self.pages.clear();
        self.stale.clear();
        self.removed.clear();
        self.keys = 0;
        match self.generation.checked_add(1) {
            Some(g) => {
                self.generation = g;
                false
            }
            None => {
                self.generation = 1;
                true
            }
        }
    }
}

/// Upper bound on the page count (page ids are `u32`).
const MAX_PAGES: usize = 1 << 31;

/// The page hash: FxHash of the key, re-mixed (splitmix64 finaliser) so that page bits are independent of
/// the bits the in-page hash map uses. Pages need not be stable across versions: a misplaced entry is
/// moved (and both pages rewritten) on open.
fn page_hash<K: Hash>(key: &K) -> u64 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    let mut z = h.finish();
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Serialises one page as a sequence of `(key, value, expires_at)` without copying it.
struct PageRef<'a, K, V>(&'a Page<K, V>);

impl<K: Serialize, V: Serialize> Serialize for PageRef<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, e)| (k, &e.value, e.expires_at)))
    }
}

/// A typed map from `K` to `V`, restored from its backend when opened and written back incrementally by
/// [`KeyedStore::flush_into`]. Entries may carry an event-time expiry; [`KeyedStore::expire`] removes (and
/// returns) those whose expiry is at or below a watermark.
///
/// All entries live in memory. For the backend they are grouped into pages by a hash of the key (about
/// [`KeyedOptions::max_page_entries`] per page; the page count doubles as the store grows), and a flush
/// rewrites each page holding a change. A page is one backend key, so a commit of `n` changed entries
/// costs at most `min(n, pages)` backend writes — for sled, whose per-key cost dominates, this is several
/// times faster than one key per entry when many keys change between commits.
#[derive(Debug)]
pub struct KeyedStore<K, V> {
    name: String,
    page_prefix: Vec<u8>,
    persistent: bool,
    options: KeyedOptions,
    /// A power-of-two number of pages; an entry lives in page `page_hash(key) & (pages.len() - 1)`.
    pages: Vec<Page<K, V>>,
    len: usize,
    dirty: Dirty<K>,
    /// Exact expiry index: every entry with an expiry is in the set of its timestamp, and nothing else.
    expiry: BTreeMap<Timestamp, FxHashSet<K>>,
    /// Encoded bytes per entry seen at the last open or flush (0: unknown), for page sizing.
    bytes_per_entry: usize,
}

impl<K, V> KeyedStore<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Opens store `name` in `scope`, loading every entry the backend holds for it.
    pub fn open(scope: &StateScope, name: &str) -> Result<Self> {
        Self::open_with(scope, name, KeyedOptions::default())
    }

    /// Opens store `name` with explicit page sizing. Options may differ between runs of the same store.
    pub fn open_with(scope: &StateScope, name: &str, options: KeyedOptions) -> Result<Self> {
        let mut page_prefix = scope.store_prefix(name);
        page_prefix.push(PAGE_TAG);
        let mut stored = Vec::new();
        let mut max_id = 0_u32;
        let (mut bytes, mut total) = (0_usize, 0_usize);
        for (k, v) in scope.backend().scan_prefix(&page_prefix)? {
            let id = <[u8; 4]>::try_from(&k[page_prefix.len()..])
                .map(u32::from_be_bytes)
                .map_err(|_| decode_err(name, format!("malformed page key {k:02x?}")))?;
            let entries: Vec<(K, V, Option<Timestamp>)> =
                Bincode.decode(&v).map_err(|r| decode_err(name, format!("page {id}: {r}")))?;
            bytes += v.len();
            total += entries.len();
            max_id = max_id.max(id);
            stored.push((id, entries));
        }
        // Enough pages for every stored id, but never more than entries: ids beyond that (a store that
        // shrank, or a corrupt id) are deleted at the next flush and their entries moved.
        let ids = (max_id as usize).saturating_add(1).checked_next_power_of_two().unwrap_or(MAX_PAGES);
        let page_count = ids.min(total.max(1).next_power_of_two()).min(MAX_PAGES);
        let mut store = Self::empty(name, page_prefix, true, options, page_count);
        for (id, entries) in stored {
            let in_range = (id as usize) < page_count;
            if !in_range {
                store.dirty.stale.push(id);
            } else if entries.is_empty() {
                store.dirty.mark_page(id as usize);
            }
            for (key, value, expires_at) in entries {
                let page = store.page_of(&key);
                if page != id as usize {
                    // Written under another page function or count: move it, rewrite both pages.
                    store.dirty.mark_page(page);
                    if in_range {
                        store.dirty.mark_page(id as usize);
                    }
                }
                if let Some(t) = expires_at {
                    store.expiry.entry(t).or_default().insert(key.clone());
                }
                let entry = Entry { value, expires_at, touched: 0 };
                if store.pages[page].insert(key, entry).is_some() {
                    return Err(decode_err(name, format!("a key is stored twice (page {id})")));
                }
                store.len += 1;
            }
        }
        store.bytes_per_entry = bytes.checked_div(store.len).unwrap_or(0);
        Ok(store)
    }

    /// A store that lives only in memory (no backend) — for operators used outside a runtime.
    /// [`Self::flush_into`] writes nothing for it.
    pub fn transient(name: &str) -> Self {
        Self::empty(name, Vec::new(), false, KeyedOptions::default(), 1)
    }

    fn empty(
        name: &str,
        page_prefix: Vec<u8>,
        persistent: bool,
        options: KeyedOptions,
        pages: usize,
    ) -> Self {
        Self {
            name: name.to_string(),
            page_prefix,
            persistent,
            options,
            pages: (0..pages).map(|_| Page::default()).collect(),
            len: 0,
            dirty: Dirty::new(pages),
            expiry: BTreeMap::new(),
            bytes_per_entry: 0,
        }
    }

    fn page_of(&self, key: &K) -> usize {
        if self.pages.len() == 1 {
            return 0;
        }
        // Truncation intended: the low bits select the page.
        (page_hash(key) as usize) & (self.pages.len() - 1)
    }

    /// The store's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> bool {
        self.pages[self.page_of(key)].contains_key(key)
    }

    /// Reads an entry.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.pages[self.page_of(key)].get(key).map(|e| &e.value)
    }

    /// Mutable access; marks the entry changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let page = self.page_of(key);
        let entry = self.pages[page].get_mut(key)?;
        self.dirty.touch(page, &mut entry.touched);
        Some(&mut entry.value)
    }

    /// Mutable access **without** marking the entry changed: one hash lookup instead of three, for hot
    /// paths that know whether the entry was already marked since the last flush (e.g. by keeping a flush
    /// epoch inside the value). A caller that changes the value must call [`Self::mark_changed`] before the
    /// next [`Self::flush_into`], or the change is not written.
    pub fn get_mut_untracked(&mut self, key: &K) -> Option<&mut V> {
        let page = self.page_of(key);
        self.pages[page].get_mut(key).map(|e| &mut e.value)
    }

    /// Marks `key` changed, so the next [`Self::flush_into`] writes it. (A removed key is already
    /// tracked by [`Self::remove`].)
    pub fn mark_changed(&mut self, key: &K) {
        let page = self.page_of(key);
        if let Some(entry) = self.pages[page].get_mut(key) {
            self.dirty.touch(page, &mut entry.touched);
        }
    }

    /// Mutable access to the entry, created with `init` if absent; marks it changed.
    pub fn get_or_insert_with(&mut self, key: K, init: impl FnOnce() -> V) -> &mut V {
        let page = self.page_of(&key);
        match self.pages[page].entry(key) {
            MapEntry::Occupied(o) => {
                let entry = o.into_mut();
                self.dirty.touch(page, &mut entry.touched);
                &mut entry.value
            }
            MapEntry::Vacant(v) => {
                self.dirty.created(page, v.key());
                self.len += 1;
                let touched = self.dirty.generation;
                &mut v.insert(Entry { value: init(), expires_at: None, touched }).value
            }
        }
    }

    /// Inserts or replaces an entry without expiry (clearing any expiry it had); returns the old value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.put(key, value, None)
    }

    /// Inserts or replaces an entry that [`Self::expire`] removes once the watermark reaches `expires_at`.
    pub fn insert_with_expiry(&mut self, key: K, value: V, expires_at: Timestamp) -> Option<V> {
        self.put(key, value, Some(expires_at))
    }

    fn put(&mut self, key: K, value: V, expires_at: Option<Timestamp>) -> Option<V> {
        let page = self.page_of(&key);
        let (old_value, old_expiry, index_key) = match self.pages[page].entry(key) {
            MapEntry::Occupied(o) => {
                let index_key = (o.get().expires_at != expires_at).then(|| o.key().clone());
                let entry = o.into_mut();
                self.dirty.touch(page, &mut entry.touched);
                let old_expiry = std::mem::replace(&mut entry.expires_at, expires_at);
                (Some(std::mem::replace(&mut entry.value, value)), old_expiry, index_key)
            }
            MapEntry::Vacant(v) => {
                self.dirty.created(page, v.key());
                self.len += 1;
                let index_key = expires_at.map(|_| v.key().clone());
                v.insert(Entry { value, expires_at, touched: self.dirty.generation });
                (None, None, index_key)
            }
        };
        if let Some(key) = index_key {
            self.reindex(key, old_expiry, expires_at);
        }
        old_value
    }

    /// Moves `key` in the expiry index from `old` to `new`.
    fn reindex(&mut self, key: K, old: Option<Timestamp>, new: Option<Timestamp>) {
        if let Some(t) = old {
            self.unindex(&key, t);
        }
        if let Some(t) = new {
            self.expiry.entry(t).or_default().insert(key);
        }
    }

    fn unindex(&mut self, key: &K, at: Timestamp) {
        if let Some(keys) = self.expiry.get_mut(&at) {
            keys.remove(key);
            if keys.is_empty() {
                self.expiry.remove(&at);
            }
        }
    }

    /// Changes (or sets) the expiry of an existing entry. Returns false if the key is absent.
    pub fn set_expiry(&mut self, key: &K, expires_at: Timestamp) -> bool {
        self.change_expiry(key, Some(expires_at))
    }

    /// Removes the expiry of an existing entry (it then lives until removed). Returns false if the key is
    /// absent.
    pub fn clear_expiry(&mut self, key: &K) -> bool {
        self.change_expiry(key, None)
    }

    fn change_expiry(&mut self, key: &K, expires_at: Option<Timestamp>) -> bool {
        let page = self.page_of(key);
        let Some(entry) = self.pages[page].get_mut(key) else { return false };
        self.dirty.touch(page, &mut entry.touched);
        let old = std::mem::replace(&mut entry.expires_at, expires_at);
        if old != expires_at {
            self.reindex(key.clone(), old, expires_at);
        }
        true
    }

    /// The expiry of an entry.
    pub fn expiry_of(&self, key: &K) -> Option<Timestamp> {
        self.pages[self.page_of(key)].get(key).and_then(|e| e.expires_at)
    }

    /// Removes an entry.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let page = self.page_of(key);
        let (key, entry) = self.pages[page].remove_entry(key)?;
        self.len -= 1;
        if let Some(t) = entry.expires_at {
            self.unindex(&key, t);
        }
        self.dirty.removed(page, entry.touched, key);
        Some(entry.value)
    }

    /// Removes and returns every entry whose expiry is `<= watermark`, in expiry order (entries with the
    /// same expiry in no particular order).
    pub fn expire(&mut self, watermark: Timestamp) -> Vec<(K, V)> {
        let mut out = Vec::new();
        while let Some(first) = self.expiry.first_entry() {
            if *first.key() > watermark {
                break;
            }
            for key in first.remove() {
                let page = self.page_of(&key);
                match self.pages[page].remove(&key) {
                    Some(entry) => {
                        self.len -= 1;
                        self.dirty.removed(page, entry.touched, key.clone());
                        out.push((key, entry.value));
                    }
                    None => debug_assert!(false, "expiry index names a missing key"),
                }
            }
        }
        out
    }

    /// The earliest expiry of a live entry, if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiry.keys().next().copied()
    }

    /// Iterates over live entries (arbitrary order).
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.pages.iter().flat_map(|p| p.iter().map(|(k, e)| (k, &e.value)))
    }

    /// Number of distinct keys changed (written or removed) since the last flush.
    pub fn dirty_len(&self) -> usize {
        self.dirty.keys
    }

    /// Writes every page changed since the last flush into `batch` (puts, and deletes of emptied pages) and
    /// starts a new change set. The caller commits the batch atomically with the source offsets.
    ///
    /// On error `batch` is left as it was and the changes stay pending. After the caller fails to *apply* a
    /// flushed batch the store no longer knows those changes: reopen it from the backend (restart the task).
    pub fn flush_into(&mut self, batch: &mut WriteBatch) -> Result<()> {
        if !self.persistent {
            self.committed();
            return Ok(());
        }
        self.grow_if_needed();
        let start = batch.len();
        let (mut bytes, mut entries) = (0_usize, 0_usize);
        for &id in &self.dirty.stale {
            batch.delete(self.page_key(id));
        }
        for &id in &self.dirty.pages {
            let page = &self.pages[id as usize];
            let key = self.page_key(id);
            if page.is_empty() {
                batch.delete(key);
                continue;
            }
            let mut value = Vec::with_capacity(self.bytes_per_entry.max(8) * page.len() + 8);
            if let Err(e) =
                bincode::serde::encode_into_std_write(PageRef(page), &mut value, bincode::config::standard())
            {
                batch.truncate(start);
                return Err(Error::StateEncode {
                    store: self.name.clone(),
                    reason: format!("page {id}: {e}"),
                });
            }
            bytes += value.len();
            entries += page.len();
            batch.put(key, value);
        }
        if let Some(per_entry) = bytes.checked_div(entries) {
            self.bytes_per_entry = per_entry;
        }
        self.committed();
        Ok(())
    }

    fn page_key(&self, id: u32) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.page_prefix.len() + 4);
        key.extend_from_slice(&self.page_prefix);
        key.extend_from_slice(&id.to_be_bytes());
        key
    }

    fn committed(&mut self) {
        if self.dirty.committed() {
            for entry in self.pages.iter_mut().flat_map(|p| p.values_mut()) {
                entry.touched = 0;
            }
        }
    }

    /// Doubles the page count (as often as needed) when pages have grown past the configured size; every
    /// page then becomes dirty, so the new layout commits in one batch.
    fn grow_if_needed(&mut self) {
        let per_page = self
            .options
            .target_page_bytes
            .checked_div(self.bytes_per_entry)
            .unwrap_or(usize::MAX)
            .clamp(1, self.options.max_page_entries.max(1));
        let wanted = self.len.div_ceil(per_page).next_power_of_two().min(MAX_PAGES);
        if wanted <= self.pages.len() {
            return;
        }
        let old = std::mem::take(&mut self.pages);
        self.pages = (0..wanted).map(|_| Page::default()).collect();
        self.dirty.page_flags.resize(wanted, false);
        for page in old {
            for (key, entry) in page {
                let p = self.page_of(&key);
                self.pages[p].insert(key, entry);
            }
        }
        for p in 0..wanted {
            self.dirty.mark_page(p);
        }
    }
}

fn decode_err(store: &str, reason: String) -> Error {
    Error::StateDecode { store: store.to_string(), reason }
}

#[cfg(test)]
#[path = "keyed_tests.rs"]
mod tests;
