//! [`PostgresDatabase`]: the [`Database`] on a PostgreSQL server (feature `postgres`).
//!
//! Everything lives in one PostgreSQL schema (configurable, default `rtb`), created and upgraded by the
//! versioned [`MIGRATIONS`] (SQL files embedded in the binary) that [`PostgresDatabase::open`] applies:
//! each one once, in order, recorded in the schema's `schema_migrations` table, under an advisory lock
//! so concurrent starts apply them once.
//!
//! Tables: `advertisers` (opening balance, balance, time zone), `ledger` (the account history, `seq` =
//! application order), `ledger_keys` (the unique idempotency keys with fingerprint and event time; pruned),
//! `conversions` (unique `order_id`), `duplicate_orders`, `campaigns` (+ a placement/category index),
//! `alerts` (unique key). Money is `BIGINT` KRW.
//!
//! A ledger batch is one call of the `apply_ledger_batch` SQL function: one statement, one round trip,
//! one transaction holding every key claim, balance move and ledger row of the batch (all or nothing).
//! Every call runs under the bounded retry loop of [`super::retry`].

use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Row};
use rtb_stream::{SourceCoord, Timestamp};

use super::keys::Pruner;
use super::retry::{self, Pool, RetryPolicy, Try};
use super::types::*;
use super::Database;
use crate::calendar::{Day, DEFAULT_TIME_ZONE};
use crate::error::{Error, Result};
use crate::schema::{ApprovalStatus, CampaignStatus, ConversionType, Placement, RtbImpact, WireEnum};

const SINK: &str = "postgres";

/// Settings a PostgreSQL sink URL may carry in its query string
/// (`postgres://user@host/db?schema=rtb_test1&retry_for=30s`).
pub const URL_SETTINGS: &[&str] = &["schema", "retry_for"];

/// The default PostgreSQL schema.
pub const DEFAULT_SCHEMA: &str = "rtb";

/// One versioned migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version (applied in increasing order, each once).
    pub version: i32,
    /// Short name.
    pub name: &'static str,
    /// The SQL (run in the migration's schema, in one transaction with its `schema_migrations` row).
    pub sql: &'static str,
}

/// Every migration of this build, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "tables", sql: include_str!("postgres_migrations/0001_tables.sql") },
    Migration { version: 2, name: "ledger_batch", sql: include_str!("postgres_migrations/0002_ledger_batch.sql") },
    Migration { version: 3, name: "ledger_lock_order", sql: include_str!("postgres_migrations/0003_ledger_lock_order.sql") },
];

/// Connection settings of a [`PostgresDatabase`].
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Server URL (`postgres://user[:pass]@host[:port]/database`), without the settings below.
    pub url: String,
    /// The PostgreSQL schema holding the tables (letters, digits, `_`; default [`DEFAULT_SCHEMA`]); tests
    /// use a unique one each.
    pub schema: String,
    /// Retries while the server is unreachable.
    pub retry: RetryPolicy,
    /// Ledger idempotency key retention and pruning step.
    pub retention: KeyRetention,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl PostgresConfig {
    /// Settings from a URL whose query may hold `schema=` and `retry_for=` (see [`URL_SETTINGS`]); the
    /// rest of the URL goes to the driver.
    pub fn from_url(url: &str) -> Result<Self> {
        let (url, settings) = retry::take_settings(url, URL_SETTINGS)?;
        let mut cfg = Self {
            url,
            schema: DEFAULT_SCHEMA.to_owned(),
            retry: RetryPolicy::default(),
            retention: KeyRetention::default(),
            connect_timeout: Duration::from_secs(5),
        };
        for (k, v) in settings {
            match k.as_str() {
                "schema" => cfg.schema = v,
                _ => cfg.retry.give_up_after = retry::parse_duration(&k, &v)?,
            }
        }
        check_schema(&cfg.schema)?;
        Ok(cfg)
    }
}

fn check_schema(s: &str) -> Result<()> {
    retry::check_name("PostgreSQL schema", s, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')?;
    if s.starts_with(|c: char| c.is_ascii_digit()) || s.len() > 63 {
        return Err(Error::Config(format!("invalid PostgreSQL schema `{s}`")));
    }
    Ok(())
}

/// A [`Database`] on a PostgreSQL server. Cheap to clone (shares one connection pool); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct PostgresDatabase {
    inner: Arc<Inner>,
}

