//! [`EmbeddedCache`]: the [`Cache`] on sled, every multi-key write in one sled transaction.

use std::path::Path;

use rtb_stream::codec::{Bincode, Codec};
use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use super::keys::{expiry_bound, expiry_key, i64_bytes, i64_from, merge_shards, spend_key, window_key, window_prefix, Pruner};
use super::types::*;
use super::{ranking_key, Cache};
use crate::calendar::Day;
use crate::error::{Error, Result};
use crate::schema::{Placement, WireEnum};

const SINK: &str = "embedded-cache";

/// A durable [`Cache`] on sled. Cheap to clone (handles to the same trees); `Send + Sync`.
///
/// Trees (all prefixed `cache/`): `rankings` (`rtb:{placement}:{category}` → entries),
/// `windows` (scope ‖ id ‖ window start ‖ shard → row), `totals/campaign`, `totals/category`,
/// `spend` (campaign ‖ day → KRW), `spend_keys` (applied idempotency key → its event time),
/// `spend_expiry` (event time ‖ key: the pruning index of `spend_keys`), `marks`.
#[derive(Debug, Clone)]
pub struct EmbeddedCache {
    db: sled::Db,
    rankings: Tree,
    windows: Tree,
    campaign_totals: Tree,
    category_totals: Tree,
    spend: Tree,
    spend_keys: Tree,
    spend_expiry: Tree,
    marks: Tree,
    pruner: std::sync::Arc<Pruner>,
}

/// Removes the keys of `index` entries (`event time ‖ key`) before `before` from `keys`, and the entries,
/// in transactions of up to 1 000; returns how many went.
pub(crate) fn prune_index(sink: &'static str, keys: &Tree, index: &Tree, before: rtb_stream::Timestamp) -> Result<u64> {
    let bound = expiry_bound(before);
    let mut pruned = 0u64;
    loop {
        let mut chunk = Vec::new();
        for k in index.range(..bound.clone()).keys().take(1_000) {
            chunk.push(k.map_err(|e| Error::sink(sink, "prune", e))?);
        }
        if chunk.is_empty() {
            return Ok(pruned);
        }
        let r = (keys, index).transaction(|(keys, index)| {
            for ik in &chunk {
                keys.remove(&ik[8..])?;
                index.remove(ik)?;
            }
            Ok(())
        });
        tx(sink, "prune", r)?;
        pruned += chunk.len() as u64;
    }
}

pub(crate) fn enc<T: Serialize + ?Sized>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard())
        .map_err(|e| Error::Encode { what, reason: e.to_string() })
}

pub(crate) fn dec<T: Serialize + DeserializeOwned>(sink: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    Bincode
        .decode(bytes)
        .map_err(|reason| Error::SinkCorrupt { sink, key: String::from_utf8_lossy(key).into_owned(), reason })
}

/// Turns a sled transaction result into ours.
pub(crate) fn tx<T>(sink: &'static str, op: &'static str, r: Result<T, TransactionError<Error>>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(Error::sink(sink, op, e)),
    }
}

pub(crate) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<Error>>;

pub(crate) fn abort<T>(e: Error) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn add_totals(tree: &TransactionalTree, key: &str, delta: Metrics) -> TxResult<()> {
    if delta == Metrics::default() {
        return Ok(());
    }
    let current: Metrics = match tree.get(key.as_bytes())? {
        Some(b) => match dec(SINK, key.as_bytes(), &b) {
            Ok(m) => m,
            Err(e) => return abort(e),
        },
        None => Metrics::default(),
    };
    match enc("totals", &current.plus(delta)) {
        Ok(v) => tree.insert(key.as_bytes(), v)?,
        Err(e) => return abort(e),
    };
    Ok(())
}

