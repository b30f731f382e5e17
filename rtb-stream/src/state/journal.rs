//! [`JournalBackend`]: the state in memory, made durable by an append-only journal of committed batches and
//! compacted into snapshots — the shape of a Kafka Streams changelog, on local files.
//!
//! Why not a B-tree on disk: a stream task's state is small and hot, and is written in whole batches once per
//! commit. sled wrote several times the bytes the tasks committed (page consolidation, segment cleaning;
//! `BENCHMARKS.md`). Here a commit is **one** `write(2)` of the batch as it is, so it
//! survives a crash of the process as soon as `apply` returns; [`StoreBackend::flush`] makes it survive a
//! crash of the machine (`fdatasync`).
//!
//! ## Files (in the store's directory)
//! - `journal`: frames `[len: u32][crc32: u32][ops]`, one per applied batch, in order.
//! - `snapshot`: the whole map as of some moment, in the same frames (a header frame with the entry count,
//!   then chunks); written to `snapshot.partial`, synced and renamed, so it is complete or absent.
//! - `durable`: two CRC'd slots holding the journal length the last `flush` made durable.
//!
//! ## Opening
//! The snapshot is loaded, then the journal replayed on top of it (replaying a frame the snapshot already
//! holds sets the same values again: compaction may be interrupted between renaming the snapshot and
//! emptying the journal). A frame that does not check out is handled as the embedded log handles its
//! segments: **past** the durable length, with nothing valid after it, it is the torn tail of a write a crash
//! interrupted — dropped, with a warning naming the byte; anywhere else it is corruption, and opening fails
//! naming the file and the byte, leaving the files untouched. A damaged snapshot always fails.
//!
//! ## Compaction
//! When the journal outgrows both [`JournalOptions::compact_at`] and twice the last snapshot, the next
//! `apply` writes a new snapshot of the map and empties the journal (under the writer lock: applies wait,
//! reads do not).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::{MemoryBackend, StoreBackend, WriteBatch};
use crate::error::{Error, Result};

const JOURNAL: &str = "journal";
const SNAPSHOT: &str = "snapshot";
const SNAPSHOT_PARTIAL: &str = "snapshot.partial";
const DURABLE: &str = "durable";
const FRAME_HEADER: usize = 8;
/// Entries per snapshot frame.
const SNAPSHOT_CHUNK: usize = 4_096;
const PUT: u8 = 1;
const DELETE: u8 = 0;
/// Snapshot header frame: magic, then the entry count.
const SNAPSHOT_MAGIC: &[u8; 8] = b"rtbsnap1";

/// Tuning of a [`JournalBackend`].
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// The journal is compacted into a snapshot once it is larger than this many bytes and than twice the
    /// last snapshot (default 64 MiB).
    pub compact_at: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self { compact_at: 64 << 20 }
    }
}

/// Durable ordered store: a map in memory, a journal of batches on disk. See the module docs.
#[derive(Debug)]
pub struct JournalBackend {
    dir: PathBuf,
    /// The content (applied after the journal write of each batch).
    map: MemoryBackend,
    writer: Mutex<Writer>,
    options: JournalOptions,
}

#[derive(Debug)]
struct Writer {
    journal: File,
    /// Bytes in the journal.
    len: u64,
    /// Size of the last snapshot written (or found).
    snapshot_len: u64,
    /// Journal length made durable by the last flush, and the slot it was written to.
    durable: u64,
    durable_file: File,
    next_slot: u64,
}

