//! [`EmbeddedDatabase`]: the [`Database`] on an [`EmbeddedStore`], every multi-row change in one
//! transaction.

use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use super::embedded_cache::{dec, enc, prune_index};
use super::keys::{expiry_key, part, Pruner};
use super::store::{EmbeddedStore, Tree, Tx};
use super::types::*;
use super::Database;
use crate::calendar::{Day, DEFAULT_TIME_ZONE};
use crate::error::Result;
use crate::schema::Placement;

const SINK: &str = "embedded-database";
/// Key of the last ledger sequence number in `db/meta`.
const LEDGER_SEQ: &[u8] = b"ledger_seq";

/// A durable [`Database`] in an [`EmbeddedStore`]. Cheap to clone; `Send + Sync`.
///
/// Trees (prefixed `db/`): `advertisers`, `ledger_rows` (sequence number, big-endian → row: the
/// account history, never pruned), `ledger_keys` (idempotency key → [`KeyMeta`]: the unique constraint,
/// with the entry's fingerprint and event time), `ledger_expiry` (event time ‖ key: the pruning index of
/// `ledger_keys`), `conversions` (order id → row), `duplicate_orders` (order id ‖ source coordinates, or the
/// encoded row without them → row: the later conversions of an order, each once), `campaigns`,
/// `campaign_index` (placement ‖ category ‖ campaign id), `alerts` (key → row), `meta` (the ledger's last
/// sequence number). A ledger entry touches five trees in one transaction; [`Database::apply_ledger_batch`]
/// puts a whole batch in one.
#[derive(Debug, Clone)]
pub struct EmbeddedDatabase {
    store: EmbeddedStore,
    advertisers: Tree,
    ledger_rows: Tree,
    ledger_keys: Tree,
    ledger_expiry: Tree,
    pruner: std::sync::Arc<Pruner>,
    conversions: Tree,
    duplicate_orders: Tree,
    campaigns: Tree,
    campaign_index: Tree,
    alerts: Tree,
    meta: Tree,
}

fn index_prefix(placement: Placement, category: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(category.len() + 24);
    part(&mut k, placement.as_str().as_bytes());
    part(&mut k, category.as_bytes());
    k
}

fn index_key(row: &CampaignRow) -> Vec<u8> {
    let mut k = index_prefix(row.placement, &row.category);
    k.extend_from_slice(row.campaign_id.as_bytes());
    k
}

fn tx_get<T: Serialize + DeserializeOwned>(t: &Tx<'_>, tree: &Tree, key: &[u8]) -> Result<Option<T>> {
    match t.get(tree, key)? {
        None => Ok(None),
        Some(b) => dec(SINK, key, &b).map(Some),
    }
}

fn tx_put<T: Serialize + DeserializeOwned>(t: &mut Tx<'_>, tree: &Tree, key: &[u8], what: &'static str, v: &T) -> Result<()> {
    t.insert(tree, key, enc(what, v)?)?;
    Ok(())
}

/// What `ledger_keys` stores per idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
struct KeyMeta {
    fingerprint: u128,
    event_time: rtb_stream::Timestamp,
    seq: u64,
}

/// One ledger entry inside a transaction: unique key check (with fingerprint), balance move, row insert.
fn apply_one(db: &EmbeddedDatabase, t: &mut Tx<'_>, entry: &LedgerEntry) -> Result<LedgerOutcome> {
    let key = entry.idempotency_key.as_bytes();
    if let Some(meta) = tx_get::<KeyMeta>(t, &db.ledger_keys, key)? {
        return Ok(if meta.fingerprint == entry.fingerprint { LedgerOutcome::Duplicate } else { LedgerOutcome::Conflict });
    }
    let adv_key = entry.advertiser_id.as_bytes();
    let mut adv: AdvertiserRow = tx_get(t, &db.advertisers, adv_key)?.unwrap_or_else(|| AdvertiserRow {
        advertiser_id: entry.advertiser_id.clone(),
        opening_balance: 0,
        balance: 0,
        time_zone: DEFAULT_TIME_ZONE.to_string(),
    });
    adv.balance += entry.amount;
    let seq = tx_get::<u64>(t, &db.meta, LEDGER_SEQ)?.map_or(0, |s| s + 1);
    tx_put(t, &db.meta, LEDGER_SEQ, "ledger sequence", &seq)?;
    let row = LedgerRow { seq, entry: entry.clone(), balance_after: adv.balance };
    tx_put(t, &db.ledger_rows, &row.seq.to_be_bytes(), "ledger row", &row)?;
    tx_put(t, &db.ledger_keys, key, "ledger key", &KeyMeta { fingerprint: entry.fingerprint, event_time: entry.event_time, seq: row.seq })?;
    t.insert(&db.ledger_expiry, &expiry_key(entry.event_time, key), Vec::new())?;
    tx_put(t, &db.advertisers, adv_key, "advertiser", &adv)?;
    Ok(LedgerOutcome::Applied { balance: adv.balance })
}

