//! Durable partition storage: a directory of segment files, a durable checkpoint, and a bounded in-memory
//! cache of the newest records. Appends are written through to the file (one positional write per append
//! or per batch), so an appended record survives a crash of the process; [`DiskPartition::sync`] makes it
//! survive a crash of the machine and records how far that holds in the partition's checkpoint (see
//! [`super::checkpoint`]), which opening uses to refuse corruption of durable records instead of taking it
//! for a torn tail. Old offsets are read back from the files through the segments' sparse indexes, so
//! memory stays bounded however long the log grows.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checkpoint::{self, Checkpoint, DurablePoint};
use super::frame::{self, FrameRef};
use super::memory::record_size;
use super::segment::{self, io_err, Segment, SegmentRead, Tail};
use super::{LogOptions, LogRecord};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// Segments a single read visits at most (a read may return fewer records than asked for).
const MAX_SEGMENTS_PER_READ: usize = 4;

/// One partition on disk.
#[derive(Debug)]
pub(crate) struct DiskPartition {
    topic: Arc<str>,
    partition: u32,
    dir: PathBuf,
    /// Oldest first; never empty: the last one is the active segment.
    segments: Vec<Segment>,
    /// How far the partition is known durable; updated after each fsync.
    checkpoint: Checkpoint,
    cache: VecDeque<LogRecord>,
    cache_bytes: usize,
    opts: LogOptions,
    scratch: Vec<u8>,
    scratch_meta: Vec<(u64, Timestamp, usize)>,
}

/// What to do for a read once the partition lock is released.
#[derive(Debug)]
pub(crate) enum ReadPlan {
    /// Served from the cache.
    Ready(Vec<LogRecord>),
    /// Read these segments, in order, from offset `from`.
    Files { from: u64, reads: Vec<SegmentRead> },
}

impl ReadPlan {
    /// Runs the plan.
    pub(crate) fn execute(self, max: usize, topic: &Arc<str>, partition: u32) -> Result<Vec<LogRecord>> {
        match self {
            ReadPlan::Ready(v) => Ok(v),
            ReadPlan::Files { from, reads } => {
                let mut out = Vec::with_capacity(max.min(4096));
                for r in reads {
                    r.read_into(from, max, topic, partition, &mut out)?;
                    if out.len() >= max {
                        break;
                    }
                }
                Ok(out)
            }
        }
    }
}