impl JournalBackend {
    /// Opens (or creates) the store in directory `dir` with the default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, JournalOptions::default())
    }

    /// Opens (or creates) the store in directory `dir`.
    pub fn open_with(dir: impl AsRef<Path>, options: JournalOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let open_err = |e: std::io::Error| Error::StateOpen { path: dir.clone(), source: Box::new(e) };
        std::fs::create_dir_all(&dir).map_err(open_err)?;
        refuse_foreign(&dir)?;
        let (map, loaded) = load(&dir)?;
        let journal_path = dir.join(JOURNAL);
        if let Some(torn_at) = loaded.torn_at {
            tracing::warn!(file = %journal_path.display(), byte = torn_at, dropped = loaded.journal_file_len - torn_at,
                "state journal: dropping the torn tail of a write interrupted by a crash");
            let f = OpenOptions::new().write(true).open(&journal_path).map_err(open_err)?;
            f.set_len(torn_at).and_then(|()| f.sync_data()).map_err(open_err)?;
        }
        let mut journal =
            OpenOptions::new().create(true).read(true).append(true).open(&journal_path).map_err(open_err)?;
        let len = journal.seek(SeekFrom::End(0)).map_err(open_err)?;
        let durable_file =
            OpenOptions::new().create(true).read(true).write(true).truncate(false).open(dir.join(DURABLE)).map_err(open_err)?;
        sync_dir(&dir).map_err(open_err)?;
        Ok(Self {
            map: MemoryBackend::from_map(map),
            writer: Mutex::new(Writer {
                journal,
                len,
                snapshot_len: loaded.snapshot_len,
                durable: loaded.durable.min(len),
                durable_file,
                next_slot: loaded.next_slot,
            }),
            dir,
            options,
        })
    }

    /// The checksum of the content (every key and value, in key order) of the store in `dir`, read without
    /// changing any file (a torn tail is left where it is and not counted). Fails like opening does on a
    /// damaged store, and when `dir` holds no store.
    pub fn checksum_of(dir: impl AsRef<Path>) -> Result<u32> {
        let dir = dir.as_ref();
        if !dir.join(JOURNAL).exists() && !dir.join(SNAPSHOT).exists() {
            return Err(Error::StateOpen {
                path: dir.to_path_buf(),
                source: "no state journal or snapshot in this directory".into(),
            });
        }
        refuse_foreign(dir)?;
        let (map, _) = load(dir)?;
        Ok(checksum(&map))
    }

    /// The checksum of the current content (see [`JournalBackend::checksum_of`]).
    pub fn checksum(&self) -> u32 {
        checksum(&self.map.read())
    }

    /// Up to `max` keys in `[from, to)`, in order.
    pub fn keys_in(&self, from: &[u8], to: &[u8], max: usize) -> Vec<Vec<u8>> {
        if from >= to {
            return Vec::new();
        }
        self.map.read().range(from.to_vec()..to.to_vec()).take(max).map(|(k, _)| k.clone()).collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }

    /// Where the store lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> Error {
        Error::StateCommit(format!("{what} in {}: {e}", self.dir.display()).into())
    }

    /// Writes a snapshot of the map and empties the journal. Called with the writer lock held.
    fn compact(&self, w: &mut Writer) -> Result<()> {
        let started = std::time::Instant::now();
        let partial = self.dir.join(SNAPSHOT_PARTIAL);
        let bytes = {
            let map = self.map.read();
            let mut out = Vec::with_capacity(map.len() * 64);
            let mut header = SNAPSHOT_MAGIC.to_vec();
            header.extend_from_slice(&(map.len() as u64).to_le_bytes());
            push_frame(&mut out, &header);
            let entries: Vec<(&Vec<u8>, &Vec<u8>)> = map.iter().collect();
            let mut body = Vec::new();
            for chunk in entries.chunks(SNAPSHOT_CHUNK) {
                body.clear();
                encode_ops(&mut body, chunk.iter().map(|(k, v)| (k.as_slice(), Some(v.as_slice()))), chunk.len());
                push_frame(&mut out, &body);
            }
            out
        };
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&partial)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&partial, self.dir.join(SNAPSHOT))?;
            sync_dir(&self.dir)?;
            Ok(())
        };
        write().map_err(|e| self.io_err("writing a state snapshot", e))?;
        // The snapshot holds everything: the journal starts again (its old frames, if a crash keeps them, are
        // replayed harmlessly on top of the snapshot).
        write_durable(&mut w.durable_file, &mut w.next_slot, 0).map_err(|e| self.io_err("state journal", e))?;
        w.journal.set_len(0).and_then(|()| w.journal.sync_data()).map_err(|e| self.io_err("emptying the state journal", e))?;
        w.journal.seek(SeekFrom::End(0)).map_err(|e| self.io_err("state journal", e))?;
        tracing::debug!(dir = %self.dir.display(), journal = w.len, snapshot = bytes.len(),
            ms = started.elapsed().as_millis() as u64, "state journal compacted");
        w.len = 0;
        w.durable = 0;
        w.snapshot_len = bytes.len() as u64;
        Ok(())
    }
}

