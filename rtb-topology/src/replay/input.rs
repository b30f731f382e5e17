//! Reading replay input: JSON Lines files decoded on a background thread, in batches.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

/// One line of an input file, decoded by the caller's function.
#[derive(Debug)]
pub struct Line<T> {
    /// 0-based line number in its file.
    pub line: u64,
    /// What the decoder made of it.
    pub item: T,
}

/// A file decoded on background threads; lines arrive in file order.
///
/// One thread reads and splits the file into batches of lines; `workers` threads decode batches (round
/// robin); the consumer takes results back in batch order, so the order of lines is kept.
#[derive(Debug)]
pub struct DecodedFile<T> {
    outputs: Vec<Receiver<std::io::Result<Vec<Line<T>>>>>,
    next_worker: usize,
    batch: std::vec::IntoIter<Line<T>>,
    handles: Vec<JoinHandle<()>>,
    path: PathBuf,
    done: bool,
}

const BATCH: usize = 2_048;

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Raw lines of one batch: (line number, bytes).
type RawBatch = std::io::Result<Vec<(u64, Vec<u8>)>>;

impl<T: Send + 'static> DecodedFile<T> {
    /// Starts decoding `path` with `decode(line_bytes, line_number)` on one worker. A missing file reads as
    /// empty when `optional` is set.
    pub fn open(
        path: &Path,
        optional: bool,
        decode: impl Fn(&[u8], u64) -> T + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        Self::open_with_workers(path, optional, 1, decode)
    }

    /// As [`Self::open`], with `workers` decoding threads.
    pub fn open_with_workers(
        path: &Path,
        optional: bool,
        workers: usize,
        decode: impl Fn(&[u8], u64) -> T + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let file = match File::open(path) {
            Ok(f) => Some(f),
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let workers = workers.max(1);
        let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let decode = std::sync::Arc::new(decode);
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        let mut handles = Vec::new();
        for w in 0..workers {
            let (in_tx, in_rx) = sync_channel::<RawBatch>(4);
            let (out_tx, out_rx) = sync_channel(4);
            let decode = std::sync::Arc::clone(&decode);
            handles.push(std::thread::Builder::new().name(format!("decode-{name}-{w}")).spawn(move || {
                for raw in in_rx {
                    let done = match raw {
                        Ok(lines) => out_tx.send(Ok(lines
                            .into_iter()
                            .map(|(line, bytes)| Line { line, item: decode(&bytes, line) })
                            .collect())),
                        Err(e) => out_tx.send(Err(e)),
                    };
                    if done.is_err() {
                        return;
                    }
                }
            })?);
            inputs.push(in_tx);
            outputs.push(out_rx);
        }
        handles.push(std::thread::Builder::new().name(format!("read-{name}")).spawn(move || {
            let Some(file) = file else { return };
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut line_no = 0u64;
            let mut batch = Vec::with_capacity(BATCH);
            let mut target = 0usize;
            loop {
                let mut buf = Vec::with_capacity(512);
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            buf.pop();
                        }
                        if line_no == 0 && buf.starts_with(UTF8_BOM) {
                            // A byte-order mark some editors write at the start of a UTF-8 file is not
                            // part of the first record.
                            buf.drain(..UTF8_BOM.len());
                        }
                        if !buf.is_empty() {
                            batch.push((line_no, buf));
                        }
                        line_no += 1;
                        if batch.len() == BATCH {
                            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                            if inputs[target].send(Ok(full)).is_err() {
                                return;
                            }
                            target = (target + 1) % inputs.len();
                        }
                    }
                    Err(e) => {
                        let _ = inputs[target].send(Err(e));
                        return;
                    }
                }
            }
            if !batch.is_empty() {
                let _ = inputs[target].send(Ok(batch));
            }
        })?);
        Ok(Self {
            outputs,
            next_worker: 0,
            batch: Vec::new().into_iter(),
            handles,
            path: path.to_path_buf(),
            done: false,
        })
    }

    /// The next decoded line, `None` at end of file.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<T>>> {
        loop {
            if let Some(l) = self.batch.next() {
                return Ok(Some(l));
            }
            if self.done {
                return Ok(None);
            }
            match self.outputs[self.next_worker].recv() {
                Ok(Ok(b)) => {
                    self.batch = b.into_iter();
                    self.next_worker = (self.next_worker + 1) % self.outputs.len();
                }
                Ok(Err(e)) => {
                    return Err(std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
                }
                Err(_) => {
                    // The worker whose turn it is has no more batches: the reader is done.
                    self.done = true;
                    for h in self.handles.drain(..) {
                        let _ = h.join();
                    }
                    return Ok(None);
                }
            }
        }
    }
}