impl EmbeddedCache {
    /// Opens (or creates) a cache database at `path`, keeping idempotency keys for the default
    /// [`KeyRetention`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let db = sled::open(path.as_ref()).map_err(|e| Error::sink(SINK, "open", e))?;
        Self::with_db(&db)
    }

    /// [`Self::open`] with a chosen key retention.
    pub fn open_with(path: impl AsRef<Path>, retention: KeyRetention) -> Result<Self> {
        let db = sled::open(path.as_ref()).map_err(|e| Error::sink(SINK, "open", e))?;
        Ok(Self::with_db(&db)?.with_retention(retention))
    }

    /// This cache keeping idempotency keys for `retention` (replaces the retention of this handle).
    pub fn with_retention(mut self, retention: KeyRetention) -> Self {
        self.pruner = std::sync::Arc::new(Pruner::new(retention));
        self
    }

    /// How many spend idempotency keys are held (for tests and monitoring).
    pub fn spend_keys_held(&self) -> usize {
        self.spend_keys.len()
    }

    /// A cache in a temporary sled database (deleted on drop).
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open().map_err(|e| Error::sink(SINK, "open", e))?;
        Self::with_db(&db)
    }

    /// Uses the `cache/*` trees of an already open sled database (so one directory can hold both sinks).
    pub fn with_db(db: &sled::Db) -> Result<Self> {
        let t = |name: &str| db.open_tree(format!("cache/{name}")).map_err(|e| Error::sink(SINK, "open", e));
        Ok(Self {
            db: db.clone(),
            rankings: t("rankings")?,
            windows: t("windows")?,
            campaign_totals: t("totals/campaign")?,
            category_totals: t("totals/category")?,
            spend: t("spend")?,
            spend_keys: t("spend_keys")?,
            spend_expiry: t("spend_expiry")?,
            marks: t("marks")?,
            pruner: std::sync::Arc::new(Pruner::new(KeyRetention::default())),
        })
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(|e| Error::sink(SINK, "flush", e))
    }

    fn scan_windows(&self, prefix: &[u8]) -> Result<Vec<WindowMetrics>> {
        let mut rows = Vec::new();
        for kv in self.windows.scan_prefix(prefix) {
            let (k, v) = kv.map_err(|e| Error::sink(SINK, "window_metrics", e))?;
            rows.push(dec::<WindowMetrics>(SINK, &k, &v)?);
        }
        let mut merged = merge_shards(rows);
        merged.sort_by(|a, b| (&a.id, a.window_start).cmp(&(&b.id, b.window_start)));
        Ok(merged)
    }

    fn totals(&self, tree: &Tree, key: &str) -> Result<Metrics> {
        match tree.get(key.as_bytes()).map_err(|e| Error::sink(SINK, "totals", e))? {
            Some(b) => dec(SINK, key.as_bytes(), &b),
            None => Ok(Metrics::default()),
        }
    }
}

impl Cache for EmbeddedCache {
    fn sync(&self) -> Result<()> {
        if let Some(cutoff) = self.pruner.due() {
            let n = self.prune_spend_keys(cutoff)?;
            self.pruner.done(cutoff);
            tracing::debug!(cutoff, pruned = n, "pruned spend idempotency keys");
        }
        self.flush()
    }

    fn put_ranking(&self, placement: Placement, category: &str, entries: &[RankedEntry]) -> Result<()> {
        let value = enc("ranking", &(placement.as_str(), category, entries))?;
        self.rankings.insert(ranking_key(placement, category), value).map_err(|e| Error::sink(SINK, "put_ranking", e))?;
        Ok(())
    }

    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>> {
        let key = ranking_key(placement, category);
        match self.rankings.get(&key).map_err(|e| Error::sink(SINK, "ranking", e))? {
            Some(b) => Ok(dec::<(String, String, Vec<RankedEntry>)>(SINK, key.as_bytes(), &b)?.2),
            None => Ok(Vec::new()),
        }
    }

