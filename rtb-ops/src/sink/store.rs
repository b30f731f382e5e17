//! [`EmbeddedStore`]: what the embedded sinks keep their tables in — named trees in one
//! [`JournalBackend`] (the rows in memory; each change one append to a CRC-framed journal, compacted into
//! snapshots), with serializable transactions over any set of trees.
//!
//! A transaction runs under the store's lock, reads its own writes, and is applied as **one** journal
//! batch: after a crash all of it is there or none. Reads outside a transaction see committed data only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rtb_stream::state::{JournalBackend, StoreBackend, WriteBatch};

use crate::error::{Error, Result};

/// One directory of embedded tables. Cheap to clone (a handle); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: JournalBackend,
    /// Serializes transactions (and single writes) against each other.
    lock: Mutex<()>,
    /// A temporary store's directory, removed with the store.
    temporary: Option<PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(dir) = &self.temporary {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A named table of an [`EmbeddedStore`]: its keys live under the tree's prefix.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    inner: Arc<Inner>,
    prefix: Vec<u8>,
}

/// The writes of a transaction, visible to its own reads.
pub(crate) struct Tx<'a> {
    inner: &'a Inner,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

fn err(sink: &'static str, op: &'static str, e: rtb_stream::Error) -> Error {
    Error::sink(sink, op, e)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let backend = JournalBackend::open(dir.as_ref()).map_err(|e| err("embedded-store", "open", e))?;
        Ok(Self { inner: Arc::new(Inner { backend, lock: Mutex::new(()), temporary: None }) })
    }

    /// A store in a new temporary directory, removed when the last handle is dropped.
    pub fn temporary() -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "rtb-store-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let backend = JournalBackend::open(&dir).map_err(|e| err("embedded-store", "open", e))?;
        Ok(Self { inner: Arc::new(Inner { backend, lock: Mutex::new(()), temporary: Some(dir) }) })
    }

    /// Makes every write so far survive a crash of the machine (it survives one of the process already).
    pub fn flush(&self) -> Result<()> {
        self.inner.backend.flush().map_err(|e| err("embedded-store", "flush", e))
    }

    /// The tree `name` (names must not contain NUL).
    pub(crate) fn tree(&self, name: &str) -> Tree {
        debug_assert!(!name.as_bytes().contains(&0));
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        Tree { inner: Arc::clone(&self.inner), prefix }
    }

    /// Runs `f` as one serializable transaction: its writes are applied together if it returns `Ok`, not at
    /// all if it returns `Err`.
    pub(crate) fn transaction<T>(
        &self,
        sink: &'static str,
        op: &'static str,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T>,
    ) -> Result<T> {
        let _guard = self.inner.lock.lock();
        let mut tx = Tx { inner: &self.inner, writes: BTreeMap::new() };
        let out = f(&mut tx)?;
        let mut batch = WriteBatch::new();
        for (k, v) in tx.writes {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        self.inner.backend.apply(batch).map_err(|e| err(sink, op, e))?;
        Ok(out)
    }
}

