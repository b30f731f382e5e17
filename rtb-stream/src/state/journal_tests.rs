use std::collections::BTreeMap;
use std::io::Write;

use proptest::prelude::*;

use super::*;

fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in ops {
        match v {
            Some(v) => b.put(k.as_bytes().to_vec(), v.as_bytes().to_vec()),
            None => b.delete(k.as_bytes().to_vec()),
        }
    }
    b
}

fn content(s: &JournalBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.scan_prefix(b"").expect("scan")
}

fn journal_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(JOURNAL)).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn batches_survive_a_reopen_and_deletes_stay_deleted() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let s = JournalBackend::open(dir.path()).expect("open");
        s.apply(batch(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))])).expect("apply");
        s.apply(batch(&[("b", None), ("a", Some("10"))])).expect("apply");
        assert_eq!(s.get(b"a").expect("get"), Some(b"10".to_vec()));
        // Not flushed: the journal write alone survives the process (the OS holds it).
    }
    let s = JournalBackend::open(dir.path()).expect("reopen");
    assert_eq!(content(&s), vec![(b"a".to_vec(), b"10".to_vec()), (b"c".to_vec(), b"3".to_vec())]);
    assert_eq!(s.scan_prefix(b"c").expect("scan").len(), 1);
}

#[test]
fn a_torn_tail_past_the_durable_length_is_dropped_and_writing_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let s = JournalBackend::open(dir.path()).expect("open");
        s.apply(batch(&[("a", Some("1"))])).expect("apply");
        s.flush().expect("flush");
        s.apply(batch(&[("b", Some("2"))])).expect("apply");
    }
    // A crash in the middle of the last write: its frame is cut short.
    let len = journal_len(dir.path());
    let f = OpenOptions::new().write(true).open(dir.path().join(JOURNAL)).expect("journal");
    f.set_len(len - 3).expect("cut");
    let s = JournalBackend::open(dir.path()).expect("a torn tail is not corruption");
    assert_eq!(content(&s), vec![(b"a".to_vec(), b"1".to_vec())]);
    s.apply(batch(&[("c", Some("3"))])).expect("apply after the cut");
    drop(s);
    let s = JournalBackend::open(dir.path()).expect("reopen");
    assert_eq!(content(&s), vec![(b"a".to_vec(), b"1".to_vec()), (b"c".to_vec(), b"3".to_vec())]);
}

#[test]
fn a_damaged_frame_inside_the_durable_part_or_before_valid_frames_is_refused_and_left_as_it_is() {
    for flush_all in [true, false] {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let s = JournalBackend::open(dir.path()).expect("open");
            s.apply(batch(&[("a", Some("1"))])).expect("apply");
            s.apply(batch(&[("b", Some("2"))])).expect("apply");
            if flush_all {
                s.flush().expect("flush");
            }
        }
        let path = dir.path().join(JOURNAL);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[FRAME_HEADER + 6] ^= 0x10; // inside the first frame's body
        std::fs::write(&path, &bytes).expect("write");
        let err = JournalBackend::open(dir.path()).expect_err("corruption is refused");
        let text = err.to_string() + &format!("{:?}", err);
        assert!(text.contains("corrupt at byte 0"), "{text}");
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "the file is left untouched");
        assert!(JournalBackend::checksum_of(dir.path()).is_err());
    }
}

#[test]
fn the_last_frame_damaged_inside_the_durable_part_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let s = JournalBackend::open(dir.path()).expect("open");
        s.apply(batch(&[("a", Some("1"))])).expect("apply");
        s.apply(batch(&[("b", Some("2"))])).expect("apply");
        s.flush().expect("flush");
    }
    let path = dir.path().join(JOURNAL);
    let mut bytes = std::fs::read(&path).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    let err = JournalBackend::open(dir.path()).expect_err("refused");
    assert!(format!("{err:?}").contains("inside the part made durable"), "{err:?}");
}

