//! The data-directory lock: one `rtb` process at a time per data directory.
//!
//! `rtb run` and `rtb export` take an exclusive advisory lock on `<data dir>/rtb.lock` *before* they open
//! anything else in the directory (the log, which repairs a torn tail on open; the state; the sinks), and
//! hold it for the life of the process (the lock goes with the open file, so a killed process releases it).
//! The holder writes its pid into the file so that the refusal can name it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "rtb.lock";

/// An exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Locks `dir` (which must exist) or fails at once, without waiting, if another process holds it: the
    /// error says so and names that process's pid when it recorded one.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        // Not `Error::Io`: that one is about the topology file (and exits 2).
        let io = |e: std::io::Error| Error::Run(format!("data directory lock {}: {e}", path.display()));
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("another rtb process (pid {pid})"),
                    Err(_) => "another rtb process".to_string(),
                };
                return Err(Error::Run(format!(
                    "{} is in use: {holder} holds its lock {}; wait for it to finish (or stop it) and retry, \
                     or use another --data-dir",
                    dir.display(),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_fails_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = DataDirLock::acquire(dir.path()).expect("first lock");
        let err = DataDirLock::acquire(dir.path()).expect_err("second lock").to_string();
        assert!(err.contains("another rtb process"), "{err}");
        assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
        assert!(err.contains(LOCK_FILE), "{err}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the holder is gone");
    }
}
