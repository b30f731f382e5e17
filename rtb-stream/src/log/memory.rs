//! In-memory partition storage: records kept in append-only chunks ("segments") so that retention can
//! drop whole old chunks, as the durable mode drops whole segment files.

use std::collections::VecDeque;

use super::LogRecord;
use crate::time::Timestamp;

#[derive(Debug)]
struct Chunk {
    base: u64,
    records: Vec<LogRecord>,
    bytes: usize,
    max_ts: Timestamp,
}

impl Chunk {
    fn new(base: u64) -> Self {
        Self { base, records: Vec::new(), bytes: 0, max_ts: Timestamp::MIN }
    }
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }
}

/// One partition held in RAM.
#[derive(Debug)]
pub(crate) struct MemoryPartition {
    chunks: VecDeque<Chunk>,
    end: u64,
    segment_bytes: usize,
}

/// Bytes a record accounts for when deciding to start a new chunk.
pub(crate) fn record_size(key: Option<&[u8]>, payload: &[u8]) -> usize {
    // A fixed overhead stands for offset, timestamp, origin and the Arc headers.
    48 + key.map_or(0, <[u8]>::len) + payload.len()
}

impl MemoryPartition {
    /// An empty partition that starts a new chunk every `segment_bytes`.
    pub(crate) fn new(segment_bytes: usize) -> Self {
        Self { chunks: VecDeque::new(), end: 0, segment_bytes: segment_bytes.max(1) }
    }

    /// Appends a record whose `offset` field is overwritten with the next offset, which is returned.
    pub(crate) fn append(&mut self, mut rec: LogRecord) -> u64 {
        let offset = self.end;
        rec.offset = offset;
        let size = record_size(rec.key.as_deref(), &rec.payload);
        let need_new = match self.chunks.back() {
            None => true,
            Some(c) => !c.records.is_empty() && c.bytes + size > self.segment_bytes,
        };
        if need_new {
            self.chunks.push_back(Chunk::new(offset));
        }
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.bytes += size;
            chunk.max_ts = chunk.max_ts.max(rec.timestamp);
            chunk.records.push(rec);
        }
        self.end = offset + 1;
        offset
    }

    /// First offset still held.
    pub(crate) fn start_offset(&self) -> u64 {
        self.chunks.front().map_or(self.end, |c| c.base)
    }

    /// Next offset to be written.
    pub(crate) fn end_offset(&self) -> u64 {
        self.end
    }

    /// Up to `max` records from `from` (or from the start offset if `from` is before it).
    pub(crate) fn read(&self, from: u64, max: usize) -> Vec<LogRecord> {
        let from = from.max(self.start_offset());
        if from >= self.end || max == 0 {
            return Vec::new();
        }
        // Last chunk whose base is <= from.
        let idx = self.chunks.partition_point(|c| c.base <= from).saturating_sub(1);
        let mut out = Vec::with_capacity(max.min((self.end - from) as usize));
        let mut next = from;
        for chunk in self.chunks.iter().skip(idx) {
            if next >= chunk.end() {
                continue;
            }
            let start = (next - chunk.base) as usize;
            let take = (max - out.len()).min(chunk.records.len() - start);
            out.extend_from_slice(&chunk.records[start..start + take]);
            next += take as u64;
            if out.len() == max {
                break;
            }
        }
        out
    }

    /// Drops the whole chunks that end at or before `offset` (every record of them is below it); offsets
    /// keep counting from where they were. Returns the chunks dropped.
    pub(crate) fn release_before(&mut self, offset: u64) -> usize {
        let mut dropped = 0;
        while self.chunks.front().is_some_and(|c| c.end() <= offset) {
            self.chunks.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Drops whole chunks whose newest record is older than `cutoff` (`max_ts < cutoff`). The newest chunk
    /// is dropped too when it qualifies; offsets keep counting from where they were.
    pub(crate) fn enforce_retention(&mut self, cutoff: Timestamp) -> usize {
        let mut dropped = 0;
        while self.chunks.front().is_some_and(|c| c.max_ts < cutoff) {
            self.chunks.pop_front();
            dropped += 1;
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn rec(ts: Timestamp, payload: &[u8]) -> LogRecord {
        LogRecord {
            topic: Arc::from("t"),
            partition: 0,
            offset: u64::MAX,
            timestamp: ts,
            key: None,
            payload: Arc::from(payload),
            origin: None,
        }
    }

    #[test]
    fn release_drops_only_whole_chunks_below_the_offset() {
        let mut p = MemoryPartition::new(100); // one record per chunk
        for i in 0..5 {
            p.append(rec(i, &[0; 10]));
        }
        assert_eq!(p.release_before(3), 3);
        assert_eq!((p.start_offset(), p.end_offset()), (3, 5));
        assert_eq!(p.read(0, 10).iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(p.release_before(2), 0, "nothing below the start is left");
        let mut big = MemoryPartition::new(1 << 20); // everything in one chunk
        for i in 0..5 {
            big.append(rec(i, &[0; 10]));
        }
        assert_eq!(big.release_before(4), 0, "a chunk with a record at or past the offset is kept");
        assert_eq!(big.release_before(5), 1);
        assert_eq!((big.start_offset(), big.end_offset()), (5, 5));
    }

    #[test]
    fn reads_span_chunks_and_respect_max() {
        // Each record is 48 + 10 bytes; 100-byte chunks hold one record each.
        let mut p = MemoryPartition::new(100);
        for i in 0..10 {
            assert_eq!(p.append(rec(i, &[i as u8; 10])), i as u64);
        }
        let got = p.read(3, 4);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4, 5, 6]);
        assert_eq!(got[0].payload[..], [3_u8; 10]);
        assert_eq!(p.read(8, 100).len(), 2, "stops at the end");
        assert!(p.read(10, 5).is_empty(), "from == end");
        assert!(p.read(0, 0).is_empty(), "max == 0");
    }

    #[test]
    fn retention_drops_old_chunks_and_clamps_reads() {
        let mut p = MemoryPartition::new(100);
        for i in 0..6 {
            p.append(rec(i * 10, &[0; 10]));
        }
        assert_eq!(p.enforce_retention(25), 3, "chunks with max_ts 0, 10, 20 are older than 25");
        assert_eq!(p.start_offset(), 3);
        assert_eq!(p.end_offset(), 6);
        assert_eq!(p.read(0, 10).first().map(|r| r.offset), Some(3), "read before start is clamped");
        assert_eq!(p.enforce_retention(i64::MAX), 3);
        assert_eq!(p.start_offset(), 6, "empty partition starts at its end");
        assert_eq!(p.append(rec(0, b"x")), 6, "offsets continue after retention");
    }
}
