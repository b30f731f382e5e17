//! Small metadata files of the durable log: each topic's configuration and the consumer groups' committed
//! offsets, both JSON, both replaced atomically (write a temporary file, fsync, rename, fsync the directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use super::disk::sync_dir;
use super::segment::io_err;
use crate::error::{Error, Result};

/// `(group, topic, partition) → next offset to read`.
pub(crate) type GroupOffsets = BTreeMap<(String, String, u32), u64>;

/// File of a topic's configuration inside its directory.
pub(crate) const TOPIC_FILE: &str = "topic.json";
/// File of the group offsets in the log's root directory.
pub(crate) const GROUPS_FILE: &str = "group-offsets.json";

/// Writes `value` as JSON to `path`, atomically with respect to crashes: readers see the old or the new
/// content, never a mix.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Config(format!("cannot encode {}: {e}", path.display())))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Reads a JSON file; `Ok(None)` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::LogCorrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: format!("invalid JSON: {e}"),
    })
}

/// Group offsets as stored on disk (a list, since JSON maps need string keys).
#[derive(serde::Serialize, serde::Deserialize)]
struct GroupOffsetRow {
    group: String,
    topic: String,
    partition: u32,
    next: u64,
}

/// Saves group offsets atomically.
pub(crate) fn save_groups(path: &Path, offsets: &GroupOffsets) -> Result<()> {
    let rows: Vec<GroupOffsetRow> = offsets
        .iter()
        .map(|((group, topic, partition), next)| GroupOffsetRow {
            group: group.clone(),
            topic: topic.clone(),
            partition: *partition,
            next: *next,
        })
        .collect();
    write_json_atomic(path, &rows)
}

/// Loads group offsets (empty if the file does not exist yet).
pub(crate) fn load_groups(path: &Path) -> Result<GroupOffsets> {
    let rows: Vec<GroupOffsetRow> = read_json(path)?.unwrap_or_default();
    Ok(rows.into_iter().map(|r| ((r.group, r.topic, r.partition), r.next)).collect())
}

/// Whether `name` is a legal topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..` (Kafka's rule,
/// which also makes it a safe directory name).
pub(crate) fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_offsets_round_trip_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(GROUPS_FILE);
        assert!(load_groups(&path).expect("load").is_empty(), "missing file = no offsets");
        let mut g = GroupOffsets::new();
        g.insert(("g".into(), "t".into(), 1), 10);
        g.insert(("g".into(), "u".into(), 0), 3);
        save_groups(&path, &g).expect("save");
        g.insert(("g".into(), "t".into(), 1), 11);
        save_groups(&path, &g).expect("save again");
        assert_eq!(load_groups(&path).expect("load"), g);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![GROUPS_FILE.to_string()]);
    }

    #[test]
    fn corrupt_metadata_is_an_error_not_an_empty_map() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(GROUPS_FILE);
        std::fs::write(&path, b"[{\"group\":").expect("write");
        assert!(matches!(load_groups(&path), Err(Error::LogCorrupt { .. })));
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["ad-events", "a.b_c-1", "X"] {
            assert!(valid_topic_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "white space", "ü", &"x".repeat(250)] {
            assert!(!valid_topic_name(bad), "{bad}");
        }
    }
}