    fn rankings(&self) -> Result<Vec<(Placement, String, Vec<RankedEntry>)>> {
        let mut out = Vec::new();
        for kv in self.rankings.iter() {
            let (k, v) = kv.map_err(|e| Error::sink(SINK, "rankings", e))?;
            let (p, category, entries): (String, String, Vec<RankedEntry>) = dec(SINK, &k, &v)?;
            let placement = Placement::parse(&p).ok_or_else(|| Error::SinkCorrupt {
                sink: SINK,
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: format!("unknown placement `{p}`"),
            })?;
            out.push((placement, category, entries));
        }
        Ok(out)
    }

    fn write_window_metrics(&self, row: &WindowMetrics) -> Result<()> {
        let key = window_key(row);
        let value = enc("window metrics", row)?;
        let r = (&self.windows, &self.campaign_totals, &self.category_totals).transaction(|(w, ct, cat)| {
            let old = w.insert(key.as_slice(), value.as_slice())?;
            if row.scope != MetricsScope::Campaign {
                return Ok(());
            }
            if let Some(old) = old {
                let old: WindowMetrics = match dec(SINK, &key, &old) {
                    Ok(o) => o,
                    Err(e) => return abort(e),
                };
                let neg = Metrics::default().minus(old.metrics);
                add_totals(ct, &old.campaign_id, neg)?;
                add_totals(cat, &old.category, neg)?;
            }
            add_totals(ct, &row.campaign_id, row.metrics)?;
            add_totals(cat, &row.category, row.metrics)?;
            Ok(())
        });
        tx(SINK, "write_window_metrics", r)
    }

    fn window_metrics(&self, scope: MetricsScope, id: &str) -> Result<Vec<WindowMetrics>> {
        self.scan_windows(&window_prefix(scope, Some(id)))
    }

    fn all_window_metrics(&self, scope: MetricsScope) -> Result<Vec<WindowMetrics>> {
        self.scan_windows(&window_prefix(scope, None))
    }

    fn campaign_totals(&self, campaign_id: &str) -> Result<Metrics> {
        self.totals(&self.campaign_totals, campaign_id)
    }

    fn category_totals(&self, category: &str) -> Result<Metrics> {
        self.totals(&self.category_totals, category)
    }

    fn add_spend_once(&self, campaign_id: &str, day: Day, delta: i64, idempotency_key: &str, event_time: rtb_stream::Timestamp) -> Result<(i64, bool)> {
        let key = spend_key(campaign_id, day);
        let expiry = expiry_key(event_time, idempotency_key.as_bytes());
        let r = (&self.spend, &self.spend_keys, &self.spend_expiry).transaction(|(spend, keys, index)| {
            let current = spend.get(key.as_slice())?.and_then(|b| i64_from(&b)).unwrap_or(0);
            if keys.get(idempotency_key.as_bytes())?.is_some() {
                return Ok((current, false));
            }
            keys.insert(idempotency_key.as_bytes(), &i64_bytes(event_time))?;
            index.insert(expiry.as_slice(), &[])?;
            let total = current + delta;
            spend.insert(key.as_slice(), &i64_bytes(total))?;
            Ok((total, true))
        });
        let r = tx(SINK, "add_spend_once", r)?;
        if r.1 {
            self.pruner.note(event_time);
        }
        Ok(r)
    }

    fn prune_spend_keys(&self, before: rtb_stream::Timestamp) -> Result<u64> {
        prune_index(SINK, &self.spend_keys, &self.spend_expiry, before)
    }

    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        let v = self.spend.get(spend_key(campaign_id, day)).map_err(|e| Error::sink(SINK, "spend", e))?;
        Ok(v.and_then(|b| i64_from(&b)).unwrap_or(0))
    }

    fn mark_once(&self, key: &str) -> Result<bool> {
        let r = self
            .marks
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(&[] as &[u8]))
            .map_err(|e| Error::sink(SINK, "mark_once", e))?;
        Ok(r.is_ok())
    }
}
