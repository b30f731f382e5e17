//! The CPC system's entries in an [`rtb_stream::registry::Registry`]: its four event schemas, its seven
//! operator kinds (with their typed settings) and its cache and database backends (embedded; Redis and PostgreSQL with the features `redis` and `postgres`).
//!
//! [`register`] adds them all; a topology file then names them (`kind = "ranking"`, `schema = "ad-events"`,
//! `[[sink]] kind = "cache", backend = "embedded"`). Each kind's settings are written in the operator's
//! `settings` table; unknown fields are rejected. The kinds and their settings (defaults in brackets):
//!
//! | kind | inputs → outputs | sinks | settings |
//! |---|---|---|---|
//! | `ranking` | campaign-events | cache, database | `prior_strength` (K) [100], `default_prior_ctr` [0.01], `reserve_price` [100], `increment` [10] |
//! | `performance` | ad-events | cache, database | `window` [5m], `grace` [1m], `late_policy` (`correct` \| `side-output`) [correct], `max_lateness` [24h], `recompute_rankings` [true] |
//! | `conversion-matching` | conversion-events, ad-events | database | `window` (attribution) [24h] |
//! | `duplicate-detection` | ad-events → compensation-events | — | `window` [5m], `retention` [1h] |
//! | `balance` | ad-events | database | — |
//! | `budget-monitor` | ad-events → campaign-events | cache, database | `alert_thresholds_pct` [[80, 100]], `pause_at_pct` [100], `default_time_zone` [Asia/Seoul], `resume_on_processing_time` [false] |
//! | `compensation` | compensation-events | cache, database | — |
//!
//! The performance statement recomputes rankings with the ranking operator's parameters, and the ranker
//! and the compensation worker count a day as the budget monitor does: those kinds read their related
//! operator's settings from the plan ([`ops_config`]).

use std::sync::Arc;
use std::time::Duration;

use rtb_stream::log::LogRecord;
use rtb_stream::registry::{
    join_key, KindRules, Millis, OpenedSink, OperatorKind, PeerStage, Registry, Schema, SettingsError,
    SinkBackend, SinkHandle, SinkOptions, StageContext,
};
use rtb_stream::runtime::Runtime;
use rtb_stream::span;
use rtb_stream::Record;
use serde::{Deserialize, Serialize};

use crate::config::{ConversionConfig, OpsConfig, TopicNames};
use crate::ops::balance::BalanceWorker;
use crate::ops::budget::{BudgetConfig, BudgetMonitor};
use crate::ops::compensation::CompensationWorker;
use crate::ops::conversion::ConversionMatcher;
use crate::ops::dedup::{DedupConfig, DuplicateClickDetector};
use crate::ops::performance::{PerformanceConfig, PerformanceStatement};
use crate::ops::ranking::{Ranker, RankingStatement};
use crate::ops::MatchInput;
use crate::ranking::RankingConfig;
use crate::schema::{AdEvent, ConversionEvent, ValidationConfig};
use crate::sink::{Cache, Database, EmbeddedCache, EmbeddedDatabase};
use crate::wire::{Clock, WireDecoder};

/// Schema names.
pub mod schemas {
    /// Campaign lifecycle events.
    pub const CAMPAIGN_EVENTS: &str = "campaign-events";
    /// Impressions, clicks and conversions.
    pub const AD_EVENTS: &str = "ad-events";
    /// Orders from external systems.
    pub const CONVERSION_EVENTS: &str = "conversion-events";
    /// Duplicate-click refunds (produced by duplicate detection).
    pub const COMPENSATION_EVENTS: &str = "compensation-events";
}

/// Operator kind names.
pub mod kinds {
    /// The ranking statement.
    pub const RANKING: &str = "ranking";
    /// The performance statement.
    pub const PERFORMANCE: &str = "performance";
    /// The conversion-matching statement.
    pub const CONVERSION_MATCHING: &str = "conversion-matching";
    /// The duplicate-click statement.
    pub const DUPLICATE_DETECTION: &str = "duplicate-detection";
    /// The balance worker.
    pub const BALANCE: &str = "balance";
    /// The budget monitor worker.
    pub const BUDGET_MONITOR: &str = "budget-monitor";
    /// The compensation worker.
    pub const COMPENSATION: &str = "compensation";
}

/// Sink kind names.
pub mod sink_kinds {
    /// Rankings, metrics and budget counters.
    pub const CACHE: &str = "cache";
    /// Balances, ledger, conversions, campaigns and alerts.
    pub const DATABASE: &str = "database";
    /// The backend of both in this build (an [`EmbeddedStore`](crate::sink::EmbeddedStore) journal under the
    /// data directory).
    pub const EMBEDDED: &str = "embedded";
    /// Both kinds held in memory for the life of the process ([`MemoryCache`](crate::sink::MemoryCache),
    /// [`MemoryDatabase`](crate::sink::MemoryDatabase)): what `rtb replay` writes to before it writes the
    /// output files, and what tests use. Nothing survives the process.
    pub const MEMORY: &str = "memory";
    /// The Redis cache (feature `redis`): `url = "redis://host:6379[/db][?prefix=P&retry_for=60s]"`.
    pub const REDIS: &str = "redis";
    /// The PostgreSQL database (feature `postgres`):
    /// `url = "postgres://user@host:5432/db[?schema=rtb&retry_for=60s]"`.
    pub const POSTGRES: &str = "postgres";
}

