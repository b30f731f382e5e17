//! The on-disk record frame.
//!
//! ```text
//! frame   = body_len: u32 LE | crc32(body): u32 LE | body
//! body    = offset: u64 LE | timestamp: i64 LE
//!         | key_len: u32 LE (u32::MAX = no key) | key bytes
//!         | payload_len: u32 LE | payload bytes
//!         | has_origin: u8 (0 | 1) [ | topic_len: u32 LE | topic (UTF-8) | partition: u32 LE | offset: u64 LE ]
//! ```
//!
//! The length prefix lets a reader skip frames; the CRC catches torn writes and bit rot.

use std::sync::Arc;

use super::LogRecord;
use crate::record::SourceCoord;
use crate::time::Timestamp;

/// Bytes before the body.
pub(crate) const HEADER_LEN: usize = 8;
/// Smallest possible body: offset, timestamp, key length, payload length, origin flag.
const MIN_BODY: usize = 8 + 8 + 4 + 4 + 1;
/// Smallest possible whole frame.
pub(crate) const MIN_FRAME: usize = HEADER_LEN + MIN_BODY;
/// Largest body accepted; anything claiming more is garbage (or a record nobody should write).
pub(crate) const MAX_BODY: usize = 256 << 20;
const NO_KEY: u32 = u32::MAX;

/// The part of a record a frame is made of, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameRef<'a> {
    pub offset: u64,
    pub timestamp: Timestamp,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub origin: Option<&'a SourceCoord>,
}

impl<'a> FrameRef<'a> {
    /// Borrows a record's fields.
    pub(crate) fn of(rec: &'a LogRecord) -> Self {
        Self {
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: rec.key.as_deref(),
            payload: &rec.payload,
            origin: rec.origin.as_ref(),
        }
    }

    /// Body length of this frame.
    pub(crate) fn body_len(&self) -> usize {
        MIN_BODY
            + self.key.map_or(0, <[u8]>::len)
            + self.payload.len()
            + self.origin.map_or(0, |o| 4 + o.topic.len() + 4 + 8)
    }

