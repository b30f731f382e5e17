//! The per-partition durable checkpoint: how far a partition is known to be completely written *and*
//! fsynced. Opening the log uses it to tell a torn tail (bytes past the last durable point, lost to a
//! crash of the machine) from corruption of committed data (anything before that point).
//!
//! ```text
//! file  = slot 0 at byte 0 | slot 1 at byte 512           (file length 1024, written once, never resized)
//! slot  = magic "RTBD" | generation: u64 LE | segment base: u64 LE | durable length: u64 LE
//!       | next offset: u64 LE | crc32(the 36 bytes before): u32 LE
//! ```
//!
//! An update writes the slot that does **not** hold the newest generation (one positional write of 40
//! bytes) and `fdatasync`s the file: a crash during the update can tear only that slot, whose CRC then
//! fails, and the other slot (the previous durable point, a smaller but true one) is used. The file is
//! created once per partition by writing a temporary file and renaming it (plus a directory fsync), so it
//! never exists half-written. Its cost on the durable path is one small write and one `fdatasync` per
//! flush of a partition that changed since the previous flush, and one per segment roll.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::disk::sync_dir;
use super::segment::{self, io_err};
use crate::error::{Error, Result};

/// File name of the checkpoint inside a partition directory.
pub(crate) const FILE: &str = "durable.ckpt";
const MAGIC: [u8; 4] = *b"RTBD";
/// Bytes of one slot.
const SLOT_LEN: usize = 4 + 8 + 8 + 8 + 8 + 4;
/// Distance between the slots: one disk sector, so a torn sector write damages one slot at most.
const SLOT_STRIDE: u64 = 512;
const FILE_LEN: u64 = 2 * SLOT_STRIDE;

/// A point up to which a partition is durable: every record before `next` is in complete, fsynced frames;
/// the newest segment then was the one starting at `segment_base`, and its first `len` bytes were durable.
/// The default (all zero) is "nothing known", which every partition satisfies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DurablePoint {
    /// Base offset of the segment that was active.
    pub segment_base: u64,
    /// Durable bytes of that segment (a frame boundary).
    pub len: u64,
    /// Offset after the last durable record.
    pub next: u64,
}

/// The checkpoint file of one partition, open for updates.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    path: PathBuf,
    file: File,
    generation: u64,
    point: DurablePoint,
}

fn encode(generation: u64, p: DurablePoint) -> [u8; SLOT_LEN] {
    let mut s = [0_u8; SLOT_LEN];
    s[..4].copy_from_slice(&MAGIC);
    s[4..12].copy_from_slice(&generation.to_le_bytes());
    s[12..20].copy_from_slice(&p.segment_base.to_le_bytes());
    s[20..28].copy_from_slice(&p.len.to_le_bytes());
    s[28..36].copy_from_slice(&p.next.to_le_bytes());
    let crc = crc32fast::hash(&s[..36]);
    s[36..].copy_from_slice(&crc.to_le_bytes());
    s
}