impl StoreBackend for JournalBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.map.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.map.scan_prefix(prefix)
    }

    fn apply(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let ops = batch.ops();
        let mut body = Vec::with_capacity(ops.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 9).sum());
        encode_ops(&mut body, ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref())), ops.len());
        let mut frame = Vec::with_capacity(body.len() + FRAME_HEADER);
        push_frame(&mut frame, &body);
        let mut w = self.writer.lock();
        if let Err(e) = w.journal.write_all(&frame) {
            // Nothing of this batch counts: cut what part of it may have been written.
            let len = w.len;
            let _ = w.journal.set_len(len);
            return Err(self.io_err("appending to the state journal", e));
        }
        w.len += frame.len() as u64;
        self.map.apply(batch)?;
        if w.len > self.options.compact_at && w.len > 2 * w.snapshot_len {
            self.compact(&mut w)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut w = self.writer.lock();
        if w.durable == w.len {
            return Ok(());
        }
        w.journal.sync_data().map_err(|e| self.io_err("syncing the state journal", e))?;
        let len = w.len;
        let Writer { durable_file, next_slot, .. } = &mut *w;
        write_durable(durable_file, next_slot, len).map_err(|e| self.io_err("state journal", e))?;
        w.durable = len;
        Ok(())
    }
}

/// A directory written by another store (sled, of an older rtb) is refused rather than read as empty.
fn refuse_foreign(dir: &Path) -> Result<()> {
    for foreign in ["conf", "db", "blobs"] {
        if dir.join(foreign).exists() {
            return Err(Error::StateOpen {
                path: dir.to_path_buf(),
                source: format!(
                    "this directory holds a store of another format (`{foreign}`: sled, written by an older rtb); \
                     use a new data directory"
                )
                .into(),
            });
        }
    }
    Ok(())
}

/// What opening found besides the map.
struct Loaded {
    snapshot_len: u64,
    journal_file_len: u64,
    /// Start of a torn tail to drop.
    torn_at: Option<u64>,
    durable: u64,
    next_slot: u64,
}

fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> Error {
    Error::StateOpen {
        path: path.to_path_buf(),
        source: format!("corrupt at byte {position}: {}", reason.into()).into(),
    }
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>> {
    match File::open(path) {
        Ok(mut f) => {
            let mut b = Vec::new();
            f.read_to_end(&mut b).map_err(|e| Error::StateOpen { path: path.to_path_buf(), source: Box::new(e) })?;
            Ok(Some(b))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::StateOpen { path: path.to_path_buf(), source: Box::new(e) }),
    }
}

/// Loads the snapshot and replays the journal; changes no file.
/// The store's content.
type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn load(dir: &Path) -> Result<(Map, Loaded)> {
    let mut map = BTreeMap::new();
    let snap_path = dir.join(SNAPSHOT);
    let mut snapshot_len = 0;
    if let Some(bytes) = read_file(&snap_path)? {
        snapshot_len = bytes.len() as u64;
        let mut pos = 0usize;
        let header = match next_frame(&bytes, pos) {
            Frame::Ok(body, end) if body.len() == 16 && &body[..8] == SNAPSHOT_MAGIC => {
                pos = end;
                u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"))
            }
            _ => return Err(corrupt(&snap_path, 0, "no valid snapshot header")),
        };
        while pos < bytes.len() {
            match next_frame(&bytes, pos) {
                Frame::Ok(body, end) => {
                    decode_ops(body, &mut map).map_err(|r| corrupt(&snap_path, pos as u64, r))?;
                    pos = end;
                }
                Frame::Bad(reason) => return Err(corrupt(&snap_path, pos as u64, reason)),
            }
        }
        if map.len() as u64 != header {
            return Err(corrupt(&snap_path, pos as u64, format!("{} entries, header says {header}", map.len())));
        }
    }
    let (durable, next_slot) = read_durable(&dir.join(DURABLE))?;
    let journal_path = dir.join(JOURNAL);
    let bytes = read_file(&journal_path)?.unwrap_or_default();
    let mut pos = 0usize;
    let mut torn_at = None;
    while pos < bytes.len() {
        match next_frame(&bytes, pos) {
            Frame::Ok(body, end) => {
                decode_ops(body, &mut map).map_err(|r| corrupt(&journal_path, pos as u64, r))?;
                pos = end;
            }
            Frame::Bad(reason) => {
                // A torn tail: past what a flush made durable, and nothing valid after it.
                if (pos as u64) < durable {
                    return Err(corrupt(&journal_path, pos as u64, format!("{reason} (inside the part made durable)")));
                }
                if valid_frame_after(&bytes, pos) {
                    return Err(corrupt(&journal_path, pos as u64, format!("{reason}, with valid records after it")));
                }
                torn_at = Some(pos as u64);
                break;
            }
        }
    }
    Ok((map, Loaded { snapshot_len, journal_file_len: bytes.len() as u64, torn_at, durable, next_slot }))
}

enum Frame<'a> {
    Ok(&'a [u8], usize),
    Bad(String),
}

fn next_frame(bytes: &[u8], pos: usize) -> Frame<'_> {
    let rest = &bytes[pos..];
    if rest.len() < FRAME_HEADER {
        return Frame::Bad(format!("{} bytes, shorter than a frame header", rest.len()));
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len == 0 {
        return Frame::Bad("empty frame".into());
    }
    let Some(body) = rest.get(FRAME_HEADER..FRAME_HEADER + len) else {
        return Frame::Bad(format!("frame of {len} bytes cut short at {} bytes", rest.len() - FRAME_HEADER));
    };
    if crc32fast::hash(body) != crc {
        return Frame::Bad("checksum mismatch".into());
    }
    Frame::Ok(body, pos + FRAME_HEADER + len)
}

/// Whether any position after `pos` starts a frame that checks out (then the bad frame is not a torn tail).
fn valid_frame_after(bytes: &[u8], pos: usize) -> bool {
    (pos + 1..bytes.len().saturating_sub(FRAME_HEADER)).any(|p| matches!(next_frame(bytes, p), Frame::Ok(..)))
}

fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(u32::try_from(body.len()).expect("a state batch under 4 GiB")).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

fn encode_ops<'a>(out: &mut Vec<u8>, ops: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in ops {
        out.push(if v.is_some() { PUT } else { DELETE });
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
    }
}