/// SPEC §4: by default a late ad-event corrects its performance window for as long as the attribution
/// window (24 h); only older ones go to the late-events output.
pub const DEFAULT_MAX_LATENESS: Millis = Millis::hours(24);

/// What the CPC entries are built with.
#[derive(Debug, Clone)]
pub struct CpcEnv {
    /// Input validation limits.
    pub validation: ValidationConfig,
    /// Processing time for the future-timestamp check.
    pub clock: Clock,
}

impl Default for CpcEnv {
    fn default() -> Self {
        Self { validation: ValidationConfig::default(), clock: Clock::System }
    }
}

/// Registers the CPC schemas, kinds and embedded sink backends, validating with the system clock.
pub fn register(registry: &mut Registry) -> rtb_stream::Result<()> {
    register_with(registry, &CpcEnv::default())
}

/// [`register`] with explicit validation limits and clock.
pub fn register_with(registry: &mut Registry, env: &CpcEnv) -> rtb_stream::Result<()> {
    let wire = WireDecoder::new(env.validation, env.clock);
    for (name, external) in [
        (schemas::CAMPAIGN_EVENTS, true),
        (schemas::AD_EVENTS, true),
        (schemas::CONVERSION_EVENTS, true),
        (schemas::COMPENSATION_EVENTS, false),
    ] {
        registry.register_schema(CpcSchema { name, external, wire: wire.clone() })?;
    }
    registry.register_kind(RankingKind { wire: wire.clone() })?;
    registry.register_kind(PerformanceKind { wire: wire.clone() })?;
    registry.register_kind(ConversionMatchingKind { wire: wire.clone() })?;
    registry.register_kind(DuplicateDetectionKind { wire: wire.clone() })?;
    registry.register_kind(BalanceKind { wire: wire.clone() })?;
    registry.register_kind(BudgetMonitorKind { wire: wire.clone() })?;
    registry.register_kind(CompensationKind { wire })?;
    registry.register_sink_backend(EmbeddedCacheBackend)?;
    registry.register_sink_backend(EmbeddedDatabaseBackend)?;
    registry.register_sink_backend(MemoryCacheBackend)?;
    registry.register_sink_backend(MemoryDatabaseBackend)?;
    #[cfg(feature = "redis")]
    registry.register_sink_backend(RedisCacheBackend)?;
    #[cfg(feature = "postgres")]
    registry.register_sink_backend(PostgresDatabaseBackend)?;
    Ok(())
}

/// A registry holding only the CPC entries (system clock).
pub fn cpc_registry() -> rtb_stream::Result<Registry> {
    let mut r = Registry::new();
    register(&mut r)?;
    Ok(r)
}

// ------------------------------------------------------------------------------------------- settings

/// Settings of `ranking` (SPEC §4: K, m's default, the reserve and the increment are configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankingSettings {
    /// K: pseudo-impressions of the Beta prior.
    pub prior_strength: u64,
    /// m while a category has no impressions.
    pub default_prior_ctr: f64,
    /// Reserve (floor) price in KRW.
    pub reserve_price: i64,
    /// GSP increment in KRW.
    pub increment: i64,
}

impl Default for RankingSettings {
    fn default() -> Self {
        let d = RankingConfig::default();
        Self {
            prior_strength: d.prior_strength,
            default_prior_ctr: d.default_prior_ctr,
            reserve_price: d.reserve_price,
            increment: d.increment,
        }
    }
}

impl RankingSettings {
    fn config(&self) -> RankingConfig {
        RankingConfig {
            prior_strength: self.prior_strength,
            default_prior_ctr: self.default_prior_ctr,
            reserve_price: self.reserve_price,
            increment: self.increment,
        }
    }
}

/// What the performance statement does with an ad-event that arrives after its window was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerformanceLatePolicy {
    /// Correct the written window (for `max_lateness`; older events go to the late-events output).
    Correct,
    /// Send every late event to the late-events output.
    SideOutput,
    /// Not accepted: SPEC §4 never loses a late event silently.
    Drop,
}

/// Settings of `performance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerformanceSettings {
    /// Tumbling window size.
    pub window: Millis,
    /// Grace after a window's end before its result is written.
    pub grace: Millis,
    /// Late ad-events: `correct` or `side-output`.
    pub late_policy: PerformanceLatePolicy,
    /// How long a written window stays correctable (`correct` only; default 24 h).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lateness: Option<Millis>,
    /// Recompute the placement+category ranking after each written campaign window.
    pub recompute_rankings: bool,
}

impl Default for PerformanceSettings {
    fn default() -> Self {
        Self {
            window: Millis::minutes(5),
            grace: Millis::minutes(1),
            late_policy: PerformanceLatePolicy::Correct,
            max_lateness: None,
            recompute_rankings: true,
        }
    }
}

impl PerformanceSettings {
    fn config(&self) -> PerformanceConfig {
        PerformanceConfig {
            window: self.window.to_std(),
            grace: self.grace.to_std(),
            // A correction horizon of 0 keeps no written window: every late event goes to the late-events
            // output, which is the side-output policy.
            max_lateness: match self.late_policy {
                PerformanceLatePolicy::Correct => self.max_lateness.unwrap_or(DEFAULT_MAX_LATENESS).to_std(),
                PerformanceLatePolicy::SideOutput | PerformanceLatePolicy::Drop => Duration::ZERO,
            },
            recompute_rankings: self.recompute_rankings,
        }
    }
}

/// Settings of `conversion-matching`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConversionSettings {
    /// Attribution window: clicks in `[t − window, t]` qualify.
    pub window: Millis,
}

