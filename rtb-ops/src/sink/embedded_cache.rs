//! [`EmbeddedCache`]: the [`Cache`] on an [`EmbeddedStore`], every multi-key write in one transaction.

use std::path::Path;

use rtb_stream::codec::{Bincode, Codec};
use serde::{de::DeserializeOwned, Serialize};

use super::keys::{expiry_bound, expiry_key, i64_bytes, i64_from, merge_shards, spend_key, window_key, window_prefix, Pruner};
use super::store::{EmbeddedStore, Tree, Tx};
use super::types::*;
use super::{ranking_key, Cache};
use crate::calendar::Day;
use crate::error::{Error, Result};
use crate::schema::{Placement, WireEnum};

const SINK: &str = "embedded-cache";

/// A durable [`Cache`] in an [`EmbeddedStore`]. Cheap to clone (handles to the same tables); `Send + Sync`.
///
/// Trees (all prefixed `cache/`): `rankings` (`rtb:{placement}:{category}` → entries),
/// `windows` (scope ‖ id ‖ window start ‖ shard → row), `totals/campaign`, `totals/category`,
/// `spend` (campaign ‖ day → KRW), `spend_keys` (applied idempotency key → its event time),
/// `spend_expiry` (event time ‖ key: the pruning index of `spend_keys`), `marks`.
#[derive(Debug, Clone)]
pub struct EmbeddedCache {
    store: EmbeddedStore,
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
pub(crate) fn prune_index(
    sink: &'static str,
    store: &EmbeddedStore,
    keys: &Tree,
    index: &Tree,
    before: rtb_stream::Timestamp,
) -> Result<u64> {
    let bound = expiry_bound(before);
    let mut pruned = 0u64;
    loop {
        let chunk = index.keys_before(&bound, 1_000);
        if chunk.is_empty() {
            return Ok(pruned);
        }
        store.transaction(sink, "prune", |t| {
            for ik in &chunk {
                t.remove(keys, &ik[8..]);
                t.remove(index, ik);
            }
            Ok(())
        })?;
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

fn add_totals(t: &mut Tx<'_>, tree: &Tree, key: &str, delta: Metrics) -> Result<()> {
    if delta == Metrics::default() {
        return Ok(());
    }
    let current: Metrics = match t.get(tree, key.as_bytes())? {
        Some(b) => dec(SINK, key.as_bytes(), &b)?,
        None => Metrics::default(),
    };
    t.insert(tree, key.as_bytes(), enc("totals", &current.plus(delta))?)?;
    Ok(())
}

impl EmbeddedCache {
    /// Opens (or creates) a cache in directory `path`, keeping idempotency keys for the default
    /// [`KeyRetention`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::with_store(&EmbeddedStore::open(path)?))
    }

    /// [`Self::open`] with a chosen key retention.
    pub fn open_with(path: impl AsRef<Path>, retention: KeyRetention) -> Result<Self> {
        Ok(Self::open(path)?.with_retention(retention))
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

    /// A cache in a temporary directory (removed when the cache is dropped).
    pub fn temporary() -> Result<Self> {
        Ok(Self::with_store(&EmbeddedStore::temporary()?))
    }

    /// Uses the `cache/*` tables of an open store (so one directory can hold both sinks).
    pub fn with_store(store: &EmbeddedStore) -> Self {
        let t = |name: &str| store.tree(&format!("cache/{name}"));
        Self {
            store: store.clone(),
            rankings: t("rankings"),
            windows: t("windows"),
            campaign_totals: t("totals/campaign"),
            category_totals: t("totals/category"),
            spend: t("spend"),
            spend_keys: t("spend_keys"),
            spend_expiry: t("spend_expiry"),
            marks: t("marks"),
            pruner: std::sync::Arc::new(Pruner::new(KeyRetention::default())),
        }
    }

    /// Makes every write so far survive a crash of the machine (each write survives one of the process
    /// when it returns).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    fn scan_windows(&self, prefix: &[u8]) -> Result<Vec<WindowMetrics>> {
        let mut rows = Vec::new();
        for (k, v) in self.windows.scan_prefix(SINK, "window_metrics", prefix)? {
            rows.push(dec::<WindowMetrics>(SINK, &k, &v)?);
        }
        let mut merged = merge_shards(rows);
        merged.sort_by(|a, b| (&a.id, a.window_start).cmp(&(&b.id, b.window_start)));
        Ok(merged)
    }

    fn totals(&self, tree: &Tree, key: &str) -> Result<Metrics> {
        match tree.get(SINK, "totals", key.as_bytes())? {
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
        self.rankings.insert(SINK, "put_ranking", ranking_key(placement, category).as_bytes(), value)
    }

    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>> {
        let key = ranking_key(placement, category);
        match self.rankings.get(SINK, "ranking", key.as_bytes())? {
            Some(b) => Ok(dec::<(String, String, Vec<RankedEntry>)>(SINK, key.as_bytes(), &b)?.2),
            None => Ok(Vec::new()),
        }
    }

    fn rankings(&self) -> Result<Vec<(Placement, String, Vec<RankedEntry>)>> {
        let mut out = Vec::new();
        for (k, v) in self.rankings.iter(SINK, "rankings")? {
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
        let (ct, cat) = (&self.campaign_totals, &self.category_totals);
        self.store.transaction(SINK, "write_window_metrics", |t| {
            let old = t.insert(&self.windows, &key, value)?;
            if row.scope != MetricsScope::Campaign {
                return Ok(());
            }
            if let Some(old) = old {
                let old: WindowMetrics = dec(SINK, &key, &old)?;
                let neg = Metrics::default().minus(old.metrics);
                add_totals(t, ct, &old.campaign_id, neg)?;
                add_totals(t, cat, &old.category, neg)?;
            }
            add_totals(t, ct, &row.campaign_id, row.metrics)?;
            add_totals(t, cat, &row.category, row.metrics)?;
            Ok(())
        })
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
        let (spend, keys, index) = (&self.spend, &self.spend_keys, &self.spend_expiry);
        let r = self.store.transaction(SINK, "add_spend_once", |t| {
            let current = t.get(spend, &key)?.and_then(|b| i64_from(&b)).unwrap_or(0);
            if t.get(keys, idempotency_key.as_bytes())?.is_some() {
                return Ok((current, false));
            }
            t.insert(keys, idempotency_key.as_bytes(), i64_bytes(event_time).to_vec())?;
            t.insert(index, &expiry, Vec::new())?;
            let total = current + delta;
            t.insert(spend, &key, i64_bytes(total).to_vec())?;
            Ok((total, true))
        })?;
        if r.1 {
            self.pruner.note(event_time);
        }
        Ok(r)
    }

    fn prune_spend_keys(&self, before: rtb_stream::Timestamp) -> Result<u64> {
        prune_index(SINK, &self.store, &self.spend_keys, &self.spend_expiry, before)
    }

    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        let v = self.spend.get(SINK, "spend", &spend_key(campaign_id, day))?;
        Ok(v.and_then(|b| i64_from(&b)).unwrap_or(0))
    }

    fn mark_once(&self, key: &str) -> Result<bool> {
        self.marks.insert_if_absent(SINK, "mark_once", key.as_bytes(), Vec::new())
    }
}