impl DiskPartition {
    /// Opens (or creates) the partition directory, scanning its segments against the durable checkpoint:
    /// closed segments must be valid whole, the newest one up to its durable length; only bytes past that
    /// point with no valid frame after them are a torn tail, truncated with a warning (see
    /// [`Segment::open`]). Missing segment files or an end offset before the durable one are
    /// [`Error::LogCorrupt`]. The recovered state is then fsynced and becomes the new durable point.
    pub(crate) fn open(dir: PathBuf, topic: Arc<str>, partition: u32, opts: LogOptions) -> Result<Self> {
        let named = |e: Error| name_partition(e, &topic, partition);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name();
            match name.to_str().and_then(segment::parse_file_name) {
                Some(base) => bases.push(base),
                None if name == checkpoint::FILE => {}
                None => tracing::debug!(file = ?name, dir = %dir.display(), "ignoring non-segment file"),
            }
        }
        bases.sort_unstable();
        let checkpoint = Checkpoint::load(&dir).map_err(named)?;
        let durable = checkpoint.as_ref().map(Checkpoint::point).unwrap_or_default();
        let newest = bases.last().copied().unwrap_or(0);
        if durable.next > 0 && (bases.is_empty() || durable.segment_base > newest) {
            return Err(named(Error::LogCorrupt {
                path: dir.join(segment::file_name(durable.segment_base)),
                position: 0,
                reason: format!(
                    "segment file missing: offsets up to {} were fsynced in it (newest segment present: {})",
                    durable.next,
                    if bases.is_empty() { "none".to_string() } else { segment::file_name(newest) }
                ),
            }));
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let tail = if i + 1 < bases.len() {
                Tail::Closed
            } else if durable.segment_base == base {
                Tail::Active { durable_len: durable.len, durable_next: durable.next }
            } else {
                // The checkpoint predates this segment: the older ones hold everything it covers.
                Tail::Active { durable_len: 0, durable_next: base }
            };
            let seg =
                Segment::open(dir.join(segment::file_name(base)), base, tail, opts.index_interval_bytes)
                    .map_err(named)?;
            if let Some(prev) = segments.last() {
                if prev.end != seg.base {
                    return Err(named(Error::LogCorrupt {
                        path: seg.path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {} but the previous one ends at {}",
                            seg.base, prev.end
                        ),
                    }));
                }
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&dir, 0, opts.index_interval_bytes)?);
            sync_dir(&dir)?;
        }
        let end = segments[segments.len() - 1].end;
        if end < durable.next {
            let last = &segments[segments.len() - 1];
            return Err(named(Error::LogCorrupt {
                path: last.path.clone(),
                position: last.len,
                reason: format!(
                    "the partition ends at offset {end} but offsets up to {} were fsynced",
                    durable.next
                ),
            }));
        }
        let checkpoint = match checkpoint {
            Some(c) => c,
            None => Checkpoint::create(&dir, DurablePoint::default())?,
        };
        let mut part = Self {
            topic,
            partition,
            dir,
            segments,
            checkpoint,
            cache: VecDeque::new(),
            cache_bytes: 0,
            opts,
            scratch: Vec::new(),
            scratch_meta: Vec::new(),
        };
        // What was recovered past the durable point may be only in the page cache (a killed process): make
        // it durable and say so.
        if part.checkpoint.point() != part.written_point() {
            part.active_mut().dirty = true;
            part.sync()?;
        }
        Ok(part)
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty (see the field's invariant).
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// First offset still held.
    pub(crate) fn start_offset(&self) -> u64 {
        self.segments[0].base
    }

    /// Next offset to be written.
    pub(crate) fn end_offset(&self) -> u64 {
        self.active().end
    }

    /// Number of segment files.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Appends records (their `offset` fields are assigned here) and returns their offsets. On an I/O error
    /// the records before the failing write stay appended; none after it are.
    pub(crate) fn append_all(&mut self, records: impl IntoIterator<Item = LogRecord>) -> Result<Vec<u64>> {
        let mut offsets = Vec::new();
        let mut pending: Vec<LogRecord> = Vec::new();
        self.scratch.clear();
        self.scratch_meta.clear();
        let first = self.end_offset();
        for (next, mut rec) in (first..).zip(records) {
            rec.offset = next;
            let frame = FrameRef::of(&rec);
            let body = frame.body_len();
            if body > frame::MAX_BODY {
                self.write_pending(&mut pending)?;
                return Err(Error::Config(format!(
                    "record of {body} bytes for {}[{}] exceeds the {}-byte frame limit",
                    self.topic,
                    self.partition,
                    frame::MAX_BODY
                )));
            }
            let size = (frame::HEADER_LEN + body) as u64;
            let used = self.active().len + self.scratch.len() as u64;
            if used > 0 && used + size > self.opts.segment_bytes {
                self.write_pending(&mut pending)?;
                self.roll()?;
            }
            let before = self.scratch.len();
            frame.encode_into(&mut self.scratch);
            self.scratch_meta.push((rec.offset, rec.timestamp, self.scratch.len() - before));
            offsets.push(next);
            pending.push(rec);
        }
        self.write_pending(&mut pending)?;
        Ok(offsets)
    }

    fn write_pending(&mut self, pending: &mut Vec<LogRecord>) -> Result<()> {
        if self.scratch.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::take(&mut self.scratch);
        let meta = std::mem::take(&mut self.scratch_meta);
        let result = self.active_mut().append(&bytes, &meta);
        self.scratch = bytes;
        self.scratch.clear();
        self.scratch_meta = meta;
        self.scratch_meta.clear();
        result?;
        for rec in pending.drain(..) {
            self.cache_bytes += record_size(rec.key.as_deref(), &rec.payload);
            self.cache.push_back(rec);
        }
        while self.cache_bytes > self.opts.cache_bytes {
            match self.cache.pop_front() {
                Some(old) => self.cache_bytes -= record_size(old.key.as_deref(), &old.payload),
                None => break,
            }
        }
        Ok(())
    }

    /// Closes the active segment (fsynced, so no older segment can be torn after a machine crash), starts a
    /// new one at the end offset and moves the durable checkpoint to it (so a lost newest segment file is
    /// noticed on open).
    fn roll(&mut self) -> Result<()> {
        let end = self.end_offset();
        self.active_mut().sync()?;
        let seg = Segment::create(&self.dir, end, self.opts.index_interval_bytes)?;
        self.segments.push(seg);
        sync_dir(&self.dir)?;
        self.checkpoint.store(DurablePoint { segment_base: end, len: 0, next: end })
    }

    /// Plans a read of up to `max` records from `from` (clamped to the start offset).
    pub(crate) fn plan_read(&self, from: u64, max: usize) -> ReadPlan {
        let from = from.max(self.start_offset());
        if from >= self.end_offset() || max == 0 {
            return ReadPlan::Ready(Vec::new());
        }
        if let Some(first) = self.cache.front() {
            if from >= first.offset {
                let start = (from - first.offset) as usize;
                let end = (start + max).min(self.cache.len());
                return ReadPlan::Ready(self.cache.range(start..end).cloned().collect());
            }
        }
        let idx = self.segments.partition_point(|s| s.base <= from).saturating_sub(1);
        let reads = self.segments[idx..]
            .iter()
            .filter(|s| !s.is_empty())
            .take(MAX_SEGMENTS_PER_READ)
            .enumerate()
            .map(|(i, s)| if i == 0 { s.read_from(from) } else { s.read_from(s.base) })
            .collect();
        ReadPlan::Files { from, reads }
    }

    /// fsyncs every segment written since the last sync, then records the new durable point in the
    /// checkpoint (only if it moved).
    pub(crate) fn sync(&mut self) -> Result<()> {
        for seg in &mut self.segments {
            seg.sync()?;
        }
        let point = self.written_point();
        self.checkpoint.store(point)
    }

    /// The durable point the partition will have once everything written is fsynced.
    fn written_point(&self) -> DurablePoint {
        let active = self.active();
        DurablePoint { segment_base: active.base, len: active.len, next: active.end }
    }

    /// Makes every record before `next` durable ([`DiskPartition::sync`] unless already so).
    pub(crate) fn sync_through(&mut self, next: u64) -> Result<()> {
        if self.checkpoint.point().next >= next {
            return Ok(());
        }
        self.sync()
    }

    /// Deletes whole segments whose newest record is older than `cutoff`. If every record is that old, the
    /// active segment is rolled first so it can go too; offsets keep counting. Returns segments deleted.
    pub(crate) fn enforce_retention(&mut self, cutoff: Timestamp) -> Result<usize> {
        let expired = |s: &Segment| !s.is_empty() && s.max_ts < cutoff;
        if self.segments.iter().all(expired) {
            self.roll()?;
        }
        let mut deleted = 0;
        while self.segments.len() > 1 && expired(&self.segments[0]) {
            let seg = self.segments.remove(0);
            std::fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, e))?;
            tracing::debug!(path = %seg.path.display(), end = seg.end, "retention deleted segment");
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
            let start = self.start_offset();
            while self.cache.front().is_some_and(|r| r.offset < start) {
                if let Some(old) = self.cache.pop_front() {
                    self.cache_bytes -= record_size(old.key.as_deref(), &old.payload);
                }
            }
        }
        Ok(deleted)
    }
}