impl Default for ConversionSettings {
    fn default() -> Self {
        Self { window: Millis::hours(24) }
    }
}

/// Settings of `duplicate-detection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupSettings {
    /// Dedup window opened by a device's first click on an ad.
    pub window: Millis,
    /// How long (event time) a key is remembered after its last window closed, to recognise late clicks.
    pub retention: Millis,
}

impl Default for DedupSettings {
    fn default() -> Self {
        let d = DedupConfig::default();
        Self { window: Millis::ms(span::ms(d.window)), retention: Millis::ms(span::ms(d.retention)) }
    }
}

/// Settings of `budget-monitor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSettings {
    /// Alert thresholds in percent of the daily budget, each alerted once per campaign per day.
    pub alert_thresholds_pct: Vec<u32>,
    /// Spend (percent of the daily budget) at which the campaign is paused.
    pub pause_at_pct: u32,
    /// Time zone of advertisers without one (their day boundary).
    pub default_time_zone: String,
    /// Also resume at local midnight by the wall clock, not only by event time.
    pub resume_on_processing_time: bool,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        let d = BudgetConfig::default();
        Self {
            alert_thresholds_pct: d.alert_thresholds_pct,
            pause_at_pct: d.pause_at_pct,
            default_time_zone: d.default_time_zone,
            resume_on_processing_time: d.resume_on_processing_time,
        }
    }
}

/// Settings of the kinds that take none (`balance`, `compensation`): any field is rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

fn positive(field: &str, m: Millis) -> Result<(), SettingsError> {
    if m == Millis::ZERO {
        return Err(SettingsError::field(field, "must be greater than 0"));
    }
    Ok(())
}

/// The operators' configuration as the plan sets it: each part from the first operator of the kind that
/// owns it (defaults when there is none), topic names from the first topic of each schema.
pub fn ops_config(peers: &[PeerStage], topics: &[(String, String)]) -> Result<OpsConfig, SettingsError> {
    fn first<T: serde::de::DeserializeOwned + Default>(peers: &[PeerStage], kind: &str) -> Result<T, SettingsError> {
        match peers.iter().find(|p| p.kind == kind) {
            Some(p) => rtb_stream::registry::typed_settings(&p.settings),
            None => Ok(T::default()),
        }
    }
    let mut ops = OpsConfig::default();
    let ranking: RankingSettings = first(peers, kinds::RANKING)?;
    ops.ranking = ranking.config();
    let perf: PerformanceSettings = first(peers, kinds::PERFORMANCE)?;
    ops.performance = perf.config();
    let conv: ConversionSettings = first(peers, kinds::CONVERSION_MATCHING)?;
    ops.conversion = ConversionConfig { attribution_window: conv.window.to_std() };
    let dedup: DedupSettings = first(peers, kinds::DUPLICATE_DETECTION)?;
    ops.dedup.window = dedup.window.to_std();
    ops.dedup.retention = dedup.retention.to_std();
    let budget: BudgetSettings = first(peers, kinds::BUDGET_MONITOR)?;
    ops.budget.alert_thresholds_pct = budget.alert_thresholds_pct;
    ops.budget.pause_at_pct = budget.pause_at_pct;
    ops.budget.default_time_zone = budget.default_time_zone;
    ops.budget.resume_on_processing_time = budget.resume_on_processing_time;
    let name = |schema: &str, default: String| {
        topics.iter().find(|(s, _)| s == schema).map_or(default, |(_, t)| t.clone())
    };
    let d = TopicNames::default();
    ops.topics = TopicNames {
        campaign_events: name(schemas::CAMPAIGN_EVENTS, d.campaign_events),
        ad_events: name(schemas::AD_EVENTS, d.ad_events),
        conversion_events: name(schemas::CONVERSION_EVENTS, d.conversion_events),
        compensation_events: name(schemas::COMPENSATION_EVENTS, d.compensation_events),
    };
    for (schema, topic) in topics {
        if schema == schemas::COMPENSATION_EVENTS {
            ops.dedup.output_topic = topic.clone();
            break;
        }
    }
    for (schema, topic) in topics {
        if schema == schemas::CAMPAIGN_EVENTS {
            ops.budget.status_topic = topic.clone();
            break;
        }
    }
    Ok(ops)
}

fn peer_config(stage: &StageContext<'_>) -> rtb_stream::Result<OpsConfig> {
    ops_config(stage.peers, &[])
        .map_err(|e| rtb_stream::Error::Config(format!("operator `{}`: a related operator's settings {e}", stage.operator)))
}

// ------------------------------------------------------------------------------------------- sinks

/// The handle of an opened cache sink.
#[derive(Debug, Clone)]
pub struct CacheSink(pub Arc<dyn Cache>);

/// The handle of an opened database sink.
#[derive(Debug, Clone)]
pub struct DatabaseSink(pub Arc<dyn Database>);

