//! Model test of the state layer: random operation sequences on a [`KeyedStore`] over a [`MemoryBackend`]
//! and a [`SledBackend`], compared after every step with a `BTreeMap` model that knows what is committed.
//!
//! - between commits the store equals the model's working state (values, expiries, `len`, `next_expiry`,
//!   `dirty_len`, `iter`);
//! - `expire(wm)` returns exactly the model's entries with expiry `<= wm`, in expiry order;
//! - a commit writes the store's changes and an offset into one batch;
//! - a restart (clean: commit, drop, reopen the backend) and a crash (drop without flushing, reopen) both
//!   leave exactly the last committed state and offset.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use rtb_stream::state::{
    KeyedOptions, KeyedStore, MemoryBackend, OffsetMap, SledBackend, StateScope, StoreBackend, WriteBatch,
};
use rtb_stream::Timestamp;

const KEYS: u8 = 24;
const STORE: &str = "counters";

#[derive(Debug, Clone)]
enum Op {
    Insert(u8, u64),
    InsertWithExpiry(u8, u64, Timestamp),
    /// `*get_or_insert_with(k, || 0) += d`
    Add(u8, u64),
    /// `get_mut(k).map(|v| *v += d)`
    GetMutAdd(u8, u64),
    SetExpiry(u8, Timestamp),
    ClearExpiry(u8),
    Remove(u8),
    Expire(Timestamp),
    Commit,
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let ts = -5_i64..60;
    prop_oneof![
        4 => (key.clone(), 0_u64..1000).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (key.clone(), 0_u64..1000, ts.clone()).prop_map(|(k, v, t)| Op::InsertWithExpiry(k, v, t)),
        5 => (key.clone(), 1_u64..100).prop_map(|(k, d)| Op::Add(k, d)),
        2 => (key.clone(), 1_u64..100).prop_map(|(k, d)| Op::GetMutAdd(k, d)),
        2 => (key.clone(), ts.clone()).prop_map(|(k, t)| Op::SetExpiry(k, t)),
        1 => key.clone().prop_map(Op::ClearExpiry),
        3 => key.prop_map(Op::Remove),
        2 => ts.prop_map(Op::Expire),
        3 => Just(Op::Commit),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// The model: working and committed maps `key → (value, expiry)`, keys changed since the last commit, and
/// the number of commits (written as the offset with each commit).
#[derive(Debug, Default)]
struct Model {
    working: BTreeMap<u8, (u64, Option<Timestamp>)>,
    committed: BTreeMap<u8, (u64, Option<Timestamp>)>,
    changed: BTreeSet<u8>,
    commits: u64,
}

/// A backend that can be dropped and reopened.
enum Backend {
    Memory(Arc<MemoryBackend>),
    Sled(tempfile::TempDir),
}

impl Backend {
    fn open(&self) -> Arc<dyn StoreBackend> {
        match self {
            Backend::Memory(m) => Arc::clone(m) as Arc<dyn StoreBackend>,
            Backend::Sled(dir) => Arc::new(open_sled(dir.path())),
        }
    }
}

/// Reopens sled. After the previous handle is dropped, sled 0.34's background flusher may hold the
/// directory lock for a moment longer; retry briefly rather than fail on that.
fn open_sled(dir: &Path) -> SledBackend {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match SledBackend::open(dir.join("state"), "state") {
            Ok(b) => return b,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("open sled: {e}"),
        }
    }
}

struct Harness {
    backend: Backend,
    scope: StateScope,
    store: KeyedStore<u8, u64>,
    options: KeyedOptions,
    model: Model,
}

impl Harness {
    fn new(backend: Backend, options: KeyedOptions) -> Self {
        let scope = StateScope::new(backend.open(), "job/3");
        let store = KeyedStore::open_with(&scope, STORE, options).expect("open store");
        Self { backend, scope, store, options, model: Model::default() }
    }

    fn commit(&mut self) {
        let mut batch = WriteBatch::new();
        self.store.flush_into(&mut batch).expect("flush_into");
        let mut offsets = OffsetMap::new();
        offsets.insert(("input".to_string(), 3), self.model.commits + 1);
        self.scope.write_offsets(&offsets, &mut batch).expect("offsets");
        self.scope.backend().apply(batch).expect("apply");
        self.model.commits += 1;
        self.model.committed = self.model.working.clone();
        self.model.changed.clear();
    }

    /// Drops the store and the backend handle (for sled: closes the database), then reopens both.
    fn reopen(&mut self) {
        self.store = KeyedStore::transient(STORE);
        // The scope holds the last handle of the sled database: close it before opening it again.
        self.scope = StateScope::in_memory();
        self.scope = StateScope::new(self.backend.open(), "job/3");
        self.store = KeyedStore::open_with(&self.scope, STORE, self.options).expect("reopen store");
        self.model.working = self.model.committed.clone();
        self.model.changed.clear();
        let offsets = self.scope.read_offsets().expect("read offsets");
        let want: OffsetMap = if self.model.commits == 0 {
            OffsetMap::new()
        } else {
            [(("input".to_string(), 3), self.model.commits)].into_iter().collect()
        };
        assert_eq!(offsets, want, "offsets are the last committed ones");
    }

