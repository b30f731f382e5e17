//! sled backend (sled 0.34): one tree, batches applied with `Tree::apply_batch`, which sled applies
//! atomically, also across a crash (`tests/state_crash.rs` kills a writer process to check it). `flush`
//! fsyncs; without it sled writes its buffers in the background every 200 ms, so a crash may lose the last
//! commits — whole commits, never part of one.

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

/// How long [`SledBackend::open`] waits for the lock of a database this process has just closed.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl SledBackend {
    /// Opens (or creates) the database at `path`, using the tree `tree`.
    ///
    /// A database this process has just closed keeps its file lock until sled's background flusher has
    /// exited: the lock is waited for up to [`LOCK_WAIT`]; a lock held longer (another process) is an error.
    pub fn open(path: impl AsRef<Path>, tree: &str) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new().path(&path).flush_every_ms(Some(200)).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(Error::StateOpen { path: path.clone(), source: Box::new(sled::Error::Io(e)) });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(Error::StateOpen { path: path.clone(), source: Box::new(e) }),
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> SledBackend {
        SledBackend::open(dir.join("db"), "state").expect("open")
    }

    #[test]
    fn later_operations_on_the_same_key_win_within_a_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let b = open(dir.path());
        let mut batch = WriteBatch::new();
        batch.put(b"a".to_vec(), b"1".to_vec());
        batch.delete(b"a".to_vec());
        batch.put(b"b".to_vec(), b"1".to_vec());
        batch.put(b"b".to_vec(), b"2".to_vec());
        batch.delete(b"c".to_vec());
        batch.put(b"c".to_vec(), b"3".to_vec());
        b.apply(batch).expect("apply");
        assert_eq!(b.get(b"a").expect("get"), None);
        assert_eq!(b.get(b"b").expect("get"), Some(b"2".to_vec()));
        assert_eq!(b.get(b"c").expect("get"), Some(b"3".to_vec()));
    }

    #[test]
    fn scan_prefix_is_ordered_and_bounded_and_data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let b = open(dir.path());
            let mut batch = WriteBatch::new();
            for k in [&b"p\x02"[..], b"p\x01", b"q", b"p", b"o\xff"] {
                batch.put(k.to_vec(), k.to_vec());
            }
            b.apply(batch).expect("apply");
            b.flush().expect("flush");
        }
        let b = open(dir.path());
        let keys: Vec<Vec<u8>> = b.scan_prefix(b"p").expect("scan").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![b"p".to_vec(), b"p\x01".to_vec(), b"p\x02".to_vec()]);
        assert_eq!(b.scan_prefix(b"").expect("scan all").len(), 5);
        assert_eq!(b.path(), dir.path().join("db"));
    }

    #[test]
    fn trees_of_one_database_are_separate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = open(dir.path());
        let other = SledBackend::with_db(a.db().clone(), "other", a.path().to_path_buf()).expect("tree");
        let mut batch = WriteBatch::new();
        batch.put(b"k".to_vec(), b"v".to_vec());
        a.apply(batch).expect("apply");
        assert_eq!(other.get(b"k").expect("get"), None);
        assert!(other.scan_prefix(b"").expect("scan").is_empty());
    }
}