impl SinkHandle for CacheSink {
    fn sync(&self) -> rtb_stream::Result<()> {
        self.0.sync().map_err(Into::into)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl SinkHandle for DatabaseSink {
    fn sync(&self) -> rtb_stream::Result<()> {
        self.0.sync().map_err(Into::into)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The cache of an opened sink (an error names the sink when it is not a cache).
pub fn cache_of(sink: &OpenedSink) -> rtb_stream::Result<Arc<dyn Cache>> {
    Ok(Arc::clone(&sink.handle::<CacheSink>()?.0))
}

/// The database of an opened sink (an error names the sink when it is not a database).
pub fn database_of(sink: &OpenedSink) -> rtb_stream::Result<Arc<dyn Database>> {
    Ok(Arc::clone(&sink.handle::<DatabaseSink>()?.0))
}

fn embedded_check(o: &SinkOptions<'_>) -> Result<(), SettingsError> {
    if o.url.is_some() {
        return Err(SettingsError::field("url", "`url` does not apply to the embedded backend (it takes a `path`)"));
    }
    Ok(())
}

/// `kind = "cache", backend = "embedded"`: an [`EmbeddedCache`] under the data directory.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedCacheBackend;

impl SinkBackend for EmbeddedCacheBackend {
    fn kind(&self) -> &str {
        sink_kinds::CACHE
    }
    fn backend(&self) -> &str {
        sink_kinds::EMBEDDED
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        embedded_check(options)
    }
    fn open(&self, o: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let cache: Arc<dyn Cache> = Arc::new(EmbeddedCache::open(o.dir())?);
        Ok(OpenedSink { name: o.name.to_owned(), kind: sink_kinds::CACHE.to_owned(), handle: Arc::new(CacheSink(cache)) })
    }
}

/// `kind = "database", backend = "embedded"`: an [`EmbeddedDatabase`] under the data directory.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedDatabaseBackend;

impl SinkBackend for EmbeddedDatabaseBackend {
    fn kind(&self) -> &str {
        sink_kinds::DATABASE
    }
    fn backend(&self) -> &str {
        sink_kinds::EMBEDDED
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        embedded_check(options)
    }
    fn open(&self, o: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let db: Arc<dyn Database> = Arc::new(EmbeddedDatabase::open(o.dir())?);
        Ok(OpenedSink { name: o.name.to_owned(), kind: sink_kinds::DATABASE.to_owned(), handle: Arc::new(DatabaseSink(db)) })
    }
}

/// `kind = "cache", backend = "memory"`: a [`MemoryCache`](crate::sink::MemoryCache) (nothing kept).
#[derive(Debug, Clone, Copy)]
pub struct MemoryCacheBackend;

impl SinkBackend for MemoryCacheBackend {
    fn kind(&self) -> &str {
        sink_kinds::CACHE
    }
    fn backend(&self) -> &str {
        sink_kinds::MEMORY
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        memory_check(options)
    }
    fn open(&self, o: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let cache: Arc<dyn Cache> = Arc::new(crate::sink::MemoryCache::new());
        Ok(OpenedSink { name: o.name.to_owned(), kind: sink_kinds::CACHE.to_owned(), handle: Arc::new(CacheSink(cache)) })
    }
}

/// `kind = "database", backend = "memory"`: a [`MemoryDatabase`](crate::sink::MemoryDatabase) (nothing kept).
#[derive(Debug, Clone, Copy)]
pub struct MemoryDatabaseBackend;

impl SinkBackend for MemoryDatabaseBackend {
    fn kind(&self) -> &str {
        sink_kinds::DATABASE
    }
    fn backend(&self) -> &str {
        sink_kinds::MEMORY
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        memory_check(options)
    }
    fn open(&self, o: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let db: Arc<dyn Database> = Arc::new(crate::sink::MemoryDatabase::new());
        Ok(OpenedSink { name: o.name.to_owned(), kind: sink_kinds::DATABASE.to_owned(), handle: Arc::new(DatabaseSink(db)) })
    }
}

fn memory_check(o: &SinkOptions<'_>) -> Result<(), SettingsError> {
    if o.url.is_some() {
        return Err(SettingsError::field("url", "`url` does not apply to the memory backend"));
    }
    if o.path.is_some() {
        return Err(SettingsError::field("path", "`path` does not apply to the memory backend (it keeps nothing)"));
    }
    Ok(())
}

/// The checks of a server backend: a `url` (with only the settings `allowed` in its query), no `path`.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn server_check(o: &SinkOptions<'_>, backend: &str, allowed: &[&str]) -> Result<(), SettingsError> {
    if o.path.is_some() {
        return Err(SettingsError::field("path", format!("`path` does not apply to the {backend} backend (it takes a `url`)")));
    }
    let Some(url) = o.url else {
        return Err(SettingsError::field("url", format!("the {backend} backend needs a `url`")));
    };
    crate::sink::retry::take_settings(url, allowed).map_err(|e| SettingsError::field("url", e.to_string()))?;
    Ok(())
}

#[cfg(any(feature = "redis", feature = "postgres"))]
fn server_url<'a>(o: &SinkOptions<'a>) -> rtb_stream::Result<&'a str> {
    o.url.ok_or_else(|| rtb_stream::Error::Config(format!("sink `{}`: no `url`", o.name)))
}

/// The file in a data directory that keeps the epoch of the Redis cache sink `name` (see
/// [`RedisCacheBackend`]).
#[cfg(feature = "redis")]
pub fn redis_epoch_file(data_dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    data_dir.join(format!("{name}.redis-epoch"))
}

/// `kind = "cache", backend = "redis"`: a [`RedisCache`](crate::sink::RedisCache) on the server of `url`
/// (query settings `prefix`, `retry_for`).
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy)]
pub struct RedisCacheBackend;