impl EmbeddedDatabase {
    /// Opens (or creates) a database in directory `path`, keeping ledger idempotency keys for the default
    /// [`KeyRetention`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::with_store(&EmbeddedStore::open(path)?))
    }

    /// [`Self::open`] with a chosen key retention.
    pub fn open_with(path: impl AsRef<Path>, retention: KeyRetention) -> Result<Self> {
        Ok(Self::open(path)?.with_retention(retention))
    }

    /// This database keeping ledger idempotency keys for `retention` (replaces this handle's).
    pub fn with_retention(mut self, retention: KeyRetention) -> Self {
        self.pruner = std::sync::Arc::new(Pruner::new(retention));
        self
    }

    /// How many ledger idempotency keys are held (for tests and monitoring).
    pub fn ledger_keys_held(&self) -> usize {
        self.ledger_keys.len()
    }

    /// A database in a temporary directory (removed when the database is dropped).
    pub fn temporary() -> Result<Self> {
        Ok(Self::with_store(&EmbeddedStore::temporary()?))
    }

    /// Uses the `db/*` tables of an open store (so one directory can hold both sinks).
    pub fn with_store(store: &EmbeddedStore) -> Self {
        let t = |name: &str| store.tree(&format!("db/{name}"));
        Self {
            store: store.clone(),
            advertisers: t("advertisers"),
            ledger_rows: t("ledger_rows"),
            ledger_keys: t("ledger_keys"),
            ledger_expiry: t("ledger_expiry"),
            pruner: std::sync::Arc::new(Pruner::new(KeyRetention::default())),
            conversions: t("conversions"),
            duplicate_orders: t("duplicate_orders"),
            campaigns: t("campaigns"),
            campaign_index: t("campaign_index"),
            alerts: t("alerts"),
            meta: t("meta"),
        }
    }

    /// Makes every write so far survive a crash of the machine (each write survives one of the process
    /// when it returns).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }

    fn get<T: Serialize + DeserializeOwned>(&self, tree: &Tree, key: &[u8], op: &'static str) -> Result<Option<T>> {
        match tree.get(SINK, op, key)? {
            Some(b) => dec(SINK, key, &b).map(Some),
            None => Ok(None),
        }
    }

    fn all<T: Serialize + DeserializeOwned>(&self, tree: &Tree, op: &'static str) -> Result<Vec<T>> {
        tree.iter(SINK, op)?.into_iter().map(|(k, v)| dec(SINK, &k, &v)).collect()
    }

    fn insert_once<T: Serialize + DeserializeOwned>(&self, tree: &Tree, key: &[u8], what: &'static str, v: &T) -> Result<bool> {
        tree.insert_if_absent(SINK, what, key, enc(what, v)?)
    }
}

impl Database for EmbeddedDatabase {
    fn sync(&self) -> Result<()> {
        if let Some(cutoff) = self.pruner.due() {
            let n = self.prune_ledger_keys(cutoff)?;
            self.pruner.done(cutoff);
            tracing::debug!(cutoff, pruned = n, "pruned ledger idempotency keys");
        }
        self.flush()
    }

    fn upsert_advertiser(&self, a: &Advertiser) -> Result<()> {
        let key = a.advertiser_id.as_bytes();
        self.store.transaction(SINK, "upsert_advertiser", |t| {
            let mut row: AdvertiserRow = tx_get(t, &self.advertisers, key)?.unwrap_or_else(|| AdvertiserRow {
                advertiser_id: a.advertiser_id.clone(),
                opening_balance: 0,
                balance: 0,
                time_zone: a.time_zone.clone(),
            });
            row.balance += a.opening_balance - row.opening_balance;
            row.opening_balance = a.opening_balance;
            row.time_zone = a.time_zone.clone();
            tx_put(t, &self.advertisers, key, "advertiser", &row)
        })
    }

    fn advertiser(&self, advertiser_id: &str) -> Result<Option<AdvertiserRow>> {
        self.get(&self.advertisers, advertiser_id.as_bytes(), "advertiser")
    }

    fn advertisers(&self) -> Result<Vec<AdvertiserRow>> {
        self.all(&self.advertisers, "advertisers")
    }

    fn balance(&self, advertiser_id: &str) -> Result<Option<i64>> {
        Ok(self.advertiser(advertiser_id)?.map(|a| a.balance))
    }

    fn apply_ledger(&self, entry: &LedgerEntry) -> Result<LedgerOutcome> {
        self.apply_ledger_batch(std::slice::from_ref(entry)).map(|mut v| v.remove(0))
    }