    fn apply(&mut self, op: &Op) {
        let m = &mut self.model;
        match *op {
            Op::Insert(k, v) => {
                let old = m.working.insert(k, (v, None)).map(|e| e.0);
                m.changed.insert(k);
                assert_eq!(self.store.insert(k, v), old);
            }
            Op::InsertWithExpiry(k, v, t) => {
                let old = m.working.insert(k, (v, Some(t))).map(|e| e.0);
                m.changed.insert(k);
                assert_eq!(self.store.insert_with_expiry(k, v, t), old);
            }
            Op::Add(k, d) => {
                m.working.entry(k).or_insert((0, None)).0 += d;
                m.changed.insert(k);
                *self.store.get_or_insert_with(k, || 0) += d;
            }
            Op::GetMutAdd(k, d) => {
                if let Some(e) = m.working.get_mut(&k) {
                    e.0 += d;
                    m.changed.insert(k);
                }
                if let Some(v) = self.store.get_mut(&k) {
                    *v += d;
                }
            }
            Op::SetExpiry(k, t) => {
                let present = m.working.get_mut(&k).map(|e| e.1 = Some(t)).is_some();
                if present {
                    m.changed.insert(k);
                }
                assert_eq!(self.store.set_expiry(&k, t), present);
            }
            Op::ClearExpiry(k) => {
                let present = m.working.get_mut(&k).map(|e| e.1 = None).is_some();
                if present {
                    m.changed.insert(k);
                }
                assert_eq!(self.store.clear_expiry(&k), present);
            }
            Op::Remove(k) => {
                let old = m.working.remove(&k).map(|e| e.0);
                if old.is_some() {
                    m.changed.insert(k);
                }
                assert_eq!(self.store.remove(&k), old);
            }
            Op::Expire(wm) => {
                let mut want: Vec<(Timestamp, u8, u64)> = m
                    .working
                    .iter()
                    .filter_map(|(k, (v, t))| t.filter(|t| *t <= wm).map(|t| (t, *k, *v)))
                    .collect();
                for (_, k, _) in &want {
                    m.working.remove(k);
                    m.changed.insert(*k);
                }
                want.sort_unstable();
                let expiry: BTreeMap<u8, Timestamp> = want.iter().map(|(t, k, _)| (*k, *t)).collect();
                // A key the model does not expire gets `MIN`, so the comparison below fails.
                let got: Vec<(Timestamp, u8, u64)> = self
                    .store
                    .expire(wm)
                    .into_iter()
                    .map(|(k, v)| (expiry.get(&k).copied().unwrap_or(i64::MIN), k, v))
                    .collect();
                assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "not in expiry order: {got:?}");
                let mut got = got;
                got.sort_unstable();
                assert_eq!(got, want, "expire({wm})");
            }
            Op::Commit => self.commit(),
            Op::Restart => {
                self.commit();
                self.reopen();
            }
            Op::Crash => self.reopen(),
        }
    }

    fn check(&self, after: &Op) {
        let m = &self.model;
        for k in 0..KEYS {
            let want = m.working.get(&k);
            assert_eq!(self.store.get(&k), want.map(|e| &e.0), "value of {k} after {after:?}");
            assert_eq!(self.store.expiry_of(&k), want.and_then(|e| e.1), "expiry of {k} after {after:?}");
            assert_eq!(self.store.contains_key(&k), want.is_some());
        }
        assert_eq!(self.store.len(), m.working.len(), "len after {after:?}");
        let next = m.working.values().filter_map(|e| e.1).min();
        assert_eq!(self.store.next_expiry(), next, "next_expiry after {after:?}");
        assert_eq!(self.store.dirty_len(), m.changed.len(), "dirty_len after {after:?}");
        let mut all: Vec<(u8, u64)> = self.store.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort_unstable();
        let want: Vec<(u8, u64)> = m.working.iter().map(|(k, e)| (*k, e.0)).collect();
        assert_eq!(all, want, "iter after {after:?}");
    }
}

fn options() -> impl Strategy<Value = KeyedOptions> {
    // Tiny pages split often and put several keys in one page; the default keeps one page.
    prop_oneof![Just(1_usize), Just(2), Just(5), Just(128)]
        .prop_map(|max_page_entries| KeyedOptions { max_page_entries, ..KeyedOptions::default() })
}

fn run(backend: Backend, options: KeyedOptions, ops: &[Op]) {
    let mut h = Harness::new(backend, options);
    for op in ops {
        h.apply(op);
        h.check(op);
    }
    // Whatever happened, a final crash leaves exactly the committed state.
    h.apply(&Op::Crash);
    h.check(&Op::Crash);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn memory_backend_matches_the_model(options in options(), ops in prop::collection::vec(op(), 1..80)) {
        run(Backend::Memory(Arc::new(MemoryBackend::new())), options, &ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn sled_backend_matches_the_model(options in options(), ops in prop::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        run(Backend::Sled(dir), options, &ops);
    }
}

#[test]
fn crash_before_the_first_commit_leaves_an_empty_store() {
    let mut h = Harness::new(Backend::Memory(Arc::new(MemoryBackend::new())), KeyedOptions::default());
    for op in [Op::Insert(1, 5), Op::Add(2, 3), Op::Crash] {
        h.apply(&op);
        h.check(&op);
    }
    assert!(h.store.is_empty());
}

#[test]
fn crash_after_page_growth_keeps_the_old_layout_readable() {
    // Growth happens inside flush_into; a crash before that commit must leave the old pages intact.
    let dir = tempfile::tempdir().expect("tempdir");
    let options = KeyedOptions { max_page_entries: 1, ..KeyedOptions::default() };
    let mut h = Harness::new(Backend::Sled(dir), options);
    let mut ops: Vec<Op> = (0..3).map(|k| Op::Insert(k, u64::from(k))).collect();
    ops.push(Op::Commit);
    ops.extend((3..KEYS).map(|k| Op::InsertWithExpiry(k, 7, i64::from(k))));
    ops.extend([Op::Crash, Op::Expire(10), Op::Restart, Op::Add(23, 1), Op::Crash]);
    for op in &ops {
        h.apply(op);
        h.check(op);
    }
    assert_eq!(h.store.len(), 3);
}
