//! Integrity of the embedded stores of a data directory between two processes.
//!
//! A store refuses to open a journal damaged in its middle, but a damaged *last* write, past the last
//! `fdatasync`, looks exactly like the torn tail a crash leaves, and is dropped: a sink would open shorter
//! and a run would carry on, reporting "complete" over lost balances and ledger rows. So a cleanly finished
//! `rtb run` *seals* the stores: it
//! writes the content checksum of each embedded store (the sinks and the operators' state) to
//! `stores.json` in the data directory. The next `rtb run` or `rtb export` verifies the seal before it
//! opens anything, and refuses a store whose content changed, naming it. A run removes the seal before it
//! writes to the stores, so a crashed run leaves none to verify (its stores are still consistent with the
//! log: every effect is idempotent and committed with the offsets), and a clean finish writes a new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use rtb_stream::registry::SinkOptions;
use crate::plan::ExecutionPlan;

/// The seal's file name inside a data directory.
pub const SEAL_FILE: &str = "stores.json";

/// The backend whose sinks are stores under the data directory.
const EMBEDDED_BACKEND: &str = "embedded";

/// The directory of the operators' state store inside a data directory.
pub const STATE_DIR: &str = "state";

/// One embedded store: its name (the sink's, or `state`) and directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Sink name, or `state`.
    pub name: String,
    /// The store's directory: a [`JournalBackend`](rtb_stream::state::JournalBackend) (the operators'
    /// state, and the tables of the embedded sinks).
    pub path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Seal {
    /// Store name → checksum of its content (every tree, every key and value).
    checksums: BTreeMap<String, u32>,
}

/// The embedded stores of `plan` under `data_dir` (where `rtb run` opens them), state included.
pub fn stores(plan: &ExecutionPlan, data_dir: &Path) -> Vec<Store> {
    let mut out: Vec<Store> = plan
        .sinks
        .iter()
        // The stores of the `embedded` backend; servers (and other backends) guard their own data.
        .filter(|s| s.backend == EMBEDDED_BACKEND)
        .map(|s| Store {
            name: s.name.clone(),
            path: SinkOptions { name: &s.name, path: s.path.as_deref(), url: None, data_dir }.dir(),
        })
        .collect();
    out.push(Store { name: STATE_DIR.to_string(), path: data_dir.join(STATE_DIR)});
    out
}

fn checksum(store: &Store) -> Result<u32> {
    rtb_stream::state::JournalBackend::checksum_of(&store.path).map_err(|e| {
        Error::Run(format!("store `{}` ({}) cannot be read: {e}", store.name, store.path.display()))
    })
}

/// Verifies the seal a clean finish left, if any: every sealed store must still hold exactly what it held.
/// Call it before opening any store.
pub fn verify(data_dir: &Path, stores: &[Store]) -> Result<()> {
    let path = data_dir.join(SEAL_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Run(format!("{}: {e}", path.display()))),
    };
    let seal: Seal = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Run(format!("{} is damaged ({e}); the stores cannot be verified", path.display())))?;
    for store in stores {
        let Some(&want) = seal.checksums.get(&store.name) else { continue };
        if !store.path.exists() {
            return Err(Error::Run(format!(
                "store `{}` ({}) is missing although the last run closed it cleanly; restore it or use a new \
                 --data-dir",
                store.name,
                store.path.display()
            )));
        }
        let have = checksum(store)?;
        if have != want {
            return Err(Error::Run(format!(
                "store `{}` ({}) is corrupt: its content changed since the last run closed it cleanly \
                 (checksum {have:08x}, sealed {want:08x}); restore it from a backup or use a new --data-dir",
                store.name,
                store.path.display()
            )));
        }
    }
    Ok(())
}

/// Removes the seal: the stores are about to change.
pub fn unseal(data_dir: &Path) -> Result<()> {
    let path = data_dir.join(SEAL_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Run(format!("{}: {e}", path.display()))),
    }
}

/// Seals the stores (every one must be closed by this process first).
pub fn seal(data_dir: &Path, stores: &[Store]) -> Result<()> {
    let mut checksums = BTreeMap::new();
    for s in stores {
        checksums.insert(s.name.clone(), checksum(s)?);
    }
    let path = data_dir.join(SEAL_FILE);
    let tmp = data_dir.join(format!(".{SEAL_FILE}.partial"));
    let json = serde_json::to_vec_pretty(&Seal { checksums }).map_err(|e| Error::Run(e.to_string()))?;
    std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::Run(format!("{}: {e}", path.display())))
}