#[cfg(feature = "redis")]
impl SinkBackend for RedisCacheBackend {
    fn kind(&self) -> &str {
        sink_kinds::CACHE
    }
    fn backend(&self) -> &str {
        sink_kinds::REDIS
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        server_check(options, sink_kinds::REDIS, crate::sink::redis_cache::URL_SETTINGS)?;
        crate::sink::RedisConfig::from_url(options.url.unwrap_or_default()).map_err(|e| SettingsError::field("url", e.to_string()))?;
        Ok(())
    }
    /// Opens the cache and keeps its epoch in `DATA_DIR/{name}.redis-epoch`: a later open on the same data
    /// directory must find the same epoch in Redis, or fails with [`crate::Error::CacheLost`] (the server
    /// restarted empty since: its counters must not restart from zero; `rtb run` rebuilds such a cache
    /// before it opens it, and removes the file).
    fn open(&self, o: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let file = redis_epoch_file(o.data_dir, o.name);
        let io = |e: std::io::Error| rtb_stream::Error::Config(format!("{}: {e}", file.display()));
        let mut cfg = crate::sink::RedisConfig::from_url(server_url(o)?)?;
        cfg.expect_epoch = match std::fs::read_to_string(&file) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let first = cfg.expect_epoch.is_none();
        let redis = crate::sink::RedisCache::open(cfg)?;
        if first {
            std::fs::write(&file, redis.epoch()).map_err(io)?;
        }
        let cache: Arc<dyn Cache> = Arc::new(redis);
        Ok(OpenedSink { name: o.name.to_owned(), kind: sink_kinds::CACHE.to_owned(), handle: Arc::new(CacheSink(cache)) })
    }
}

/// `kind = "database", backend = "postgres"`: a [`PostgresDatabase`](crate::sink::PostgresDatabase) on the
/// server of `url` (query settings `schema`, `retry_for`), its migrations applied when opened.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Copy)]
pub struct PostgresDatabaseBackend;

#[cfg(feature = "postgres")]
impl SinkBackend for PostgresDatabaseBackend {
    fn kind(&self) -> &str {
        sink_kinds::DATABASE
    }
    fn backend(&self) -> &str {
        sink_kinds::POSTGRES
    }
    fn check(&self, options: &SinkOptions<'_>) -> Result<(), SettingsError> {
        server_check(options, sink_kinds::POSTGRES, crate::sink::postgres_db::URL_SETTINGS)?;
        crate::sink::PostgresConfig::from_url(options.url.unwrap_or_default()).map_err(|e| SettingsError::field("url", e.to_string()))?;
        Ok(())
    }
    fn open(&self, o: &SinkOptions<'_>) -> rtb_stream::Result<OpenedSink> {
        let db: Arc<dyn Database> = Arc::new(crate::sink::PostgresDatabase::connect(server_url(o)?)?);
        Ok(OpenedSink { name: o.name.to_owned(), kind: sink_kinds::DATABASE.to_owned(), handle: Arc::new(DatabaseSink(db)) })
    }
}

/// Makes `sinks` durable before the runtime commits the state and offsets of any of its tasks: the effects
/// of a record must never be less durable than the offset that says it was processed (the sinks and the
/// task state are separate stores: an embedded sink's write survives a crash of the process when it
/// returns, and its `sync` — pruning, then `fdatasync` — makes it survive one of the machine before the
/// offsets do; a server's sink flushes what it buffers). One commit barrier per sink, shared by every job
/// that writes it: one sync per commit round for the whole process.
fn durable(rt: &mut Runtime, sinks: &[OpenedSink]) {
    for s in sinks {
        let handle = Arc::clone(&s.handle);
        rt.add_commit_barrier(&format!("sink:{}", s.name), Arc::new(move || handle.sync()));
    }
}

// ------------------------------------------------------------------------------------------- schemas

/// A CPC schema: repartition keys come from the validated event (an invalid one is a dead letter).
#[derive(Debug, Clone)]
struct CpcSchema {
    name: &'static str,
    external: bool,
    wire: WireDecoder,
}

/// A text field of an ad-event by its wire name.
fn ad_field(ev: &AdEvent, field: &str) -> Option<String> {
    Some(match field {
        "device_id" => ev.device_id.clone(),
        "ad_id" => ev.ad_id.clone(),
        "campaign_id" => ev.campaign_id.clone(),
        "advertiser_id" => ev.advertiser_id.clone(),
        "category" => ev.category.clone(),
        "placement" => ev.placement.as_str().to_owned(),
        "product_id" => ev.product_id.clone()?,
        "session_id" => ev.session_id.clone()?,
        "event_id" => ev.event_id.clone()?,
        "order_id" => ev.order_id.clone()?,
        "search_term" => ev.search_term.clone()?,
        _ => return None,
    })
}

/// A text field of a conversion event by its wire name.
fn conversion_field(ev: &ConversionEvent, field: &str) -> Option<String> {
    Some(match field {
        "device_id" => ev.device_id.clone(),
        "order_id" => ev.order_id.clone(),
        "product_id" => ev.product_id.clone(),
        "session_id" => ev.session_id.clone()?,
        "event_id" => ev.event_id.clone()?,
        "referrer_url" => ev.referrer_url.clone()?,
        _ => return None,
    })
}

impl Schema for CpcSchema {
    fn name(&self) -> &str {
        self.name
    }
    fn external(&self) -> bool {
        self.external
    }
    fn key(&self, rec: &LogRecord, fields: &[String]) -> Result<String, String> {
        match self.name {
            schemas::AD_EVENTS => {
                let ev = self.wire.ad(rec)?.value;
                join_key(fields, |f| ad_field(&ev, f))
            }
            schemas::CONVERSION_EVENTS => {
                let ev = self.wire.conversion(rec)?.value;
                join_key(fields, |f| conversion_field(&ev, f))
            }
            _ => {
                let value: serde_json::Value = serde_json::from_slice(&rec.payload).map_err(|e| e.to_string())?;
                join_key(fields, |f| value.get(f).and_then(|v| v.as_str()).map(str::to_owned))
            }
        }
    }
}

