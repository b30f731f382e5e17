//! Unit tests of [`KeyedStore`] (the random-sequence model test lives in `tests/state_model.rs`).

use super::*;

fn commit<K, V>(scope: &StateScope, s: &mut KeyedStore<K, V>)
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    let mut b = WriteBatch::new();
    s.flush_into(&mut b).expect("flush");
    scope.backend().apply(b).expect("apply");
}

fn tiny_pages() -> KeyedOptions {
    KeyedOptions { max_page_entries: 2, target_page_bytes: 1 << 20 }
}

fn page_keys(scope: &StateScope, name: &str) -> Vec<Vec<u8>> {
    let mut prefix = scope.store_prefix(name);
    prefix.push(PAGE_TAG);
    scope.backend().scan_prefix(&prefix).expect("scan").into_iter().map(|(k, _)| k).collect()
}

#[test]
fn survives_reopen_only_after_flush() {
    let scope = StateScope::in_memory().child("t");
    let mut s: KeyedStore<String, u64> = scope.keyed("counts").expect("open");
    *s.get_or_insert_with("a".into(), || 0) += 5;
    s.insert("b".into(), 1);
    let reopened: KeyedStore<String, u64> = scope.keyed("counts").expect("open");
    assert!(reopened.is_empty(), "nothing committed yet");
    commit(&scope, &mut s);
    s.remove(&"b".into());
    commit(&scope, &mut s);
    let reopened: KeyedStore<String, u64> = scope.keyed("counts").expect("open");
    assert_eq!(reopened.get(&"a".into()), Some(&5));
    assert_eq!(reopened.get(&"b".into()), None);
    assert_eq!(reopened.len(), 1);
}

#[test]
fn expiry_at_exactly_the_watermark_and_rescheduling() {
    let scope = StateScope::in_memory();
    let mut s: KeyedStore<String, u64> = scope.keyed("ttl").expect("open");
    s.insert_with_expiry("x".into(), 1, 100);
    s.insert_with_expiry("y".into(), 2, 200);
    assert!(s.expire(99).is_empty());
    assert_eq!(s.expire(100), vec![("x".to_string(), 1)], "expiry == watermark expires");
    assert!(s.set_expiry(&"y".into(), 300));
    assert_eq!(s.next_expiry(), Some(300), "the rescheduled entry no longer counts at 200");
    assert!(s.expire(250).is_empty());
    commit(&scope, &mut s);
    let mut r: KeyedStore<String, u64> = scope.keyed("ttl").expect("open");
    assert_eq!(r.expiry_of(&"y".into()), Some(300));
    assert_eq!(r.next_expiry(), Some(300));
    assert_eq!(r.expire(300), vec![("y".to_string(), 2)]);
    assert_eq!(r.next_expiry(), None);
}

#[test]
fn next_expiry_forgets_removed_and_cleared_entries() {
    // Regression: the index used to be lazy, so next_expiry reported timestamps of entries that were
    // removed, re-inserted without expiry or rescheduled.
    let mut s: KeyedStore<u32, u32> = KeyedStore::transient("t");
    s.insert_with_expiry(1, 1, 10);
    s.insert_with_expiry(2, 2, 20);
    s.insert_with_expiry(3, 3, 30);
    assert_eq!(s.remove(&1), Some(1));
    assert_eq!(s.next_expiry(), Some(20));
    assert_eq!(s.insert(2, 22), Some(2), "insert without expiry clears it");
    assert_eq!(s.expiry_of(&2), None);
    assert_eq!(s.next_expiry(), Some(30));
    assert!(s.clear_expiry(&3));
    assert_eq!(s.next_expiry(), None);
    assert!(s.expire(i64::MAX).is_empty());
    assert_eq!(s.len(), 2);
    assert!(!s.set_expiry(&9, 5), "absent key");
    assert!(!s.clear_expiry(&9), "absent key");
}

#[test]
fn get_or_insert_keeps_the_expiry_and_reinsert_at_the_same_time_expires_once() {
    let mut s: KeyedStore<u32, u32> = KeyedStore::transient("t");
    s.insert_with_expiry(1, 1, 10);
    *s.get_or_insert_with(1, || 0) += 1;
    s.insert_with_expiry(1, 5, 10);
    s.insert_with_expiry(1, 6, 10);
    assert_eq!(s.expiry_of(&1), Some(10));
    assert_eq!(s.expire(10), vec![(1, 6)]);
    assert!(s.is_empty());
}