impl Tree {
    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(key);
        k
    }

    /// The committed value of `key`.
    pub(crate) fn get(&self, sink: &'static str, op: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.backend.get(&self.key(key)).map_err(|e| err(sink, op, e))
    }

    /// Every entry whose key starts with `prefix`, in key order (keys without the tree's prefix).
    pub(crate) fn scan_prefix(&self, sink: &'static str, op: &'static str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let n = self.prefix.len();
        Ok(self
            .inner
            .backend
            .scan_prefix(&self.key(prefix))
            .map_err(|e| err(sink, op, e))?
            .into_iter()
            .map(|(mut k, v)| (k.split_off(n), v))
            .collect())
    }

    /// Every entry, in key order.
    pub(crate) fn iter(&self, sink: &'static str, op: &'static str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_prefix(sink, op, &[])
    }

    /// Up to `max` keys before `bound`, in order.
    pub(crate) fn keys_before(&self, bound: &[u8], max: usize) -> Vec<Vec<u8>> {
        let n = self.prefix.len();
        self.inner.backend.keys_in(&self.prefix, &self.key(bound), max).into_iter().map(|mut k| k.split_off(n)).collect()
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.iter("embedded-store", "len").map_or(0, |v| v.len())
    }

    /// Sets `key` to `value` (one write on its own).
    pub(crate) fn insert(&self, sink: &'static str, op: &'static str, key: &[u8], value: Vec<u8>) -> Result<()> {
        let _guard = self.inner.lock.lock();
        let mut b = WriteBatch::new();
        b.put(self.key(key), value);
        self.inner.backend.apply(b).map_err(|e| err(sink, op, e))
    }

    /// Sets `key` to `value` unless it is present; whether it was set.
    pub(crate) fn insert_if_absent(&self, sink: &'static str, op: &'static str, key: &[u8], value: Vec<u8>) -> Result<bool> {
        let _guard = self.inner.lock.lock();
        let k = self.key(key);
        if self.inner.backend.get(&k).map_err(|e| err(sink, op, e))?.is_some() {
            return Ok(false);
        }
        let mut b = WriteBatch::new();
        b.put(k, value);
        self.inner.backend.apply(b).map_err(|e| err(sink, op, e))?;
        Ok(true)
    }
}

impl Tx<'_> {
    /// The value of `key` in `tree`, this transaction's writes included.
    pub(crate) fn get(&self, tree: &Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let k = tree.key(key);
        if let Some(w) = self.writes.get(&k) {
            return Ok(w.clone());
        }
        self.inner.backend.get(&k).map_err(|e| err("embedded-store", "transaction", e))
    }

    /// Sets `key` of `tree`; returns the value it had.
    pub(crate) fn insert(&mut self, tree: &Tree, key: &[u8], value: Vec<u8>) -> Result<Option<Vec<u8>>> {
        let old = self.get(tree, key)?;
        self.writes.insert(tree.key(key), Some(value));
        Ok(old)
    }

    /// Removes `key` of `tree`.
    pub(crate) fn remove(&mut self, tree: &Tree, key: &[u8]) {
        self.writes.insert(tree.key(key), None);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_failed_transaction_writes_nothing_and_a_committed_one_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            let (a, b) = (s.tree("a"), s.tree("b"));
            s.transaction("t", "ok", |tx| {
                tx.insert(&a, b"k", b"1".to_vec())?;
                assert_eq!(tx.get(&a, b"k")?, Some(b"1".to_vec()), "reads its own writes");
                tx.insert(&b, b"k", b"2".to_vec())?;
                Ok(())
            })
            .unwrap();
            let r: Result<()> = s.transaction("t", "fails", |tx| {
                tx.insert(&a, b"k", b"changed".to_vec())?;
                tx.remove(&b, b"k");
                Err(Error::sink("t", "fails", "on purpose"))
            });
            assert!(r.is_err());
            assert_eq!(a.get("t", "get", b"k").unwrap(), Some(b"1".to_vec()));
            assert!(a.insert_if_absent("t", "once", b"new", vec![]).unwrap());
            assert!(!a.insert_if_absent("t", "once", b"new", vec![]).unwrap());
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let (a, b) = (s.tree("a"), s.tree("b"));
        assert_eq!(a.iter("t", "iter").unwrap(), vec![(b"k".to_vec(), b"1".to_vec()), (b"new".to_vec(), vec![])]);
        assert_eq!(b.scan_prefix("t", "scan", b"k").unwrap(), vec![(b"k".to_vec(), b"2".to_vec())]);
        assert_eq!(a.keys_before(b"l", 10), vec![b"k".to_vec()]);
        // Trees do not see each other's keys, even when one name is a prefix of another.
        assert!(s.tree("a/b").iter("t", "iter").unwrap().is_empty());
    }

    #[test]
    fn a_temporary_store_removes_its_directory() {
        let s = EmbeddedStore::temporary().unwrap();
        let dir = s.inner.temporary.clone().unwrap();
        s.tree("t").insert("t", "insert", b"k", vec![1]).unwrap();
        assert!(dir.exists());
        drop(s);
        assert!(!dir.exists());
    }
}