struct Inner {
    config: postgres::Config,
    cfg: PostgresConfig,
    pool: Pool<Client>,
    pruner: Pruner,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDatabase").field("schema", &self.cfg.schema).finish()
    }
}

/// A driver error shown with the server's message and SQLSTATE (the driver's own `Display` says only
/// "db error"), or with its cause.
struct PgError(postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(f, "{} {}: {}", db.severity(), db.code().code(), db.message())?;
                if let Some(d) = db.detail() {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

/// Whether a failure says the server is (momentarily) unreachable rather than that the statement is wrong.
fn transient(e: postgres::Error) -> Try<PgError> {
    let retry_codes = [
        SqlState::CONNECTION_EXCEPTION,
        SqlState::CONNECTION_DOES_NOT_EXIST,
        SqlState::CONNECTION_FAILURE,
        SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
        SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
    ];
    let io = std::error::Error::source(&e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    let is_transient = match e.code() {
        Some(code) => retry_codes.contains(code),
        None => e.is_closed() || io || e.to_string().contains("timeout"),
    };
    if is_transient {
        Try::Transient(PgError(e))
    } else {
        Try::Final(PgError(e))
    }
}

fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::SinkCorrupt { sink: SINK, key: key.into(), reason: reason.into() }
}

fn wire<T: WireEnum>(key: &str, s: &str) -> Result<T> {
    T::parse(s).ok_or_else(|| corrupt(key, format!("unknown value `{s}`")))
}

fn fingerprint_bytes(f: u128) -> Vec<u8> {
    f.to_be_bytes().to_vec()
}

fn fingerprint_of(key: &str, b: &[u8]) -> Result<u128> {
    <[u8; 16]>::try_from(b).map(u128::from_be_bytes).map_err(|_| corrupt(key, "fingerprint is not 16 bytes"))
}

const CONVERSION_COLUMNS: &str = "order_id, device_id, product_id, campaign_id, ad_id, advertiser_id, click_timestamp, \
     conversion_timestamp, revenue_amount, conversion_type, source_topic, source_partition, source_offset";

const CAMPAIGN_COLUMNS: &str = "campaign_id, advertiser_id, product_id, placement, category, bid_price, daily_budget, \
     status, approval_status, effective_from, rtb_impact, budget_paused_day, updated_at";

const ALERT_COLUMNS: &str = "key, campaign_id, advertiser_id, day, threshold_pct, spend, daily_budget, event_time";

fn conversion_row(r: &Row) -> Result<ConversionRow> {
    let order_id: String = r.get(0);
    let topic: Option<String> = r.get(10);
    let partition: Option<i64> = r.get(11);
    let offset: Option<i64> = r.get(12);
    let source = match (topic, partition, offset) {
        (Some(t), Some(p), Some(o)) => Some(SourceCoord::new(
            t.as_str(),
            u32::try_from(p).map_err(|_| corrupt(&order_id, "source partition"))?,
            u64::try_from(o).map_err(|_| corrupt(&order_id, "source offset"))?,
        )),
        _ => None,
    };
    Ok(ConversionRow {
        device_id: r.get(1),
        product_id: r.get(2),
        campaign_id: r.get(3),
        ad_id: r.get(4),
        advertiser_id: r.get(5),
        click_timestamp: r.get(6),
        conversion_timestamp: r.get(7),
        revenue_amount: r.get(8),
        conversion_type: wire::<ConversionType>(&order_id, r.get(9))?,
        source,
        order_id,
    })
}

fn campaign_row(r: &Row) -> Result<CampaignRow> {
    let id: String = r.get(0);
    let impact: Option<String> = r.get(10);
    Ok(CampaignRow {
        advertiser_id: r.get(1),
        product_id: r.get(2),
        placement: wire::<Placement>(&id, r.get(3))?,
        category: r.get(4),
        bid_price: r.get(5),
        daily_budget: r.get(6),
        status: wire::<CampaignStatus>(&id, r.get(7))?,
        approval_status: wire::<ApprovalStatus>(&id, r.get(8))?,
        effective_from: r.get(9),
        rtb_impact: impact.map(|s| wire::<RtbImpact>(&id, &s)).transpose()?,
        budget_paused_day: r.get::<_, Option<i32>>(11).map(Day),
        updated_at: r.get(12),
        campaign_id: id,
    })
}

fn alert_row(r: &Row) -> Result<AlertRow> {
    let key: String = r.get(0);
    Ok(AlertRow {
        campaign_id: r.get(1),
        advertiser_id: r.get(2),
        day: Day(r.get(3)),
        threshold_pct: u32::try_from(r.get::<_, i32>(4)).map_err(|_| corrupt(&key, "threshold"))?,
        spend: r.get(5),
        daily_budget: r.get(6),
        event_time: r.get(7),
        key,
    })
}

fn advertiser_row(r: &Row) -> AdvertiserRow {
    AdvertiserRow { advertiser_id: r.get(0), opening_balance: r.get(1), balance: r.get(2), time_zone: r.get(3) }
}

/// The migrations `schema` lacks are applied (all of them, or up to `up_to`), in one transaction under an
/// advisory lock on the schema's name; returns the versions applied (empty: it was up to date).
pub fn migrate(client: &mut Client, schema: &str, up_to: Option<i32>) -> std::result::Result<Vec<i32>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('rtb-migrations:' || $1::text))", &[&schema])?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET LOCAL search_path TO \"{schema}\"; \
         CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now())"
    ))?;
    let done: Option<i32> = tx.query_one("SELECT max(version) FROM schema_migrations", &[])?.get(0);
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| Some(m.version) > done && up_to.is_none_or(|u| m.version <= u)) {
        tx.batch_execute(m.sql)?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[&m.version, &m.name])?;
        applied.push(m.version);
    }
    tx.commit()?;
    if !applied.is_empty() {
        tracing::info!(schema, ?applied, "applied PostgreSQL migrations");
    }
    Ok(applied)
}