fn decode(s: &[u8]) -> Option<(u64, DurablePoint)> {
    if s.len() < SLOT_LEN || s[..4] != MAGIC {
        return None;
    }
    let u64_at = |at: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&s[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut crc = [0; 4];
    crc.copy_from_slice(&s[36..40]);
    if u32::from_le_bytes(crc) != crc32fast::hash(&s[..36]) {
        return None;
    }
    let point = DurablePoint { segment_base: u64_at(12), len: u64_at(20), next: u64_at(28) };
    Some((u64_at(4), point))
}

impl Checkpoint {
    /// Reads the checkpoint of the partition in `dir`; `Ok(None)` if there is none (a partition created
    /// before checkpoints existed, or one whose creation was interrupted). A file with no valid slot is
    /// [`Error::LogCorrupt`]: an update tears one slot at most.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        if bytes.len() as u64 != FILE_LEN {
            return Err(Error::LogCorrupt {
                position: 0,
                reason: format!("durable checkpoint is {} bytes, expected {FILE_LEN}", bytes.len()),
                path,
            });
        }
        let slot = |i: u64| bytes.get((i * SLOT_STRIDE) as usize..).and_then(decode);
        let newest = match (slot(0), slot(1)) {
            (Some(a), Some(b)) => Some(if a.0 >= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((generation, point)) = newest else {
            return Err(Error::LogCorrupt {
                position: 0,
                reason: format!(
                    "durable checkpoint of partition {} has no valid slot ({} bytes)",
                    dir.display(),
                    bytes.len()
                ),
                path,
            });
        };
        if point.len > 0 && point.next <= point.segment_base {
            return Err(Error::LogCorrupt {
                position: 0,
                reason: format!("durable checkpoint is inconsistent: {point:?}"),
                path,
            });
        }
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok(Some(Self { path, file, generation, point }))
    }

    /// Creates the checkpoint of the partition in `dir` holding `point` (atomically: temporary file,
    /// fsync, rename, directory fsync). Replaces an existing one.
    pub(crate) fn create(dir: &Path, point: DurablePoint) -> Result<Self> {
        let path = dir.join(FILE);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let generation = 1;
        let mut bytes = vec![0_u8; FILE_LEN as usize];
        let at = slot_pos(generation) as usize;
        bytes[at..at + SLOT_LEN].copy_from_slice(&encode(generation, point));
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| io_err(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        sync_dir(dir)?;
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok(Self { path, file, generation, point })
    }

    /// The newest durable point recorded.
    pub(crate) fn point(&self) -> DurablePoint {
        self.point
    }

    /// Updates written so far (1 for a fresh checkpoint).
    #[cfg(test)]
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Records `point` as durable. The caller must have fsynced everything the point covers. Writes the
    /// older slot and `fdatasync`s; on failure the recorded point stays the previous one.
    pub(crate) fn store(&mut self, point: DurablePoint) -> Result<()> {
        if point == self.point {
            return Ok(());
        }
        let generation = self.generation + 1;
        segment::write_all_at(&self.file, &encode(generation, point), slot_pos(generation))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_err(&self.path, e))?;
        self.generation = generation;
        self.point = point;
        Ok(())
    }
}

/// Where generation `g` is written: the slots alternate, so the newest one is never overwritten.
fn slot_pos(generation: u64) -> u64 {
    (generation % 2) * SLOT_STRIDE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(next: u64) -> DurablePoint {
        DurablePoint { segment_base: 10, len: next * 7, next }
    }

    #[test]
    fn round_trip_across_updates_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(Checkpoint::load(dir.path()).expect("load").is_none(), "no file: none");
        let mut c = Checkpoint::create(dir.path(), DurablePoint::default()).expect("create");
        for next in 11..16 {
            c.store(point(next)).expect("store");
            let loaded = Checkpoint::load(dir.path()).expect("load").expect("exists");
            assert_eq!(loaded.point(), point(next));
        }
        assert_eq!(std::fs::metadata(dir.path().join(FILE)).expect("stat").len(), FILE_LEN);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![FILE.to_string()], "no temporary file left");
        // Updates continue from the reloaded generation without overwriting the newest slot.
        let mut again = Checkpoint::load(dir.path()).expect("load").expect("exists");
        again.store(point(20)).expect("store");
        assert_eq!(Checkpoint::load(dir.path()).expect("load").expect("exists").point(), point(20));
    }

    #[test]
    fn a_torn_update_falls_back_to_the_previous_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Checkpoint::create(dir.path(), DurablePoint::default()).expect("create");
        c.store(point(11)).expect("store");
        c.store(point(12)).expect("store");
        // Tear the newest slot (generation 3 lives in slot 1).
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = slot_pos(3) as usize + 20;
        bytes[at] ^= 0x55;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(Checkpoint::load(dir.path()).expect("load").expect("exists").point(), point(11));
        // Both slots bad: refuse, never "nothing known".
        let at = slot_pos(2) as usize + 30;
        bytes[at] ^= 0x55;
        std::fs::write(&path, &bytes).expect("write");
        let err = Checkpoint::load(dir.path()).expect_err("no valid slot");
        assert!(matches!(&err, Error::LogCorrupt { path: p, .. } if p == &path), "{err}");
    }
}