/// The key (the `fields`' values joined with `:`, each a top-level string or integer) and the `timestamp`
/// (RFC 3339, or integer milliseconds) of a JSON object line, read without building the object. `None`
/// for what is missing or of another type; `(None, None)` for a line that is not a JSON object.
pub fn scan(line: &[u8], fields: &[String]) -> (Option<String>, Option<rtb_stream::Timestamp>) {
    let mut de = serde_json::Deserializer::from_slice(line);
    match serde::Deserializer::deserialize_map(&mut de, ScanVisitor { fields }) {
        Ok((parts, ts)) => {
            let key = (!fields.is_empty() && parts.iter().all(Option::is_some))
                .then(|| parts.into_iter().flatten().collect::<Vec<_>>().join(":"));
            (key, ts)
        }
        Err(_) => (None, None),
    }
}

struct ScanVisitor<'f> {
    fields: &'f [String],
}

/// A scalar field value: a string or a number, as text.
struct Scalar(Option<String>);

impl<'de> serde::Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'v> serde::de::Visitor<'v> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a value")
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(v.to_owned())))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(Some(v.to_string())))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_unit<E>(self) -> std::result::Result<Scalar, E> {
                Ok(Scalar(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'v>>(self, mut a: A) -> std::result::Result<Scalar, A::Error> {
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_map<A: serde::de::MapAccess<'v>>(self, mut a: A) -> std::result::Result<Scalar, A::Error> {
                while a.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::de::Visitor<'de> for ScanVisitor<'_> {
    type Value = (Vec<Option<String>>, Option<rtb_stream::Timestamp>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut parts = vec![None; self.fields.len()];
        let mut ts = None;
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if let Some(i) = self.fields.iter().position(|f| *f == name) {
                parts[i] = map.next_value::<Scalar>()?.0;
            } else if name == "timestamp" {
                ts = map.next_value::<Scalar>()?.0.and_then(|t| {
                    t.parse::<i64>().ok().or_else(|| rtb_ops::schema::rfc3339::parse(&t).ok())
                });
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok((parts, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_in_order_with_numbers_skipping_blank_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.jsonl");
        let mut text = String::new();
        for i in 0..5_000 {
            text.push_str(&format!("{i}\r\n"));
            if i == 10 {
                text.push('\n');
            }
        }
        std::fs::write(&p, text).expect("write");
        for workers in [1, 3] {
            let mut f = DecodedFile::open_with_workers(&p, false, workers, |b, _| {
                String::from_utf8_lossy(b).parse::<u32>().ok()
            })
            .expect("open");
            let mut n = 0;
            while let Some(l) = f.next_line().expect("read") {
                assert_eq!(l.item, Some(n), "{workers} workers keep the file order");
                assert_eq!(l.line, u64::from(n) + u64::from(n > 10));
                n += 1;
            }
            assert_eq!(n, 5_000);
        }
    }

    #[test]
    fn a_utf8_bom_at_the_start_of_the_file_is_not_part_of_the_first_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, b"\xEF\xBB\xBF{\"a\":1}\n\xEF\xBB\xBF{\"a\":2}\n").expect("write");
        let mut f = DecodedFile::open(&p, false, |b, _| serde_json::from_slice::<serde_json::Value>(b).is_ok())
            .expect("open");
        let first = f.next_line().expect("read").expect("line 0");
        assert!(first.item, "the first line decodes: the BOM is not part of it");
        let second = f.next_line().expect("read").expect("line 1");
        assert!(!second.item, "a BOM anywhere else is data, and invalid JSON");
        assert!(f.next_line().expect("read").is_none());
    }

    #[test]
    fn missing_optional_file_is_empty_missing_required_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut f = DecodedFile::open(&dir.path().join("none"), true, |_, _| ()).expect("optional");
        assert!(f.next_line().expect("read").is_none());
        let err = DecodedFile::open(&dir.path().join("none"), false, |_, _| ()).expect_err("required");
        assert!(err.to_string().contains("none"));
    }
}
