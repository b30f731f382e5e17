//! One segment file: consecutive frames from a base offset, plus a sparse in-memory index
//! (offset → byte position every `index_interval` bytes) rebuilt by scanning the file on open.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::{self, FrameError, FrameInfo};
use super::LogRecord;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// File name suffix of segments.
pub(crate) const SUFFIX: &str = "log";
/// Bytes read from a file per I/O while scanning or reading.
const READ_CHUNK: usize = 256 << 10;

/// The file name of the segment starting at `base`: the base offset, zero-padded so names sort.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.{SUFFIX}")
}

/// The base offset a segment file name encodes, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::LogIo { path: path.to_path_buf(), source }
}

/// Positional read, filling `buf` completely.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, pos)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut pos: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_read(file, buf, pos) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Positional write of all of `buf`.
#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match std::os::windows::fs::FileExt::seek_write(file, buf, pos) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A segment file and what is known about it.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Offset of the first record (also of the next record if the segment is empty).
    pub base: u64,
    /// The file's path.
    pub path: PathBuf,
    file: Arc<File>,
    /// Valid bytes (everything after is garbage or does not exist).
    pub len: u64,
    /// Offset after the last record.
    pub end: u64,
    /// Newest timestamp in the segment (`Timestamp::MIN` when empty).
    pub max_ts: Timestamp,
    /// Written since the last fsync.
    pub dirty: bool,
    /// Sparse index: (offset − base, byte position), ascending.
    index: Vec<(u32, u32)>,
    index_interval: u64,
    last_indexed_pos: Option<u64>,
}

/// What a segment read needs, detached from the partition lock: the file (kept open even if retention
/// deletes the segment meanwhile), where to start and where valid bytes end.
#[derive(Debug, Clone)]
pub(crate) struct SegmentRead {
    file: Arc<File>,
    path: PathBuf,
    pos: u64,
    limit: u64,
}

impl Segment {
    /// Creates an empty segment file at `dir/file_name(base)`.
    pub(crate) fn create(dir: &Path, base: u64, index_interval: u64) -> Result<Self> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(Self {
            base,
            path,
            file: Arc::new(file),
            len: 0,
            end: base,
            max_ts: Timestamp::MIN,
            dirty: true,
            index: Vec::new(),
            index_interval: index_interval.max(1),
            last_indexed_pos: None,
        })
    }

    /// Opens an existing segment and scans it: validates every frame (length, CRC, consecutive offsets
    /// from `base`) and rebuilds the index. A bad or partial frame at the end of the **last** segment is a
    /// torn write: the file is truncated there with a warning. Elsewhere it is [`Error::LogCorrupt`].
    pub(crate) fn open(path: PathBuf, base: u64, is_last: bool, index_interval: u64) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| io_err(&path, e))?;
        let file_len = file.metadata().map_err(|e| io_err(&path, e))?.len();
        let mut seg = Self {
            base,
            path,
            file: Arc::new(file),
            len: 0,
            end: base,
            max_ts: Timestamp::MIN,
            dirty: false,
            index: Vec::new(),
            index_interval: index_interval.max(1),
            last_indexed_pos: None,
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = 0_u64; // file position of buf[0]
        let mut problem: Option<String> = None;
        while seg.len < file_len {
            let at = (seg.len - buf_start) as usize;
            match frame::check(&buf[at..]) {
                Ok(info) => {
                    if info.offset != seg.end {
                        problem = Some(format!("offset {} where {} was expected", info.offset, seg.end));
                        break;
                    }
                    let pos = seg.len;
                    seg.note_appended(info, pos);
                }
                Err(FrameError::Corrupt(reason)) => {
                    problem = Some(reason);
                    break;
                }
                Err(FrameError::Incomplete { needed }) => {
                    let have = buf.len() - at;
                    let left = file_len - seg.len;
                    let want = needed.unwrap_or(frame::HEADER_LEN).max(READ_CHUNK) as u64;
                    if have as u64 >= left {
                        problem = Some(format!("partial frame of {left} bytes at the end"));
                        break;
                    }
                    // Refill: keep the unread tail, read the next chunk after it.
                    buf.drain(..at);
                    buf_start = seg.len;
                    let n = want.min(left) as usize;
                    let old = buf.len();
                    if n > old {
                        buf.resize(n, 0);
                        read_exact_at(&seg.file, &mut buf[old..], buf_start + old as u64)
                            .map_err(|e| io_err(&seg.path, e))?;
                    }
                }
            }
        }
        if let Some(reason) = problem {
            if !is_last {
                return Err(Error::LogCorrupt { path: seg.path.clone(), position: seg.len, reason });
            }
            tracing::warn!(
                path = %seg.path.display(),
                position = seg.len,
                dropped_bytes = file_len - seg.len,
                %reason,
                "truncating torn tail of the log"
            );
            seg.file.set_len(seg.len).map_err(|e| io_err(&seg.path, e))?;
            seg.file.sync_all().map_err(|e| io_err(&seg.path, e))?;
        }
        Ok(seg)
    }

    /// Whether the segment holds no record.
    pub(crate) fn is_empty(&self) -> bool {
        self.end == self.base
    }

    /// Bookkeeping for a frame now present at byte `pos` (already written).
    fn note_appended(&mut self, info: FrameInfo, pos: u64) {
        let due = self.last_indexed_pos.is_none_or(|last| pos - last >= self.index_interval);
        if due {
            self.index.push(((info.offset - self.base) as u32, pos as u32));
            self.last_indexed_pos = Some(pos);
        }
        self.max_ts = self.max_ts.max(info.timestamp);
        self.end = info.offset + 1;
        self.len = pos + info.len as u64;
    }

    /// Writes `bytes` (whole frames for `records`, in order) at the end of the segment. On failure the file
    /// is cut back to its previous length and nothing is recorded as appended.
    pub(crate) fn append(&mut self, bytes: &[u8], records: &[(u64, Timestamp, usize)]) -> Result<()> {
        if let Err(e) = write_all_at(&self.file, bytes, self.len) {
            // Best effort: leave no partial frame behind (open would truncate it anyway).
            if let Err(undo) = self.file.set_len(self.len) {
                tracing::warn!(path = %self.path.display(), error = %undo, "cannot cut back a failed append");
            }
            return Err(io_err(&self.path, e));
        }
        for &(offset, timestamp, len) in records {
            let pos = self.len;
            self.note_appended(FrameInfo { len, offset, timestamp }, pos);
        }
        self.dirty = true;
        Ok(())
    }

    /// fsyncs the file if anything was written since the last sync.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data().map_err(|e| io_err(&self.path, e))?;
            self.dirty = false;
        }
        Ok(())
    }

    /// A read starting at the indexed position at or before `offset`.
    pub(crate) fn read_from(&self, offset: u64) -> SegmentRead {
        let rel = offset.saturating_sub(self.base);
        let i = self.index.partition_point(|&(r, _)| u64::from(r) <= rel);
        let pos = if i == 0 { 0 } else { u64::from(self.index[i - 1].1) };
        SegmentRead { file: Arc::clone(&self.file), path: self.path.clone(), pos, limit: self.len }
    }
}

