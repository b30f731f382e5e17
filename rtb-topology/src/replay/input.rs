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

/// A file decoded on its own thread; batches arrive in file order.
#[derive(Debug)]
pub struct DecodedFile<T> {
    rx: Receiver<std::io::Result<Vec<Line<T>>>>,
    batch: std::vec::IntoIter<Line<T>>,
    handle: Option<JoinHandle<()>>,
    path: PathBuf,
}

const BATCH: usize = 2_048;

impl<T: Send + 'static> DecodedFile<T> {
    /// Starts decoding `path` with `decode(line_bytes, line_number)`. A missing file reads as empty when
    /// `optional` is set.
    pub fn open(
        path: &Path,
        optional: bool,
        decode: impl Fn(&[u8], u64) -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        let file = match File::open(path) {
            Ok(f) => Some(f),
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let (tx, rx) = sync_channel(8);
        let handle = std::thread::Builder::new()
            .name(format!("decode-{}", path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default()))
            .spawn(move || {
                let Some(file) = file else { return };
                let mut reader = BufReader::with_capacity(1 << 20, file);
                let mut buf = Vec::with_capacity(1024);
                let mut line_no = 0u64;
                let mut batch = Vec::with_capacity(BATCH);
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) => break,
                        Ok(_) => {
                            let mut end = buf.len();
                            while end > 0 && (buf[end - 1] == b'\n' || buf[end - 1] == b'\r') {
                                end -= 1;
                            }
                            if end > 0 {
                                batch.push(Line { line: line_no, item: decode(&buf[..end], line_no) });
                            }
                            line_no += 1;
                            if batch.len() == BATCH
                                && tx.send(Ok(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)))).is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
            })?;
        Ok(Self { rx, batch: Vec::new().into_iter(), handle: Some(handle), path: path.to_path_buf() })
    }

    /// The next decoded line, `None` at end of file.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<T>>> {
        loop {
            if let Some(l) = self.batch.next() {
                return Ok(Some(l));
            }
            match self.rx.recv() {
                Ok(Ok(b)) => self.batch = b.into_iter(),
                Ok(Err(e)) => {
                    return Err(std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
                }
                Err(_) => {
                    if let Some(h) = self.handle.take() {
                        let _ = h.join();
                    }
                    return Ok(None);
                }
            }
        }
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
        let mut f = DecodedFile::open(&p, false, |b, _| String::from_utf8_lossy(b).parse::<u32>().ok())
            .expect("open");
        let mut n = 0;
        while let Some(l) = f.next_line().expect("read") {
            assert_eq!(l.item, Some(n));
            assert_eq!(l.line, u64::from(n) + u64::from(n > 10));
            n += 1;
        }
        assert_eq!(n, 5_000);
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