#[test]
fn expire_returns_entries_in_expiry_order() {
    let mut s: KeyedStore<u32, i64> = KeyedStore::transient("t");
    for (k, t) in [(1, 50), (2, 10), (3, 30), (4, 10), (5, 99)] {
        s.insert_with_expiry(k, t, t);
    }
    let out = s.expire(50);
    let times: Vec<i64> = out.iter().map(|(_, t)| *t).collect();
    assert_eq!(times, vec![10, 10, 30, 50]);
    assert_eq!(s.next_expiry(), Some(99));
}

#[test]
fn stores_in_one_scope_are_separate() {
    let scope = StateScope::in_memory();
    let mut a: KeyedStore<String, u64> = scope.keyed("a").expect("open");
    a.insert("k".into(), 1);
    commit(&scope, &mut a);
    let b: KeyedStore<String, u64> = scope.keyed("ab").expect("open");
    assert!(b.is_empty());
}

#[test]
fn dirty_len_counts_distinct_changed_keys_including_removals() {
    let scope = StateScope::in_memory();
    let mut s: KeyedStore<u32, u32> = scope.keyed("d").expect("open");
    s.insert(1, 1);
    s.insert(1, 2);
    *s.get_or_insert_with(2, || 0) += 1;
    assert_eq!(s.dirty_len(), 2);
    s.remove(&1);
    s.insert(1, 3);
    s.remove(&1);
    assert_eq!(s.dirty_len(), 2, "key 1 changed three times is one change");
    assert_eq!(s.remove(&7), None);
    assert!(s.get_mut(&7).is_none());
    assert_eq!(s.dirty_len(), 2, "touching absent keys changes nothing");
    commit(&scope, &mut s);
    assert_eq!(s.dirty_len(), 0);
    s.remove(&2);
    s.insert(2, 9);
    assert_eq!(s.dirty_len(), 1, "a committed key removed and re-created");
    let _ = s.get(&2);
    assert_eq!(s.dirty_len(), 1, "reads do not dirty");
}

#[test]
fn pages_grow_and_empty_pages_are_deleted() {
    let scope = StateScope::in_memory();
    let mut s: KeyedStore<u32, u64> = KeyedStore::open_with(&scope, "g", tiny_pages()).expect("open");
    for k in 0..100 {
        s.insert(k, u64::from(k) * 3);
    }
    commit(&scope, &mut s);
    let pages = page_keys(&scope, "g").len();
    assert!(pages >= 40, "100 entries at <= 2 per page on average, got {pages} pages");
    let r: KeyedStore<u32, u64> = scope.keyed("g").expect("reopen with default options");
    assert_eq!(r.len(), 100);
    assert!((0..100).all(|k| r.get(&k) == Some(&(u64::from(k) * 3))));
    assert!(r.dirty.pages.is_empty(), "every entry is in its own page after reopen");
    for k in 0..100 {
        s.remove(&k);
    }
    commit(&scope, &mut s);
    assert!(page_keys(&scope, "g").is_empty(), "emptied pages are deleted");
    assert!(scope.keyed::<u32, u64>("g").expect("reopen").is_empty());
}

#[test]
fn large_values_get_fewer_entries_per_page() {
    let scope = StateScope::in_memory();
    let opts = KeyedOptions { max_page_entries: 128, target_page_bytes: 4096 };
    let mut s: KeyedStore<u32, Vec<u8>> = KeyedStore::open_with(&scope, "big", opts).expect("open");
    for k in 0..64 {
        s.insert(k, vec![7; 1000]);
    }
    commit(&scope, &mut s); // learns ~1 KB per entry
    s.insert(64, vec![7; 1000]);
    commit(&scope, &mut s);
    assert!(page_keys(&scope, "big").len() >= 16, "about 4 entries of 1 KB per 4 KB page");
}