impl SegmentRead {
    /// Decodes records with offset >= `from` into `out` until `out` holds `max` records or the segment's
    /// valid bytes end.
    pub(crate) fn read_into(
        &self,
        from: u64,
        max: usize,
        topic: &Arc<str>,
        partition: u32,
        out: &mut Vec<LogRecord>,
    ) -> Result<()> {
        let mut pos = self.pos;
        let mut buf: Vec<u8> = Vec::new();
        let mut at = 0;
        while out.len() < max && pos < self.limit {
            match frame::check(&buf[at..]) {
                Ok(info) => {
                    if info.offset >= from {
                        let rec = frame::decode(&buf[at..at + info.len], topic, partition)
                            .map_err(|reason| self.corrupt(pos, reason))?;
                        out.push(rec);
                    }
                    at += info.len;
                    pos += info.len as u64;
                }
                Err(FrameError::Corrupt(reason)) => return Err(self.corrupt(pos, reason)),
                Err(FrameError::Incomplete { needed }) => {
                    let left = self.limit - pos;
                    let have = (buf.len() - at) as u64;
                    if have >= left {
                        return Err(self.corrupt(pos, "frame overruns the segment's valid bytes".into()));
                    }
                    buf.drain(..at);
                    at = 0;
                    let want = needed.unwrap_or(frame::HEADER_LEN).max(READ_CHUNK) as u64;
                    let n = want.min(left) as usize;
                    let old = buf.len();
                    if n > old {
                        buf.resize(n, 0);
                        read_exact_at(&self.file, &mut buf[old..], pos + old as u64)
                            .map_err(|e| io_err(&self.path, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn corrupt(&self, position: u64, reason: String) -> Error {
        Error::LogCorrupt { path: self.path.clone(), position, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::FrameRef;

    fn rec(offset: u64, payload: &[u8]) -> LogRecord {
        LogRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp: offset as i64 * 10,
            key: None,
            payload: Arc::from(payload),
            origin: None,
        }
    }

    fn write(seg: &mut Segment, recs: &[LogRecord]) {
        let mut bytes = Vec::new();
        let mut meta = Vec::new();
        for r in recs {
            let before = bytes.len();
            FrameRef::of(r).encode_into(&mut bytes);
            meta.push((r.offset, r.timestamp, bytes.len() - before));
        }
        seg.append(&bytes, &meta).expect("append");
    }

    #[test]
    fn file_names_sort_and_parse() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn sparse_index_reads_from_any_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        // An index entry every 100 bytes; each frame is ~8 + 25 + 50 bytes.
        let mut seg = Segment::create(dir.path(), 10, 100).expect("create");
        let recs: Vec<_> = (10..60).map(|o| rec(o, &[o as u8; 50])).collect();
        write(&mut seg, &recs);
        assert!(seg.index.len() > 5 && seg.index.len() < 50, "sparse: {}", seg.index.len());
        let topic: Arc<str> = Arc::from("t");
        for from in [10, 11, 33, 59] {
            let mut out = Vec::new();
            seg.read_from(from).read_into(from, 5, &topic, 0, &mut out).expect("read");
            assert_eq!(out, recs[(from - 10) as usize..((from - 10 + 5) as usize).min(50)].to_vec());
        }
        let reopened = Segment::open(seg.path.clone(), 10, false, 100).expect("reopen");
        assert_eq!((reopened.len, reopened.end, reopened.max_ts), (seg.len, 60, 590));
        assert_eq!(reopened.index, seg.index, "the index is rebuilt identically");
    }

    #[test]
    fn offset_gap_inside_a_segment_is_corrupt_unless_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seg = Segment::create(dir.path(), 0, 4096).expect("create");
        write(&mut seg, &[rec(0, b"a"), rec(1, b"b"), rec(5, b"gap")]);
        let err = Segment::open(seg.path.clone(), 0, false, 4096).expect_err("not last: refuse");
        assert!(matches!(err, Error::LogCorrupt { .. }), "{err}");
        let fixed = Segment::open(seg.path.clone(), 0, true, 4096).expect("last: truncate");
        assert_eq!(fixed.end, 2);
    }
}