#[test]
fn compaction_keeps_the_content_and_a_snapshot_followed_by_its_old_journal_replays_the_same() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = JournalOptions { compact_at: 4_096 };
    let mut model = BTreeMap::new();
    {
        let s = JournalBackend::open_with(dir.path(), opts).expect("open");
        for i in 0..2_000u32 {
            let k = format!("k{:04}", i % 300);
            let v = format!("v{i}");
            if i % 7 == 0 {
                s.apply(batch(&[(&k, None)])).expect("apply");
                model.remove(k.as_bytes());
            } else {
                s.apply(batch(&[(&k, Some(&v))])).expect("apply");
                model.insert(k.into_bytes(), v.into_bytes());
            }
        }
        assert!(dir.path().join(SNAPSHOT).exists(), "compacted at least once");
        assert!(journal_len(dir.path()) < 20_000, "the journal was emptied: {}", journal_len(dir.path()));
        assert_eq!(content(&s), model.clone().into_iter().collect::<Vec<_>>());
    }
    let s = JournalBackend::open_with(dir.path(), opts).expect("reopen");
    assert_eq!(content(&s), model.clone().into_iter().collect::<Vec<_>>());
    let sum = s.checksum();
    drop(s);
    assert_eq!(JournalBackend::checksum_of(dir.path()).expect("checksum"), sum);

    // A crash between renaming a snapshot and emptying the journal: the snapshot holds everything and the
    // journal is replayed again on top of it.
    let s = JournalBackend::open_with(dir.path(), JournalOptions { compact_at: u64::MAX }).expect("open");
    s.apply(batch(&[("z", Some("1")), ("k0001", None)])).expect("apply");
    let journal = std::fs::read(dir.path().join(JOURNAL)).expect("journal");
    s.compact(&mut s.writer.lock()).expect("compact");
    drop(s);
    std::fs::OpenOptions::new().append(true).open(dir.path().join(JOURNAL)).expect("j").write_all(&journal).expect("w");
    model.insert(b"z".to_vec(), b"1".to_vec());
    model.remove(b"k0001".as_slice());
    let s = JournalBackend::open(dir.path()).expect("reopen");
    assert_eq!(content(&s), model.into_iter().collect::<Vec<_>>());
}

#[test]
fn a_damaged_snapshot_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let s = JournalBackend::open_with(dir.path(), JournalOptions { compact_at: 0 }).expect("open");
        s.apply(batch(&[("a", Some("1")), ("b", Some("2"))])).expect("apply");
    }
    let path = dir.path().join(SNAPSHOT);
    let mut bytes = std::fs::read(&path).expect("snapshot");
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40;
    std::fs::write(&path, bytes).expect("write");
    let err = JournalBackend::open(dir.path()).expect_err("refused");
    assert!(format!("{err:?}").contains("snapshot"), "{err:?}");
}

#[test]
fn a_directory_of_another_store_format_is_refused_not_read_as_empty() {
    let dir = tempfile::tempdir().expect("tmp");
    drop(sled::open(dir.path()).expect("sled"));
    let err = JournalBackend::open(dir.path()).expect_err("refused");
    assert!(format!("{err}{err:?}").contains("another format"), "{err:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Any sequence of batches, reopened at any points, with compaction at a tiny threshold, holds what a
    /// `BTreeMap` model holds.
    #[test]
    fn matches_a_model_across_reopens_and_compactions(
        steps in proptest::collection::vec(
            (proptest::collection::vec((0u8..20, proptest::option::of(0u16..500)), 1..6), any::<bool>()),
            1..60,
        )
    ) {
        let dir = tempfile::tempdir().expect("tmp");
        let opts = JournalOptions { compact_at: 256 };
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut s = JournalBackend::open_with(dir.path(), opts).expect("open");
        for (ops, reopen) in steps {
            let mut b = WriteBatch::new();
            for (k, v) in ops {
                let key = vec![b'k', k];
                match v {
                    Some(v) => {
                        b.put(key.clone(), v.to_le_bytes().to_vec());
                        model.insert(key, v.to_le_bytes().to_vec());
                    }
                    None => {
                        b.delete(key.clone());
                        model.remove(&key);
                    }
                }
            }
            s.apply(b).expect("apply");
            if reopen {
                s.flush().expect("flush");
                drop(s);
                s = JournalBackend::open_with(dir.path(), opts).expect("reopen");
            }
            prop_assert_eq!(content(&s), model.clone().into_iter().collect::<Vec<_>>());
        }
    }
}