// ------------------------------------------------------------------------------------------- kinds

fn stream_err(e: crate::Error) -> rtb_stream::Error {
    e.into()
}

fn ranker(cache: &Arc<dyn Cache>, db: &Arc<dyn Database>, ops: &OpsConfig) -> rtb_stream::Result<Ranker> {
    Ranker::new(Arc::clone(cache), Arc::clone(db), ops.ranking, ops.budget.pause_at_pct, &ops.budget.default_time_zone)
        .map_err(stream_err)
}

struct RankingKind {
    wire: WireDecoder,
}

impl OperatorKind for RankingKind {
    type Settings = RankingSettings;
    fn name(&self) -> &str {
        kinds::RANKING
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::CAMPAIGN_EVENTS)
            .sink(sink_kinds::CACHE)
            .sink(sink_kinds::DATABASE)
            .reads(sink_kinds::CACHE, "CTR")
            .key(&["placement", "category"], true)
            .role("statement")
    }
    fn check(&self, s: &RankingSettings) -> Result<(), SettingsError> {
        if !(0.0..=1.0).contains(&s.default_prior_ctr) {
            return Err(SettingsError::field("default_prior_ctr", "must be within 0..=1"));
        }
        if s.reserve_price < 0 {
            return Err(SettingsError::field("reserve_price", "must not be negative"));
        }
        if s.increment < 0 {
            return Err(SettingsError::field("increment", "must not be negative"));
        }
        Ok(())
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, s: &RankingSettings) -> rtb_stream::Result<()> {
        // Its own parameters; the budget monitor's day and pause threshold from the plan.
        let mut ops = peer_config(&stage)?;
        ops.ranking = s.config();
        let cache = cache_of(stage.sink(sink_kinds::CACHE)?)?;
        let db = database_of(stage.sink(sink_kinds::DATABASE)?)?;
        durable(rt, &stage.sinks);
        rt.spawn(stage.job, self.wire.campaign_decoder(), move |_, scope| {
            let r = ranker(&cache, &db, &ops)?;
            let op = RankingStatement::new(scope, Arc::clone(&cache), Arc::clone(&db), r).map_err(stream_err)?;
            Ok(op)
        })
    }
}

struct PerformanceKind {
    wire: WireDecoder,
}

impl OperatorKind for PerformanceKind {
    type Settings = PerformanceSettings;
    fn name(&self) -> &str {
        kinds::PERFORMANCE
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::AD_EVENTS)
            .sink(sink_kinds::CACHE)
            .sink(sink_kinds::DATABASE)
            .reads(sink_kinds::DATABASE, "campaigns")
            .key(&["campaign_id"], true)
            .role("statement")
    }
    fn check(&self, s: &PerformanceSettings) -> Result<(), SettingsError> {
        positive("window", s.window)?;
        match s.late_policy {
            PerformanceLatePolicy::Drop => Err(SettingsError::field(
                "late_policy",
                "`drop` is not accepted: late ad-events are never silently lost (SPEC §4); use `correct` or `side-output`",
            )),
            PerformanceLatePolicy::SideOutput if s.max_lateness.is_some() => Err(SettingsError::field(
                "max_lateness",
                "only applies with late_policy = \"correct\"",
            )),
            _ => Ok(()),
        }
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, s: &PerformanceSettings) -> rtb_stream::Result<()> {
        let ops = peer_config(&stage)?;
        let cfg = s.config();
        let cache = cache_of(stage.sink(sink_kinds::CACHE)?)?;
        let db = database_of(stage.sink(sink_kinds::DATABASE)?)?;
        durable(rt, &stage.sinks);
        rt.spawn(stage.job, self.wire.ad_decoder(), move |task, scope| {
            let r = ranker(&cache, &db, &ops)?;
            let op = PerformanceStatement::new(scope, task.partition, Arc::clone(&cache), cfg, r).map_err(stream_err)?;
            Ok(op)
        })
    }
}

struct ConversionMatchingKind {
    wire: WireDecoder,
}

impl OperatorKind for ConversionMatchingKind {
    type Settings = ConversionSettings;
    fn name(&self) -> &str {
        kinds::CONVERSION_MATCHING
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::CONVERSION_EVENTS)
            .input(schemas::AD_EVENTS)
            .sink(sink_kinds::DATABASE)
            .key(&["device_id", "product_id"], true)
            .role("statement")
    }
    fn check(&self, s: &ConversionSettings) -> Result<(), SettingsError> {
        positive("window", s.window)
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, s: &ConversionSettings) -> rtb_stream::Result<()> {
        let cfg = ConversionConfig { attribution_window: s.window.to_std() };
        let db = database_of(stage.sink(sink_kinds::DATABASE)?)?;
        durable(rt, &stage.sinks);
        // Inputs by position: the second is the clicks topic (whatever its name), the first the conversions
        // (or the topic repartitioning them).
        let clicks: Arc<str> = stage
            .job
            .inputs
            .get(1)
            .map(|t| Arc::from(t.as_str()))
            .ok_or_else(|| rtb_stream::Error::Config(format!("operator `{}` needs two inputs", stage.operator)))?;
        let wire = self.wire.clone();
        let decoder = move |rec: &LogRecord| -> Result<Record<String, MatchInput>, String> {
            if *rec.topic == *clicks {
                wire.ad(rec).map(|r| r.map(MatchInput::Ad))
            } else {
                wire.conversion(rec).map(|r| r.map(MatchInput::Conversion))
            }
        };
        rt.spawn(stage.job, decoder, move |_, scope| {
            let op = ConversionMatcher::new(scope, Arc::clone(&db), cfg).map_err(stream_err)?;
            Ok(op)
        })
    }
}