impl PostgresDatabase {
    /// Connects to the server of `cfg` and applies the missing [`MIGRATIONS`] to its schema.
    pub fn open(cfg: PostgresConfig) -> Result<Self> {
        check_schema(&cfg.schema)?;
        let mut config: postgres::Config = cfg.url.parse().map_err(|e| Error::sink(SINK, "open", e))?;
        config.connect_timeout(cfg.connect_timeout);
        let db = Self { inner: Arc::new(Inner { config, pruner: Pruner::new(cfg.retention), cfg, pool: Pool::new(16) }) };
        let schema = db.inner.cfg.schema.clone();
        db.call("migrate", |c| migrate(c, &schema, None).map(drop))?;
        Ok(db)
    }

    /// [`Self::open`] on a URL (see [`PostgresConfig::from_url`]).
    pub fn connect(url: &str) -> Result<Self> {
        Self::open(PostgresConfig::from_url(url)?)
    }

    /// The PostgreSQL schema.
    pub fn schema(&self) -> &str {
        &self.inner.cfg.schema
    }

    /// How many ledger idempotency keys are held (for tests and monitoring).
    pub fn ledger_keys_held(&self) -> Result<u64> {
        let n: i64 = self.call("ledger_keys_held", |c| c.query_one("SELECT count(*) FROM ledger_keys", &[]).map(|r| r.get(0)))?;
        Ok(n.unsigned_abs())
    }