    fn apply_ledger_batch(&self, entries: &[LedgerEntry]) -> Result<Vec<LedgerOutcome>> {
        let outcomes = self.store.transaction(SINK, "apply_ledger_batch", |t| {
            entries.iter().map(|e| apply_one(self, t, e)).collect::<Result<Vec<_>>>()
        })?;
        for (e, o) in entries.iter().zip(&outcomes) {
            if matches!(o, LedgerOutcome::Applied { .. }) {
                self.pruner.note(e.event_time);
            }
        }
        Ok(outcomes)
    }

    fn ledger(&self) -> Result<Vec<LedgerRow>> {
        self.all(&self.ledger_rows, "ledger")
    }

    fn prune_ledger_keys(&self, before: rtb_stream::Timestamp) -> Result<u64> {
        prune_index(SINK, &self.store, &self.ledger_keys, &self.ledger_expiry, before)
    }

    fn insert_conversion_once(&self, row: &ConversionRow) -> Result<bool> {
        self.insert_once(&self.conversions, row.order_id.as_bytes(), "conversion", row)
    }

    fn conversions(&self) -> Result<Vec<ConversionRow>> {
        self.all(&self.conversions, "conversions")
    }

    fn record_duplicate_order(&self, row: &ConversionRow) -> Result<bool> {
        let stored: Option<ConversionRow> = self.get(&self.conversions, row.order_id.as_bytes(), "conversion")?;
        if stored.is_some_and(|claimer| same_conversion(&claimer, row)) {
            return Ok(false);
        }
        let mut key = Vec::new();
        part(&mut key, row.order_id.as_bytes());
        match &row.source {
            Some(src) => {
                part(&mut key, src.topic.as_bytes());
                key.extend_from_slice(&src.partition.to_be_bytes());
                key.extend_from_slice(&src.offset.to_be_bytes());
            }
            None => key.extend_from_slice(&enc("duplicate order", row)?),
        }
        self.insert_once(&self.duplicate_orders, &key, "duplicate order", row)
    }

    fn duplicate_orders(&self) -> Result<Vec<ConversionRow>> {
        self.all(&self.duplicate_orders, "duplicate orders")
    }

    fn upsert_campaign(&self, row: &CampaignRow) -> Result<Option<CampaignRow>> {
        let key = row.campaign_id.as_bytes();
        let (campaigns, index) = (&self.campaigns, &self.campaign_index);
        self.store.transaction(SINK, "upsert_campaign", |t| {
            let old: Option<CampaignRow> = tx_get(t, campaigns, key)?;
            let mut new = row.clone();
            new.budget_paused_day = old.as_ref().and_then(|o| o.budget_paused_day);
            if let Some(o) = &old {
                t.remove(index, &index_key(o));
            }
            t.insert(index, &index_key(&new), Vec::new())?;
            tx_put(t, campaigns, key, "campaign", &new)?;
            Ok(old)
        })
    }

    fn campaign(&self, campaign_id: &str) -> Result<Option<CampaignRow>> {
        self.get(&self.campaigns, campaign_id.as_bytes(), "campaign")
    }

    fn campaigns_in(&self, placement: Placement, category: &str) -> Result<Vec<CampaignRow>> {
        let prefix = index_prefix(placement, category);
        let mut out = Vec::new();
        for (k, _) in self.campaign_index.scan_prefix(SINK, "campaigns_in", &prefix)? {
            if let Some(row) = self.campaign(&String::from_utf8_lossy(&k[prefix.len()..]))? {
                out.push(row);
            }
        }
        Ok(out)
    }

    fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        self.all(&self.campaigns, "campaigns")
    }

    fn set_budget_pause(&self, campaign_id: &str, pause: Option<Day>) -> Result<bool> {
        let key = campaign_id.as_bytes();
        self.store.transaction(SINK, "set_budget_pause", |t| {
            let Some(mut row): Option<CampaignRow> = tx_get(t, &self.campaigns, key)? else { return Ok(false) };
            if row.budget_paused_day == pause {
                return Ok(false);
            }
            row.budget_paused_day = pause;
            tx_put(t, &self.campaigns, key, "campaign", &row)?;
            Ok(true)
        })
    }

    fn clear_budget_pause_through(&self, campaign_id: &str, through: Day) -> Result<bool> {
        let key = campaign_id.as_bytes();
        self.store.transaction(SINK, "clear_budget_pause_through", |t| {
            let Some(mut row): Option<CampaignRow> = tx_get(t, &self.campaigns, key)? else { return Ok(false) };
            if row.budget_paused_day.is_none_or(|d| d > through) {
                return Ok(false);
            }
            row.budget_paused_day = None;
            tx_put(t, &self.campaigns, key, "campaign", &row)?;
            Ok(true)
        })
    }

    fn insert_alert_once(&self, alert: &AlertRow) -> Result<bool> {
        self.insert_once(&self.alerts, alert.key.as_bytes(), "alert", alert)
    }

    fn alerts(&self) -> Result<Vec<AlertRow>> {
        self.all(&self.alerts, "alerts")
    }
}