fn decode_ops(body: &[u8], map: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> std::result::Result<(), String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("record truncated: {n} bytes wanted, {} left", b.len()));
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Ok(head)
    }
    fn u32_of(b: &mut &[u8]) -> std::result::Result<usize, String> {
        Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize)
    }
    let mut b = body;
    let n = u32_of(&mut b)?;
    for _ in 0..n {
        let tag = take(&mut b, 1)?[0];
        let klen = u32_of(&mut b)?;
        let key = take(&mut b, klen)?.to_vec();
        match tag {
            PUT => {
                let vlen = u32_of(&mut b)?;
                map.insert(key, take(&mut b, vlen)?.to_vec());
            }
            DELETE => {
                map.remove(&key);
            }
            t => return Err(format!("unknown operation tag {t}")),
        }
    }
    if !b.is_empty() {
        return Err(format!("{} bytes after the last operation", b.len()));
    }
    Ok(())
}

fn checksum(map: &BTreeMap<Vec<u8>, Vec<u8>>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (k, v) in map {
        h.update(&(k.len() as u32).to_le_bytes());
        h.update(k);
        h.update(&(v.len() as u32).to_le_bytes());
        h.update(v);
    }
    h.finalize()
}

/// The `durable` file: two 16-byte slots `[len: u64][seq: u32][crc32: u32]`; the valid slot with the
/// highest sequence wins, so a write torn by a crash leaves the other slot.
fn read_durable(path: &Path) -> Result<(u64, u64)> {
    let bytes = read_file(path)?.unwrap_or_default();
    let mut best: Option<(u32, u64, u64)> = None;
    for slot in 0..2u64 {
        let at = (slot * 16) as usize;
        let Some(s) = bytes.get(at..at + 16) else { continue };
        let len = u64::from_le_bytes(s[..8].try_into().expect("8 bytes"));
        let seq = u32::from_le_bytes(s[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(s[12..16].try_into().expect("4 bytes"));
        if crc32fast::hash(&s[..12]) == crc && best.is_none_or(|(b, _, _)| seq > b) {
            best = Some((seq, len, slot));
        }
    }
    // Write number `n` goes to slot `n % 2` with sequence `n`: the next one overwrites the older slot.
    Ok(best.map_or((0, 0), |(seq, len, _)| (len, u64::from(seq) + 1)))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn write_durable(f: &mut File, next: &mut u64, len: u64) -> std::io::Result<()> {
    let seq = u32::try_from(*next % u64::from(u32::MAX)).unwrap_or(0);
    let mut slot = [0u8; 16];
    slot[..8].copy_from_slice(&len.to_le_bytes());
    slot[8..12].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&slot[..12]);
    slot[12..16].copy_from_slice(&crc.to_le_bytes());
    f.seek(SeekFrom::Start((*next % 2) * 16))?;
    f.write_all(&slot)?;
    f.sync_data()?;
    *next += 1;
    Ok(())
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
