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
pub(crate) fn write_all_at(file: &File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
pub(crate) fn write_all_at(file: &File, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
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

/// How much of a segment file is known to be durable, which decides what a bad frame in it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Not the newest segment of its partition: it was fsynced whole when the next one was started.
    Closed,
    /// The newest segment: its first `durable_len` bytes (up to offset `durable_next`) were fsynced.
    Active {
        /// Bytes known durable (a frame boundary).
        durable_len: u64,
        /// Offset after the last durable record.
        durable_next: u64,
    },
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
    /// from `base`) and rebuilds the index.
    ///
    /// - A [`Tail::Closed`] segment (not the newest of its partition; fsynced when it was closed) must be
    ///   valid to its last byte: any bad frame is [`Error::LogCorrupt`].
    /// - In the [`Tail::Active`] (newest) segment, a bad or partial frame is a **torn tail** only if it
    ///   lies at or after the durable length and no valid frame (length, CRC, plausible offset) follows
    ///   it anywhere in the file; then the file is truncated there with a warning. Anything else — a bad
    ///   frame inside the durable part, a file shorter than its durable length, a valid frame after the
    ///   bad one, a valid frame with an unexpected offset — is [`Error::LogCorrupt`] and the file is left
    ///   untouched.
    pub(crate) fn open(path: PathBuf, base: u64, tail: Tail, index_interval: u64) -> Result<Self> {
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
        let (durable_len, durable_next) = match tail {
            Tail::Closed => (file_len, None),
            Tail::Active { durable_len, durable_next } => (durable_len, Some(durable_next)),
        };
        // The end offset at the durable byte position, once the scan reaches it on a frame boundary.
        let mut end_at_durable = (durable_len == 0).then_some(base);
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_start = 0_u64; // file position of buf[0]
        let mut problem: Option<String> = None;
        while seg.len < file_len {
            let at = (seg.len - buf_start) as usize;
            match frame::check(&buf[at..]) {
                Ok(info) => {
                    if info.offset != seg.end {
                        // A frame that passes its CRC was written whole: a wrong offset is never torn.
                        return Err(seg.corrupt(
                            seg.len,
                            format!("valid frame with offset {} where {} was expected", info.offset, seg.end),
                        ));
                    }
                    let pos = seg.len;
                    seg.note_appended(info, pos);
                    if seg.len == durable_len {
                        end_at_durable = Some(seg.end);
                    }
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
        let Some(durable_next) = durable_next else {
            return match problem {
                None => Ok(seg),
                Some(reason) => Err(seg.corrupt(seg.len, format!("{reason} in a closed segment"))),
            };
        };
        if let Some(reason) = problem {
            if seg.len < durable_len {
                return Err(seg.corrupt(
                    seg.len,
                    format!(
                        "{reason} inside the durable part of the segment (bytes 0..{durable_len}, offsets up \
                         to {durable_next} were fsynced)"
                    ),
                ));
            }
            if let Some((pos, offset)) = seg.find_valid_frame(seg.len + 1, file_len, seg.end)? {
                return Err(seg.corrupt(
                    seg.len,
                    format!(
                        "{reason}, followed by a valid frame (offset {offset}) at byte {pos}: damaged data, \
                         not a torn tail"
                    ),
                ));
            }
            tracing::warn!(
                path = %seg.path.display(),
                position = seg.len,
                dropped_bytes = file_len - seg.len,
                durable_bytes = durable_len,
                %reason,
                "truncating torn tail of the log (past its last durable point)"
            );
            seg.file.set_len(seg.len).map_err(|e| io_err(&seg.path, e))?;
            seg.file.sync_all().map_err(|e| io_err(&seg.path, e))?;
        }
        if seg.len < durable_len {
            return Err(seg.corrupt(
                file_len,
                format!(
                    "the segment ends at byte {file_len} but its first {durable_len} bytes (offsets up to \
                     {durable_next}) were fsynced: committed records are missing"
                ),
            ));
        }
        if end_at_durable != Some(durable_next) {
            let found =
                end_at_durable.map_or_else(|| "no frame boundary".to_string(), |e| format!("offset {e}"));
            return Err(seg.corrupt(
                durable_len,
                format!("the durable checkpoint expects offset {durable_next} at byte {durable_len}, found {found}"),
            ));
        }
        Ok(seg)
    }

    /// The first position in `from..file_len` where a valid frame starts whose offset could follow
    /// `next` (at least `next`, at most one more per smallest possible frame in between), with its offset.
    fn find_valid_frame(&self, from: u64, file_len: u64, next: u64) -> Result<Option<(u64, u64)>> {
        const PEEK: usize = frame::HEADER_LEN + 8; // length, CRC and the record's offset
        let max_offset = next + (file_len - from.min(file_len)) / frame::MIN_FRAME as u64 + 1;
        let mut buf = vec![0_u8; READ_CHUNK + PEEK];
        let mut chunk_start = from;
        while chunk_start + PEEK as u64 <= file_len {
            let n = (file_len - chunk_start).min(buf.len() as u64) as usize;
            read_exact_at(&self.file, &mut buf[..n], chunk_start).map_err(|e| io_err(&self.path, e))?;
            let candidates = n.saturating_sub(PEEK - 1).min(READ_CHUNK);
            for i in 0..candidates {
                let pos = chunk_start + i as u64;
                let Some((len, offset)) = frame::peek(&buf[i..]) else {
                    continue;
                };
                if offset < next || offset > max_offset || pos + len as u64 > file_len {
                    continue;
                }
                let valid = if i + len <= n {
                    frame::check(&buf[i..i + len]).is_ok()
                } else {
                    let mut whole = vec![0_u8; len];
                    read_exact_at(&self.file, &mut whole, pos).map_err(|e| io_err(&self.path, e))?;
                    frame::check(&whole).is_ok()
                };
                if valid {
                    return Ok(Some((pos, offset)));
                }
            }
            chunk_start += candidates.max(1) as u64;
        }
        Ok(None)
    }

    fn corrupt(&self, position: u64, reason: String) -> Error {
        Error::LogCorrupt { path: self.path.clone(), position, reason }
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
        let reopened = Segment::open(seg.path.clone(), 10, Tail::Closed, 100).expect("reopen");
        assert_eq!((reopened.len, reopened.end, reopened.max_ts), (seg.len, 60, 590));
        assert_eq!(reopened.index, seg.index, "the index is rebuilt identically");
    }

    fn active(durable_len: u64, durable_next: u64) -> Tail {
        Tail::Active { durable_len, durable_next }
    }

    #[test]
    fn offset_gap_inside_a_segment_is_corrupt_even_in_the_newest() {
        // A frame that passes its CRC was written whole, so a wrong offset is damage, not a torn write
        // (this used to be truncated away in the newest segment).
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seg = Segment::create(dir.path(), 0, 4096).expect("create");
        write(&mut seg, &[rec(0, b"a"), rec(1, b"b"), rec(5, b"gap")]);
        let len = std::fs::metadata(&seg.path).expect("stat").len();
        let err = Segment::open(seg.path.clone(), 0, Tail::Closed, 4096).expect_err("closed: refuse");
        assert!(matches!(err, Error::LogCorrupt { .. }), "{err}");
        let err = Segment::open(seg.path.clone(), 0, active(0, 0), 4096).expect_err("newest: refuse too");
        let gap_at = seg.len - (frame::HEADER_LEN as u64 + 8 + 8 + 4 + 3 + 4 + 1);
        assert!(
            matches!(&err, Error::LogCorrupt { position, reason, .. }
            if *position == gap_at && reason.contains("offset 5 where 2")),
            "{err}"
        );
        assert_eq!(std::fs::metadata(&seg.path).expect("stat").len(), len, "nothing truncated");
    }

    #[test]
    fn the_durable_point_decides_between_torn_tail_and_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seg = Segment::create(dir.path(), 0, 4096).expect("create");
        write(&mut seg, &(0..4).map(|o| rec(o, b"payload")).collect::<Vec<_>>());
        let durable = seg.len;
        write(&mut seg, &(4..6).map(|o| rec(o, b"payload")).collect::<Vec<_>>());
        let path = seg.path.clone();
        let whole = std::fs::read(&path).expect("read");
        let frame_len = (whole.len() as u64 - durable) / 2;

        // Last frame damaged, past the durable point, nothing valid after it: torn, truncated.
        let mut bytes = whole.clone();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let torn = Segment::open(path.clone(), 0, active(durable, 4), 4096).expect("torn tail");
        assert_eq!((torn.end, torn.len), (5, durable + frame_len));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), durable + frame_len);

        // The same damage inside the durable part (the checkpoint says all 6 were fsynced): refused.
        std::fs::write(&path, &bytes).expect("write");
        let err = Segment::open(path.clone(), 0, active(whole.len() as u64, 6), 4096).expect_err("durable");
        assert!(
            matches!(&err, Error::LogCorrupt { position, .. } if *position == durable + frame_len),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "untouched");

        // Damage past the durable point but followed by a valid frame: refused.
        let mut bytes = whole.clone();
        bytes[(durable + 10) as usize] ^= 0x10;
        std::fs::write(&path, &bytes).expect("write");
        let err = Segment::open(path.clone(), 0, active(durable, 4), 4096).expect_err("valid frame after");
        assert!(
            matches!(&err, Error::LogCorrupt { position, reason, .. }
            if *position == durable && reason.contains("offset 5")),
            "{err}"
        );

        // A file shorter than its durable length (cut on a frame boundary): refused.
        std::fs::write(&path, &whole[..durable as usize]).expect("write");
        let err = Segment::open(path.clone(), 0, active(whole.len() as u64, 6), 4096).expect_err("short");
        assert!(matches!(&err, Error::LogCorrupt { reason, .. } if reason.contains("missing")), "{err}");

        // A checkpoint whose durable length is not a frame boundary: refused.
        std::fs::write(&path, &whole).expect("write");
        let err = Segment::open(path.clone(), 0, active(durable + 1, 5), 4096).expect_err("not a boundary");
        assert!(
            matches!(&err, Error::LogCorrupt { reason, .. } if reason.contains("no frame boundary")),
            "{err}"
        );
    }
}