    /// The migration versions recorded in the schema, in order.
    pub fn migration_versions(&self) -> Result<Vec<i32>> {
        self.call("migration_versions", |c| {
            Ok(c.query("SELECT version FROM schema_migrations ORDER BY version", &[])?.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Drops the schema and everything in it (tests).
    pub fn drop_schema(&self) -> Result<()> {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.inner.cfg.schema);
        self.call("drop_schema", |c| c.batch_execute(&sql))?;
        self.inner.pool.clear();
        Ok(())
    }

    /// Runs `f` on a connection whose `search_path` is the schema, under the retry loop.
    pub fn call<T>(&self, op: &'static str, mut f: impl FnMut(&mut Client) -> std::result::Result<T, postgres::Error>) -> Result<T> {
        let i = &self.inner;
        retry::call(
            SINK,
            op,
            &i.cfg.retry,
            &i.pool,
            || {
                let mut c = i.config.connect(NoTls).map_err(transient)?;
                c.batch_execute(&format!("SET search_path TO \"{}\"", i.cfg.schema)).map_err(transient)?;
                Ok(c)
            },
            |c| f(c).map_err(transient),
        )
    }

    fn query_rows<T>(&self, op: &'static str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)], map: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
        let rows = self.call(op, |c| c.query(sql, params))?;
        rows.iter().map(map).collect()
    }

    fn exec(&self, op: &'static str, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)]) -> Result<u64> {
        self.call(op, |c| c.execute(sql, params))
    }
}

/// The values of [`CONVERSION_COLUMNS`] for one row (the conversions and the duplicate orders tables).
struct ConversionParams<'a> {
    row: &'a ConversionRow,
    conversion_type: &'static str,
    topic: Option<String>,
    partition: Option<i64>,
    offset: Option<i64>,
}

impl<'a> ConversionParams<'a> {
    fn new(row: &'a ConversionRow) -> Self {
        let (topic, partition, offset) = match &row.source {
            Some(s) => (Some(s.topic.to_string()), Some(i64::from(s.partition)), i64::try_from(s.offset).ok()),
            None => (None, None, None),
        };
        Self { row, conversion_type: row.conversion_type.as_str(), topic, partition, offset }
    }

    /// In the order of [`CONVERSION_COLUMNS`].
    fn values(&self) -> [&(dyn postgres::types::ToSql + Sync); 13] {
        let r = self.row;
        [
            &r.order_id,
            &r.device_id,
            &r.product_id,
            &r.campaign_id,
            &r.ad_id,
            &r.advertiser_id,
            &r.click_timestamp,
            &r.conversion_timestamp,
            &r.revenue_amount,
            &self.conversion_type,
            &self.topic,
            &self.partition,
            &self.offset,
        ]
    }
}

impl Database for PostgresDatabase {
    fn sync(&self) -> Result<()> {
        if let Some(cutoff) = self.inner.pruner.due() {
            let n = self.prune_ledger_keys(cutoff)?;
            self.inner.pruner.done(cutoff);
            tracing::debug!(cutoff, pruned = n, "pruned PostgreSQL ledger idempotency keys");
        }
        Ok(())
    }

    fn upsert_advertiser(&self, a: &Advertiser) -> Result<()> {
        self.exec(
            "upsert_advertiser",
            "INSERT INTO advertisers AS a (advertiser_id, opening_balance, balance, time_zone) VALUES ($1, $2, $2, $3) \
             ON CONFLICT (advertiser_id) DO UPDATE SET balance = a.balance + EXCLUDED.opening_balance - a.opening_balance, \
             opening_balance = EXCLUDED.opening_balance, time_zone = EXCLUDED.time_zone",
            &[&a.advertiser_id, &a.opening_balance, &a.time_zone],
        )
        .map(drop)
    }

    fn advertiser(&self, advertiser_id: &str) -> Result<Option<AdvertiserRow>> {
        let rows = self.query_rows(
            "advertiser",
            "SELECT advertiser_id, opening_balance, balance, time_zone FROM advertisers WHERE advertiser_id = $1",
            &[&advertiser_id],
            |r| Ok(advertiser_row(r)),
        )?;
        Ok(rows.into_iter().next())
    }

    fn advertisers(&self) -> Result<Vec<AdvertiserRow>> {
        self.query_rows(
            "advertisers",
            "SELECT advertiser_id, opening_balance, balance, time_zone FROM advertisers ORDER BY advertiser_id",
            &[],
            |r| Ok(advertiser_row(r)),
        )
    }

    fn balance(&self, advertiser_id: &str) -> Result<Option<i64>> {
        Ok(self.advertiser(advertiser_id)?.map(|a| a.balance))
    }

    fn apply_ledger(&self, entry: &LedgerEntry) -> Result<LedgerOutcome> {
        self.apply_ledger_batch(std::slice::from_ref(entry)).map(|mut v| v.remove(0))
    }

    fn apply_ledger_batch(&self, entries: &[LedgerEntry]) -> Result<Vec<LedgerOutcome>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = entries.iter().map(|e| e.idempotency_key.as_str()).collect();
        let advertisers: Vec<&str> = entries.iter().map(|e| e.advertiser_id.as_str()).collect();
        let campaigns: Vec<Option<&str>> = entries.iter().map(|e| e.campaign_id.as_deref()).collect();
        let kinds: Vec<&str> = entries
            .iter()
            .map(|e| match e.kind {
                LedgerKind::Charge => "CHARGE",
                LedgerKind::Refund => "REFUND",
            })
            .collect();
        let amounts: Vec<i64> = entries.iter().map(|e| e.amount).collect();
        let times: Vec<i64> = entries.iter().map(|e| e.event_time).collect();
        let refs: Vec<&str> = entries.iter().map(|e| e.reference.as_str()).collect();
        let fps: Vec<Vec<u8>> = entries.iter().map(|e| fingerprint_bytes(e.fingerprint)).collect();
        let rows = self.call("apply_ledger_batch", |c| {
            c.query(
                "SELECT r_outcome, r_balance FROM apply_ledger_batch($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[&keys, &advertisers, &campaigns, &kinds, &amounts, &times, &refs, &fps, &DEFAULT_TIME_ZONE],
            )
        })?;
        if rows.len() != entries.len() {
            return Err(Error::sink(SINK, "apply_ledger_batch", format!("{} outcomes for {} entries", rows.len(), entries.len())));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (e, r) in entries.iter().zip(&rows) {
            let outcome: i16 = r.get(0);
            out.push(match outcome {
                0 => {
                    self.inner.pruner.note(e.event_time);
                    LedgerOutcome::Applied { balance: r.get::<_, Option<i64>>(1).unwrap_or_default() }
                }
                1 => LedgerOutcome::Duplicate,
                _ => LedgerOutcome::Conflict,
            });
        }
        Ok(out)
    }

    fn ledger(&self) -> Result<Vec<LedgerRow>> {
        self.query_rows(
            "ledger",
            "SELECT seq, idempotency_key, advertiser_id, campaign_id, kind, amount, event_time, reference, fingerprint, \
             balance_after FROM ledger ORDER BY seq",
            &[],
            |r| {
                let key: String = r.get(1);
                let kind = match r.get::<_, &str>(4) {
                    "CHARGE" => LedgerKind::Charge,
                    "REFUND" => LedgerKind::Refund,
                    other => return Err(corrupt(&key, format!("ledger kind `{other}`"))),
                };
                Ok(LedgerRow {
                    seq: r.get::<_, i64>(0).unsigned_abs(),
                    entry: LedgerEntry {
                        fingerprint: fingerprint_of(&key, r.get(8))?,
                        idempotency_key: key,
                        advertiser_id: r.get(2),
                        campaign_id: r.get(3),
                        kind,
                        amount: r.get(5),
                        event_time: r.get(6),
                        reference: r.get(7),
                    },
                    balance_after: r.get(9),
                })
            },
        )
    }

    fn prune_ledger_keys(&self, before: Timestamp) -> Result<u64> {
        self.exec("prune_ledger_keys", "DELETE FROM ledger_keys WHERE event_time < $1", &[&before])
    }

    fn insert_conversion_once(&self, row: &ConversionRow) -> Result<bool> {
        let n = self.exec(
            "insert_conversion_once",
            &format!(
                "INSERT INTO conversions ({CONVERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (order_id) DO NOTHING"
            ),
            &ConversionParams::new(row).values(),
        )?;
        Ok(n == 1)
    }

    fn conversions(&self) -> Result<Vec<ConversionRow>> {
        self.query_rows("conversions", &format!("SELECT {CONVERSION_COLUMNS} FROM conversions ORDER BY order_id"), &[], conversion_row)
    }

    fn record_duplicate_order(&self, row: &ConversionRow) -> Result<bool> {
        let claimer = self.query_rows(
            "record_duplicate_order",
            &format!("SELECT {CONVERSION_COLUMNS} FROM conversions WHERE order_id = $1"),
            &[&row.order_id],
            conversion_row,
        )?;
        if claimer.first().is_some_and(|c| same_conversion(c, row)) {
            return Ok(false);
        }
        let dedup = match &row.source {
            Some(s) => format!("{}/{}/{}", s.topic, s.partition, s.offset),
            None => serde_json::to_string(row).map_err(|e| Error::Encode { what: "duplicate order", reason: e.to_string() })?,
        };
        let params = ConversionParams::new(row);
        let mut values: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&dedup];
        values.extend(params.values());
        let n = self.exec(
            "record_duplicate_order",
            &format!(
                "INSERT INTO duplicate_orders (dedup, {CONVERSION_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT DO NOTHING"
            ),
            &values,
        )?;
        Ok(n == 1)
    }

    fn duplicate_orders(&self) -> Result<Vec<ConversionRow>> {
        self.query_rows(
            "duplicate_orders",
            &format!("SELECT {CONVERSION_COLUMNS} FROM duplicate_orders ORDER BY order_id, dedup"),
            &[],
            conversion_row,
        )
    }

    fn upsert_campaign(&self, row: &CampaignRow) -> Result<Option<CampaignRow>> {
        let select = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE campaign_id = $1 FOR UPDATE");
        let upsert = format!(
            "INSERT INTO campaigns ({CAMPAIGN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, $12) \
             ON CONFLICT (campaign_id) DO UPDATE SET advertiser_id = EXCLUDED.advertiser_id, product_id = EXCLUDED.product_id, \
             placement = EXCLUDED.placement, category = EXCLUDED.category, bid_price = EXCLUDED.bid_price, \
             daily_budget = EXCLUDED.daily_budget, status = EXCLUDED.status, approval_status = EXCLUDED.approval_status, \
             effective_from = EXCLUDED.effective_from, rtb_impact = EXCLUDED.rtb_impact, updated_at = EXCLUDED.updated_at"
        );
        let impact = row.rtb_impact.map(WireEnum::as_str);
        let old = self.call("upsert_campaign", |c| {
            let mut tx = c.transaction()?;
            let old = tx.query_opt(&select, &[&row.campaign_id])?;
            tx.execute(
                &upsert,
                &[
                    &row.campaign_id,
                    &row.advertiser_id,
                    &row.product_id,
                    &row.placement.as_str(),
                    &row.category,
                    &row.bid_price,
                    &row.daily_budget,
                    &row.status.as_str(),
                    &row.approval_status.as_str(),
                    &row.effective_from,
                    &impact,
                    &row.updated_at,
                ],
            )?;
            tx.commit()?;
            Ok(old)
        })?;
        old.as_ref().map(campaign_row).transpose()
    }

    fn campaign(&self, campaign_id: &str) -> Result<Option<CampaignRow>> {
        let rows = self.query_rows(
            "campaign",
            &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE campaign_id = $1"),
            &[&campaign_id],
            campaign_row,
        )?;
        Ok(rows.into_iter().next())
    }

    fn campaigns_in(&self, placement: Placement, category: &str) -> Result<Vec<CampaignRow>> {
        self.query_rows(
            "campaigns_in",
            &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE placement = $1 AND category = $2 ORDER BY campaign_id"),
            &[&placement.as_str(), &category],
            campaign_row,
        )
    }

    fn campaigns(&self) -> Result<Vec<CampaignRow>> {
        self.query_rows("campaigns", &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY campaign_id"), &[], campaign_row)
    }

    fn set_budget_pause(&self, campaign_id: &str, pause: Option<Day>) -> Result<bool> {
        let day = pause.map(|d| d.0);
        let n = self.exec(
            "set_budget_pause",
            "UPDATE campaigns SET budget_paused_day = $2 WHERE campaign_id = $1 AND budget_paused_day IS DISTINCT FROM $2",
            &[&campaign_id, &day],
        )?;
        Ok(n == 1)
    }

    fn clear_budget_pause_through(&self, campaign_id: &str, through: Day) -> Result<bool> {
        let n = self.exec(
            "clear_budget_pause_through",
            "UPDATE campaigns SET budget_paused_day = NULL WHERE campaign_id = $1 AND budget_paused_day <= $2",
            &[&campaign_id, &through.0],
        )?;
        Ok(n == 1)
    }

    fn insert_alert_once(&self, a: &AlertRow) -> Result<bool> {
        let pct = i32::try_from(a.threshold_pct).map_err(|_| Error::Encode { what: "alert", reason: "threshold too large".into() })?;
        let n = self.exec(
            "insert_alert_once",
            &format!("INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (key) DO NOTHING"),
            &[&a.key, &a.campaign_id, &a.advertiser_id, &a.day.0, &pct, &a.spend, &a.daily_budget, &a.event_time],
        )?;
        Ok(n == 1)
    }

    fn alerts(&self) -> Result<Vec<AlertRow>> {
        self.query_rows("alerts", &format!("SELECT {ALERT_COLUMNS} FROM alerts ORDER BY key"), &[], alert_row)
    }
}