    /// Appends the whole frame (header and body) to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let body_len = self.body_len();
        let start = out.len();
        out.reserve(HEADER_LEN + body_len);
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]); // CRC, filled in below
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.timestamp.to_le_bytes());
        match self.key {
            None => out.extend_from_slice(&NO_KEY.to_le_bytes()),
            Some(k) => {
                out.extend_from_slice(&(k.len() as u32).to_le_bytes());
                out.extend_from_slice(k);
            }
        }
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(self.payload);
        match self.origin {
            None => out.push(0),
            Some(o) => {
                out.push(1);
                out.extend_from_slice(&(o.topic.len() as u32).to_le_bytes());
                out.extend_from_slice(o.topic.as_bytes());
                out.extend_from_slice(&o.partition.to_le_bytes());
                out.extend_from_slice(&o.offset.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out[start + HEADER_LEN..]);
        out[start + 4..start + HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What a valid frame at the front of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameInfo {
    /// Whole frame length (header + body).
    pub len: usize,
    /// The record's offset.
    pub offset: u64,
    /// The record's timestamp.
    pub timestamp: Timestamp,
}

/// Why the front of a buffer is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The buffer ends before the frame does; `needed` is the whole frame length when known.
    Incomplete { needed: Option<usize> },
    /// The bytes cannot be a frame.
    Corrupt(String),
}

/// Validates the frame at the front of `buf` (length bounds and CRC) and reads its offset and timestamp.
pub(crate) fn check(buf: &[u8]) -> Result<FrameInfo, FrameError> {
    if buf.len() < HEADER_LEN {
        return Err(FrameError::Incomplete { needed: None });
    }
    let body_len = read_u32(buf, 0) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&body_len) {
        return Err(FrameError::Corrupt(format!("implausible frame length {body_len}")));
    }
    let len = HEADER_LEN + body_len;
    if buf.len() < len {
        return Err(FrameError::Incomplete { needed: Some(len) });
    }
    let body = &buf[HEADER_LEN..len];
    let expected = read_u32(buf, 4);
    let actual = crc32fast::hash(body);
    if expected != actual {
        return Err(FrameError::Corrupt(format!(
            "CRC mismatch (stored {expected:#010x}, computed {actual:#010x})"
        )));
    }
    Ok(FrameInfo { len, offset: read_u64(body, 0), timestamp: read_u64(body, 8) as i64 })
}

/// The whole-frame length and record offset a frame at the front of `buf` claims, if its length is
/// plausible; nothing is validated (a cheap filter before [`check`]). `None` if `buf` holds fewer than the
/// 16 bytes needed.
pub(crate) fn peek(buf: &[u8]) -> Option<(usize, u64)> {
    if buf.len() < HEADER_LEN + 8 {
        return None;
    }
    let body_len = read_u32(buf, 0) as usize;
    (MIN_BODY..=MAX_BODY).contains(&body_len).then(|| (HEADER_LEN + body_len, read_u64(buf, HEADER_LEN)))
}

/// Decodes a frame already validated by [`check`] (`frame` is exactly the frame's bytes).
pub(crate) fn decode(frame: &[u8], topic: &Arc<str>, partition: u32) -> Result<LogRecord, String> {
    let mut r = Reader { buf: &frame[HEADER_LEN..], pos: 0 };
    let offset = r.u64()?;
    let timestamp = r.u64()? as i64;
    let key_len = r.u32()?;
    let key = if key_len == NO_KEY { None } else { Some(Arc::from(r.bytes(key_len as usize)?)) };
    let payload_len = r.u32()? as usize;
    let payload = Arc::from(r.bytes(payload_len)?);
    let origin = match r.u8()? {
        0 => None,
        1 => {
            let topic_len = r.u32()? as usize;
            let name = std::str::from_utf8(r.bytes(topic_len)?)
                .map_err(|e| format!("origin topic is not UTF-8: {e}"))?;
            Some(SourceCoord::new(name, r.u32()?, r.u64()?))
        }
        other => return Err(format!("bad origin flag {other}")),
    };
    if r.pos != r.buf.len() {
        return Err(format!("{} trailing bytes in frame body", r.buf.len() - r.pos));
    }
    Ok(LogRecord { topic: Arc::clone(topic), partition, offset, timestamp, key, payload, origin })
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            format!("field of {n} bytes at {} overruns the {}-byte body", self.pos, self.buf.len())
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(read_u32(self.bytes(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(read_u64(self.bytes(8)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(origin: bool, key: bool) -> LogRecord {
        LogRecord {
            topic: Arc::from("clicks"),
            partition: 3,
            offset: 77,
            timestamp: -5,
            key: key.then(|| Arc::from(&b"user-1"[..])),
            payload: Arc::from(&b"{\"a\":1}"[..]),
            origin: origin.then(|| SourceCoord::new("raw", 2, 9)),
        }
    }

    #[test]
    fn round_trip_with_and_without_key_and_origin() {
        for (origin, key) in [(false, false), (true, false), (false, true), (true, true)] {
            let rec = sample(origin, key);
            let mut buf = Vec::new();
            FrameRef::of(&rec).encode_into(&mut buf);
            assert_eq!(buf.len(), HEADER_LEN + FrameRef::of(&rec).body_len());
            let info = check(&buf).expect("valid");
            assert_eq!(info, FrameInfo { len: buf.len(), offset: 77, timestamp: -5 });
            assert_eq!(decode(&buf, &rec.topic, 3).expect("decode"), rec);
        }
    }

    #[test]
    fn empty_key_is_not_no_key() {
        let mut rec = sample(false, false);
        rec.key = Some(Arc::from(&b""[..]));
        let mut buf = Vec::new();
        FrameRef::of(&rec).encode_into(&mut buf);
        assert_eq!(decode(&buf, &rec.topic, 3).expect("decode").key.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn truncated_frame_is_incomplete_and_flipped_bit_is_corrupt() {
        let rec = sample(true, true);
        let mut buf = Vec::new();
        FrameRef::of(&rec).encode_into(&mut buf);
        assert_eq!(check(&buf[..5]), Err(FrameError::Incomplete { needed: None }));
        assert_eq!(check(&buf[..buf.len() - 1]), Err(FrameError::Incomplete { needed: Some(buf.len()) }));
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(matches!(check(&bad), Err(FrameError::Corrupt(m)) if m.contains("CRC")));
    }

    #[test]
    fn garbage_length_is_corrupt_not_a_huge_allocation() {
        let garbage = [0xff_u8; 16];
        assert!(matches!(check(&garbage), Err(FrameError::Corrupt(_))));
        let zeros = [0_u8; 16];
        assert!(matches!(check(&zeros), Err(FrameError::Corrupt(_))), "zero length is below the minimum");
    }
}