#[test]
fn misplaced_entries_are_moved_on_open() {
    // A layout written by another page function: every entry in page 5.
    let scope = StateScope::in_memory();
    let entries: Vec<(u32, u32, Option<i64>)> = (0..20).map(|k| (k, k + 1, Some(i64::from(k)))).collect();
    let mut prefix = scope.store_prefix("m");
    prefix.push(PAGE_TAG);
    let mut key = prefix.clone();
    key.extend_from_slice(&5_u32.to_be_bytes());
    let mut b = WriteBatch::new();
    b.put(key, Bincode.encode(&entries).expect("encode"));
    scope.backend().apply(b).expect("apply");

    let mut s: KeyedStore<u32, u32> = KeyedStore::open_with(&scope, "m", tiny_pages()).expect("open");
    assert_eq!(s.len(), 20);
    assert_eq!(s.next_expiry(), Some(0));
    assert!(!s.dirty.pages.is_empty(), "misplaced pages are scheduled for rewrite");
    assert_eq!(s.dirty_len(), 0, "no entry changed");
    commit(&scope, &mut s);
    let r: KeyedStore<u32, u32> = scope.keyed("m").expect("reopen");
    assert!(r.dirty.pages.is_empty(), "layout is consistent after one commit");
    assert!((0..20).all(|k| r.get(&k) == Some(&(k + 1)) && r.expiry_of(&k) == Some(i64::from(k))));
}

#[test]
fn corrupt_pages_are_decode_errors_naming_the_store() {
    let scope = StateScope::in_memory();
    let mut prefix = scope.store_prefix("c");
    prefix.push(PAGE_TAG);
    let mut bad_value = prefix.clone();
    bad_value.extend_from_slice(&0_u32.to_be_bytes());
    let mut b = WriteBatch::new();
    b.put(bad_value, vec![0xff, 0xff, 0xff]);
    scope.backend().apply(b).expect("apply");
    let err = scope.keyed::<u32, u32>("c").expect_err("corrupt page");
    assert!(
        matches!(&err, Error::StateDecode { store, reason } if store == "c" && reason.contains("page 0")),
        "{err}"
    );

    let scope = StateScope::in_memory();
    let mut b = WriteBatch::new();
    let mut short_key = prefix.clone();
    short_key.push(1);
    b.put(short_key, Bincode.encode(&Vec::<(u32, u32, Option<i64>)>::new()).expect("encode"));
    scope.backend().apply(b).expect("apply");
    let err = scope.keyed::<u32, u32>("c").expect_err("malformed key");
    assert!(
        matches!(&err, Error::StateDecode { reason, .. } if reason.contains("malformed page key")),
        "{err}"
    );
}

#[test]
fn a_key_stored_in_two_pages_is_an_error() {
    let scope = StateScope::in_memory();
    let mut prefix = scope.store_prefix("dup");
    prefix.push(PAGE_TAG);
    let mut b = WriteBatch::new();
    for id in [0_u32, 1] {
        let mut key = prefix.clone();
        key.extend_from_slice(&id.to_be_bytes());
        b.put(key, Bincode.encode(&vec![(7_u32, id, None::<i64>)]).expect("encode"));
    }
    scope.backend().apply(b).expect("apply");
    let err = scope.keyed::<u32, u32>("dup").expect_err("duplicate");
    assert!(matches!(&err, Error::StateDecode { reason, .. } if reason.contains("twice")), "{err}");
}

/// A value whose encoding fails on demand.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Fragile(bool);

impl Serialize for Fragile {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.0 {
            Err(serde::ser::Error::custom("refused"))
        } else {
            s.serialize_bool(false)
        }
    }
}

#[test]
fn failed_flush_leaves_the_batch_alone_and_keeps_changes_pending() {
    // Regression: flush_into drained the dirty set before encoding, so one bad value lost every other
    // pending change and left half a store in the caller's batch.
    let scope = StateScope::in_memory();
    let mut s: KeyedStore<u32, Fragile> = KeyedStore::open_with(&scope, "f", tiny_pages()).expect("open");
    for k in 0..10 {
        s.insert(k, Fragile(false));
    }
    s.insert(10, Fragile(true));
    let mut batch = WriteBatch::new();
    batch.put(b"offsets".to_vec(), b"42".to_vec());
    let err = s.flush_into(&mut batch).expect_err("encode fails");
    assert!(matches!(&err, Error::StateEncode { store, .. } if store == "f"), "{err}");
    assert_eq!(batch.len(), 1, "only the caller's own op remains");
    assert_eq!(s.dirty_len(), 11);
    s.insert(10, Fragile(false));
    commit(&scope, &mut s);
    let r: KeyedStore<u32, Fragile> = scope.keyed("f").expect("reopen");
    assert_eq!(r.len(), 11);
}