/// Names the partition in a [`Error::LogCorrupt`] reason (the path names the file and the byte).
fn name_partition(e: Error, topic: &str, partition: u32) -> Error {
    match e {
        Error::LogCorrupt { path, position, reason } => {
            Error::LogCorrupt { path, position, reason: format!("partition {topic}[{partition}]: {reason}") }
        }
        other => other,
    }
}

/// fsyncs a directory so that created, renamed or deleted entries in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(payload_len: usize) -> LogRecord {
        LogRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            payload: Arc::from(vec![7_u8; payload_len]),
            origin: None,
        }
    }

    #[test]
    fn the_durable_point_moves_on_sync_and_roll_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = LogOptions { segment_bytes: 1 << 10, index_interval_bytes: 256, cache_bytes: 1 << 10 };
        let mut p = DiskPartition::open(dir.path().to_path_buf(), Arc::from("t"), 0, opts).expect("open");
        assert_eq!(p.checkpoint.point(), DurablePoint::default());
        let fresh = p.checkpoint.generation();
        p.append_all((0..3).map(|_| rec(100))).expect("append");
        assert_eq!(p.checkpoint.point(), DurablePoint::default(), "appends alone are not durable");
        p.sync().expect("sync");
        assert_eq!(p.checkpoint.point(), p.written_point());
        assert_eq!(p.checkpoint.point().next, 3);
        let synced = p.checkpoint.generation();
        assert_eq!(synced, fresh + 1, "one update per sync that moved the point");
        p.sync().expect("sync again");
        assert_eq!(p.checkpoint.generation(), synced, "nothing new: no checkpoint write");
        // Rolling to a new segment (about 7 records of 133 bytes per KiB) moves the point to it.
        p.append_all((0..10).map(|_| rec(100))).expect("append");
        assert_eq!(p.segment_count(), 2);
        let rolled = p.checkpoint.point();
        assert_eq!((rolled.segment_base, rolled.len), (p.active().base, 0), "{rolled:?}");
        assert_eq!(rolled.next, p.active().base);
        // Reopening finds the same point and the same records.
        let point = {
            p.sync().expect("sync");
            p.checkpoint.point()
        };
        drop(p);
        let p = DiskPartition::open(dir.path().to_path_buf(), Arc::from("t"), 0, opts).expect("reopen");
        assert_eq!((p.checkpoint.point(), p.end_offset()), (point, 13));
    }

    #[test]
    fn memory_stays_bounded_while_old_records_come_from_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = LogOptions { segment_bytes: 64 << 10, index_interval_bytes: 1 << 10, cache_bytes: 10_000 };
        let mut p = DiskPartition::open(dir.path().to_path_buf(), Arc::from("t"), 0, opts).expect("open");
        for _ in 0..100 {
            p.append_all((0..50).map(|_| rec(100))).expect("append");
        }
        assert_eq!(p.end_offset(), 5_000);
        assert!(p.cache_bytes <= 10_000 && p.cache.len() < 100, "cache bounded: {} records", p.cache.len());
        // 5 000 frames of ~133 bytes ≈ 665 KB over 64 KiB segments, one index entry per KiB.
        assert!(p.segment_count() >= 10);
        assert!(matches!(p.plan_read(0, 10), ReadPlan::Files { .. }), "old offsets come from files");
        assert!(matches!(p.plan_read(4_999, 10), ReadPlan::Ready(_)), "the newest come from the cache");
        let topic: Arc<str> = Arc::from("t");
        let old = p.plan_read(1_234, 3).execute(3, &topic, 0).expect("read");
        assert_eq!(old.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1_234, 1_235, 1_236]);
    }
}
