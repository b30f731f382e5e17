//! sled backend (sled 0.34): one tree, batches applied with `Tree::apply_batch`, which sled applies
//! atomically, also across a crash. `flush` fsyncs.

use std::path::{Path, PathBuf};

use super::{StoreBackend, WriteBatch};
use crate::error::{Error, Result};

/// Durable ordered store on sled.
#[derive(Debug, Clone)]
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
}

impl SledBackend {
    /// Opens (or creates) the database at `path`, using the tree `tree`.
    pub fn open(path: impl AsRef<Path>, tree: &str) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(200))
            .open()
            .map_err(|e| Error::StateOpen { path: path.clone(), source: Box::new(e) })?;
        Self::with_db(db, tree, path)
    }

    /// Uses another tree of an already opened database.
    pub fn with_db(db: sled::Db, tree: &str, path: PathBuf) -> Result<Self> {
        let t =
            db.open_tree(tree).map_err(|e| Error::StateOpen { path: path.clone(), source: Box::new(e) })?;
        Ok(Self { db, tree: t, path })
    }

    /// The underlying database (to open sibling trees on the same files).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StoreBackend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.tree.get(key).map(|v| v.map(|iv| iv.to_vec())).map_err(Error::read)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::read))
            .collect()
    }
    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.into_ops() {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b).map_err(Error::commit)
    }
    fn flush(&self) -> Result<()> {
        self.tree.flush().map(|_| ()).map_err(Error::commit)
    }
}