#[test]
fn transient_store_flushes_nothing() {
    let mut s: KeyedStore<u32, u32> = KeyedStore::transient("t");
    s.insert(1, 1);
    let mut batch = WriteBatch::new();
    s.flush_into(&mut batch).expect("flush");
    assert!(batch.is_empty(), "a transient store has no backend keys");
    assert_eq!(s.dirty_len(), 0);
    assert_eq!(s.get(&1), Some(&1));
}

#[test]
fn iter_sees_every_live_entry_across_pages() {
    let scope = StateScope::in_memory();
    let mut s: KeyedStore<u32, u32> = KeyedStore::open_with(&scope, "i", tiny_pages()).expect("open");
    for k in 0..50 {
        s.insert(k, k * 2);
    }
    commit(&scope, &mut s); // splits into many pages
    s.remove(&7);
    let mut seen: Vec<(u32, u32)> = s.iter().map(|(k, v)| (*k, *v)).collect();
    seen.sort_unstable();
    let want: Vec<(u32, u32)> = (0..50).filter(|k| *k != 7).map(|k| (k, k * 2)).collect();
    assert_eq!(seen, want);
    assert!(s.contains_key(&8) && !s.contains_key(&7));
}

#[test]
fn out_of_range_page_ids_are_moved_not_allocated() {
    // A corrupt (or very old) page id must not make open allocate billions of pages; the entries move to
    // real pages and the stray page is deleted in the next commit.
    let scope = StateScope::in_memory();
    let mut prefix = scope.store_prefix("far");
    prefix.push(PAGE_TAG);
    let mut key = prefix.clone();
    key.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut b = WriteBatch::new();
    b.put(key, Bincode.encode(&vec![(1_u32, 10_u32, None::<i64>), (2, 20, Some(5))]).expect("encode"));
    scope.backend().apply(b).expect("apply");

    let mut s: KeyedStore<u32, u32> = scope.keyed("far").expect("open");
    assert!(s.pages.len() <= 2, "page count is bounded by the entries, got {}", s.pages.len());
    assert_eq!((s.get(&1), s.get(&2), s.next_expiry()), (Some(&10), Some(&20), Some(5)));
    commit(&scope, &mut s);
    let keys = page_keys(&scope, "far");
    assert!(!keys.iter().any(|k| k.ends_with(&u32::MAX.to_be_bytes())), "stray page deleted");
    let r: KeyedStore<u32, u32> = scope.keyed("far").expect("reopen");
    assert_eq!(r.len(), 2);
    assert!(r.dirty.pages.is_empty() && r.dirty.stale.is_empty(), "consistent after one commit");
}

#[test]
fn a_store_that_shrank_uses_fewer_pages_after_reopen() {
    let scope = StateScope::in_memory();
    let mut s: KeyedStore<u32, u32> = KeyedStore::open_with(&scope, "s", tiny_pages()).expect("open");
    for k in 0..200 {
        s.insert(k, k);
    }
    commit(&scope, &mut s);
    for k in 3..200 {
        s.remove(&k);
    }
    commit(&scope, &mut s);
    let mut r: KeyedStore<u32, u32> = KeyedStore::open_with(&scope, "s", tiny_pages()).expect("reopen");
    assert!(r.pages.len() <= 4, "3 entries need at most 4 pages, got {}", r.pages.len());
    commit(&scope, &mut r);
    assert!(page_keys(&scope, "s").len() <= 3);
    let r: KeyedStore<u32, u32> = scope.keyed("s").expect("reopen");
    assert_eq!(r.iter().count(), 3);
    assert!((0..3).all(|k| r.get(&k) == Some(&k)));
}