struct DuplicateDetectionKind {
    wire: WireDecoder,
}

impl OperatorKind for DuplicateDetectionKind {
    type Settings = DedupSettings;
    fn name(&self) -> &str {
        kinds::DUPLICATE_DETECTION
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::AD_EVENTS)
            .output(schemas::COMPENSATION_EVENTS)
            .key(&["device_id", "ad_id"], true)
            .role("statement")
    }
    fn check(&self, s: &DedupSettings) -> Result<(), SettingsError> {
        positive("window", s.window)
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, s: &DedupSettings) -> rtb_stream::Result<()> {
        let cfg = DedupConfig {
            window: s.window.to_std(),
            retention: s.retention.to_std(),
            output_topic: stage.output(0)?.to_owned(),
        };
        rt.spawn(stage.job, self.wire.ad_decoder(), move |_, scope| {
            DuplicateClickDetector::new(scope, cfg.clone()).map_err(stream_err)
        })
    }
}

struct BalanceKind {
    wire: WireDecoder,
}

impl OperatorKind for BalanceKind {
    type Settings = NoSettings;
    fn name(&self) -> &str {
        kinds::BALANCE
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::AD_EVENTS)
            .sink(sink_kinds::DATABASE)
            .key(&["advertiser_id"], false)
            .role("worker")
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, _: &NoSettings) -> rtb_stream::Result<()> {
        let db = database_of(stage.sink(sink_kinds::DATABASE)?)?;
        durable(rt, &stage.sinks);
        rt.spawn(stage.job, self.wire.ad_decoder(), move |_, _| {
            Ok(BalanceWorker::new(Arc::clone(&db)))
        })
    }
}

struct BudgetMonitorKind {
    wire: WireDecoder,
}

impl OperatorKind for BudgetMonitorKind {
    type Settings = BudgetSettings;
    fn name(&self) -> &str {
        kinds::BUDGET_MONITOR
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::AD_EVENTS)
            .output(schemas::CAMPAIGN_EVENTS)
            .sink(sink_kinds::CACHE)
            .sink(sink_kinds::DATABASE)
            .reads(sink_kinds::DATABASE, "daily budget")
            .key(&["campaign_id"], false)
            .role("worker")
    }
    fn check(&self, s: &BudgetSettings) -> Result<(), SettingsError> {
        if s.pause_at_pct == 0 {
            return Err(SettingsError::field("pause_at_pct", "must be positive"));
        }
        if s.alert_thresholds_pct.contains(&0) {
            return Err(SettingsError::field("alert_thresholds_pct", "thresholds must be positive"));
        }
        crate::calendar::parse_time_zone(&s.default_time_zone)
            .map_err(|e| SettingsError::field("default_time_zone", e.to_string()))?;
        Ok(())
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, s: &BudgetSettings) -> rtb_stream::Result<()> {
        let cfg = BudgetConfig {
            alert_thresholds_pct: s.alert_thresholds_pct.clone(),
            pause_at_pct: s.pause_at_pct,
            default_time_zone: s.default_time_zone.clone(),
            resume_on_processing_time: s.resume_on_processing_time,
            status_topic: stage.output(0)?.to_owned(),
        };
        let cache = cache_of(stage.sink(sink_kinds::CACHE)?)?;
        let db = database_of(stage.sink(sink_kinds::DATABASE)?)?;
        durable(rt, &stage.sinks);
        rt.spawn(stage.job, self.wire.ad_decoder(), move |_, scope| {
            let op = BudgetMonitor::new(scope, Arc::clone(&cache), Arc::clone(&db), cfg.clone()).map_err(stream_err)?;
            Ok(op)
        })
    }
}

struct CompensationKind {
    wire: WireDecoder,
}

