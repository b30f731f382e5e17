//! In-memory backend: a `BTreeMap` behind a lock. Atomic by construction (one lock per batch).

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::{StoreBackend, WriteBatch};
use crate::error::Result;

/// Volatile ordered map; state is lost with the process.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// A store holding `map`.
    pub(crate) fn from_map(map: BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        Self { map: RwLock::new(map) }
    }

    /// Read access to the whole map (writers wait).
    pub(crate) fn read(&self) -> parking_lot::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.map.read()
    }
}

impl StoreBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.read().get(key).cloned())
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let map = self.map.read();
        Ok(map
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut map = self.map.write();
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => {
                    map.insert(k, v);
                }
                None => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