impl OperatorKind for CompensationKind {
    type Settings = NoSettings;
    fn name(&self) -> &str {
        kinds::COMPENSATION
    }
    fn rules(&self) -> KindRules {
        KindRules::new()
            .input(schemas::COMPENSATION_EVENTS)
            .sink(sink_kinds::CACHE)
            .sink(sink_kinds::DATABASE)
            .key(&["advertiser_id"], false)
            .role("worker")
    }
    fn spawn(&self, rt: &mut Runtime, stage: StageContext<'_>, _: &NoSettings) -> rtb_stream::Result<()> {
        // A refund lowers the spend of the day the budget monitor counts it in: its time zone.
        let tz = peer_config(&stage)?.budget.default_time_zone;
        let cache = cache_of(stage.sink(sink_kinds::CACHE)?)?;
        let db = database_of(stage.sink(sink_kinds::DATABASE)?)?;
        durable(rt, &stage.sinks);
        rt.spawn(stage.job, self.wire.compensation_decoder(), move |_, _| {
            let op = CompensationWorker::new(Arc::clone(&cache), Arc::clone(&db), &tz).map_err(stream_err)?;
            Ok(op)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    #[cfg(all(feature = "redis", feature = "postgres"))]
    fn registers_four_schemas_seven_kinds_four_backends() {
        let r = cpc_registry().unwrap();
        assert_eq!(
            r.kind_names(),
            ["balance", "budget-monitor", "compensation", "conversion-matching", "duplicate-detection", "performance", "ranking"]
        );
        assert_eq!(r.schema_names().len(), 4);
        assert!(!r.schema(schemas::COMPENSATION_EVENTS).unwrap().external());
        assert_eq!(r.backend_names("cache"), ["embedded", "memory", "redis"]);
        assert_eq!(r.backend_names("database"), ["embedded", "memory", "postgres"]);
    }

    #[test]
    #[cfg(all(feature = "redis", feature = "postgres"))]
    fn server_backends_need_a_url_and_refuse_a_path() {
        let r = cpc_registry().unwrap();
        let dir = std::path::Path::new("data");
        let o = |path: Option<&'static str>, url: Option<&'static str>| SinkOptions {
            name: "s",
            path: path.map(std::path::Path::new),
            url,
            data_dir: dir,
        };
        for (kind, backend, good) in
            [("cache", "redis", "redis://127.0.0.1:6379/0?prefix=p:"), ("database", "postgres", "postgres://root@h/db?schema=rtb_x")]
        {
            let b = r.sink_backend(kind, backend).unwrap();
            assert!(b.check(&o(None, Some(good))).is_ok(), "{backend}");
            assert!(b.check(&o(None, None)).unwrap_err().to_string().contains("url"), "{backend}");
            assert!(b.check(&o(Some("p"), Some(good))).unwrap_err().to_string().contains("path"), "{backend}");
        }
        let redis = r.sink_backend("cache", "redis").unwrap();
        assert!(redis.check(&o(None, Some("redis://h?prefix=bad prefix"))).is_err());
        let pg = r.sink_backend("database", "postgres").unwrap();
        assert!(pg.check(&o(None, Some("postgres://h/db?schema=Bad"))).is_err());
    }

    #[test]
    fn performance_defaults_correct_late_events_for_24_hours() {
        let r = cpc_registry().unwrap();
        let s = r.kind(kinds::PERFORMANCE).unwrap().resolve_settings(&serde_json::Value::Null).unwrap();
        let s: PerformanceSettings = serde_json::from_value(s).unwrap();
        assert_eq!(s.config().max_lateness, Duration::from_secs(24 * 3_600));
        assert_eq!((s.config().window, s.config().grace), (Duration::from_secs(300), Duration::from_secs(60)));
        let side: PerformanceSettings = serde_json::from_value(json!({"late_policy": "side-output"})).unwrap();
        assert_eq!(side.config().max_lateness, Duration::ZERO, "no written window stays correctable");
    }

    #[test]
    fn settings_errors_name_their_field() {
        let r = cpc_registry().unwrap();
        let perf = r.kind(kinds::PERFORMANCE).unwrap();
        let e = perf.resolve_settings(&json!({"late_policy": "drop"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("late_policy"));
        let e = perf.resolve_settings(&json!({"late_policy": "side-output", "max_lateness": "1h"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("max_lateness"));
        let e = r.kind(kinds::RANKING).unwrap().resolve_settings(&json!({"K": 5})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("K"));
        let e = r.kind(kinds::BUDGET_MONITOR).unwrap().resolve_settings(&json!({"default_time_zone": "Mars/Base"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("default_time_zone"));
        let e = r.kind(kinds::BALANCE).unwrap().resolve_settings(&json!({"window": "5m"})).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("window"));
    }

    #[test]
    fn repartition_keys_come_from_the_validated_event() {
        let r = cpc_registry().unwrap();
        let ads = r.schema(schemas::AD_EVENTS).unwrap();
        let rec = |payload: &str| LogRecord {
            topic: Arc::from("clicks"),
            partition: 0,
            offset: 0,
            timestamp: 0,
            key: None,
            payload: Arc::from(payload.as_bytes()),
            origin: None,
        };
        let click = rec(r#"{"event_type":"CLICK","timestamp":"2024-01-15T10:30:00Z","device_id":"device_12345","ad_id":"ad_001","campaign_id":"campaign_100","advertiser_id":"advertiser_50","placement":"HOME","category":"c","bid_price":1500,"actual_price":1200}"#);
        let by = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(ads.key(&click, &by(&["campaign_id"])), Ok("campaign_100".to_string()));
        assert_eq!(ads.key(&click, &by(&["placement", "category"])), Ok("HOME:c".to_string()));
        assert_eq!(
            ads.key(&click, &by(&["product_id"])),
            Err("missing field `product_id`".to_string()),
            "an absent optional field cannot be a key"
        );
        assert!(ads.key(&rec("{"), &by(&["campaign_id"])).is_err(), "an invalid event is a dead letter");
    }

    #[test]
    fn ops_config_takes_each_part_from_its_kind_and_topics_from_the_plan() {
        let peers = vec![
            PeerStage { operator: "r".into(), kind: kinds::RANKING.into(), settings: json!({"prior_strength": 7, "reserve_price": 50}) },
            PeerStage { operator: "b".into(), kind: kinds::BUDGET_MONITOR.into(), settings: json!({"alert_thresholds_pct": [50]}) },
        ];
        let topics = vec![("ad-events".to_owned(), "clicks-v2".to_owned())];
        let ops = ops_config(&peers, &topics).unwrap();
        assert_eq!((ops.ranking.prior_strength, ops.ranking.reserve_price, ops.ranking.increment), (7, 50, 10));
        assert_eq!(ops.budget.alert_thresholds_pct, vec![50]);
        assert_eq!(ops.topics.ad_events, "clicks-v2");
        assert_eq!(ops.topics.campaign_events, "campaign-events");
    }
}
