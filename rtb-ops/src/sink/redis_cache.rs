//! [`RedisCache`]: the [`Cache`] on a Redis server (feature `redis`).
//!
//! Layout (every key starts with the configurable prefix `P`, empty by default):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P rtb:{placement}:{category}` | sorted set | the ranking: member = campaign id, score = rank |
//! | `P rtb-cpc:{placement}:{category}` | hash | campaign id → the CPC it pays (KRW) |
//! | `P rtb-entry:{placement}:{category}` | hash | campaign id → the whole [`RankedEntry`] (bincode) |
//! | `P rtb-rankings` | set | `{placement}:{category}` of every ranking written |
//! | `P rtb-win:{c\|a}:{id}` | hash | `{window start}:{shard}` → the window row (JSON, counters as strings) |
//! | `P rtb-winids:{c\|a}` | set | the ids with window rows, per scope |
//! | `P rtb-tot:campaign:{id}`, `P rtb-tot:category:{category}` | hash | cumulative counters (`impressions`, `clicks`, `conversions`, `spend`, `revenue`) |
//! | `P rtb-spend:{campaign}:{YYYY-MM-DD}` | string | the day's spend (KRW) |
//! | `P rtb-spendkeys` | hash | applied spend idempotency key → its event time |
//! | `P rtb-spendkeys-by-time` | sorted set | the same keys scored by event time (the pruning index) |
//! | `P rtb-mark:{key}` | string | once-markers |
//! | `P rtb-epoch` | string | this cache's epoch (see below) |
//!
//! Atomicity: every write is one Lua script — a ranking replaced (delete, then add), a window row with the
//! totals it moves (the previous row is read inside it, so a replayed row moves nothing), `add_spend_once`
//! (`HSETNX` of the key, then `INCRBY`), a chunk of 1 000 pruned keys, a mark. Reads that take several
//! commands are one `MULTI`/`EXEC`. Every call runs under the bounded retry loop of [`super::retry`]. Keys
//! with the same prefix must live on one server (no Cluster hash tags).
//!
//! **Lost data.** Redis is a cache: a server without persistence that restarts comes back empty. The first
//! open of an empty prefix writes a random *epoch* to `P rtb-epoch`; every script and every read checks it
//! inside the same atomic step, and a missing or changed epoch fails the call with [`Error::CacheLost`]
//! (after which nothing is written or read), so no spend counter restarts from zero and no pause, alert or
//! charge is decided on lost data: processing stops with that error. [`RedisConfig::expect_epoch`] carries
//! the epoch across processes (the `redis` sink backend keeps it in the data directory), so opening a lost
//! cache fails too; `rtb run` detects the loss before it opens its sinks ([`RedisCache::current_epoch`]),
//! empties the prefix ([`RedisCache::clear`]) and rebuilds the cache by re-processing the stages that write
//! it (rtb-topology's `app::servers::prepare_caches`).

use std::sync::Arc;
use std::time::Duration;

use redis::{Client, Connection, RetryMethod, Script};
use rtb_stream::Timestamp;
use serde::{Deserialize, Serialize};

use super::embedded_cache::{dec, enc};
use super::keys::{merge_shards, Pruner};
use super::retry::{self, Pool, RetryPolicy, Try};
use super::types::*;
use super::{ranking_key, Cache};
use crate::calendar::Day;
use crate::error::{Error, Result};
use crate::schema::{Placement, WireEnum};

const SINK: &str = "redis";

/// Settings a Redis sink URL may carry in its query string (`redis://host:6379/0?prefix=t1:&retry_for=30s`).
pub const URL_SETTINGS: &[&str] = &["prefix", "retry_for"];

const WINDOW_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('RTB_CACHE_LOST the epoch key is gone or changed') end
local old = redis.call('HGET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
if ARGV[5] ~= '1' then return 0 end
local f = {'impressions', 'clicks', 'conversions', 'spend', 'revenue'}
local function neg(s) if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end return '-' .. s end
if old then
  local o = cjson.decode(old)
  local ck = ARGV[6] .. 'rtb-tot:campaign:' .. o.campaign_id
  local gk = ARGV[6] .. 'rtb-tot:category:' .. o.category
  for i = 1, 5 do
    if o.m[i] ~= '0' then
      redis.call('HINCRBY', ck, f[i], neg(o.m[i]))
      redis.call('HINCRBY', gk, f[i], neg(o.m[i]))
    end
  end
end
for i = 1, 5 do
  if ARGV[6 + i] ~= '0' then
    redis.call('HINCRBY', KEYS[4], f[i], ARGV[6 + i])
    redis.call('HINCRBY', KEYS[5], f[i], ARGV[6 + i])
  end
end
return 1
";

const SPEND_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('RTB_CACHE_LOST the epoch key is gone or changed') end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 0 then
  return {redis.call('INCRBY', KEYS[2], 0), 0}
end
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
return {redis.call('INCRBY', KEYS[2], ARGV[4]), 1}
";

const PRUNE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('RTB_CACHE_LOST the epoch key is gone or changed') end
local ks = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
if #ks == 0 then return 0 end
redis.call('HDEL', KEYS[2], unpack(ks))
redis.call('ZREM', KEYS[3], unpack(ks))
return #ks
";

/// Replaces a ranking: KEYS = epoch, sorted set, CPC hash, entry hash, index; ARGV = epoch, index member,
/// then (rank, campaign id, CPC, encoded entry) per entry.
const RANKING_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('RTB_CACHE_LOST the epoch key is gone or changed') end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
for i = 3, #ARGV, 4 do
  redis.call('ZADD', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[i + 2])
  redis.call('HSET', KEYS[4], ARGV[i + 1], ARGV[i + 3])
end
redis.call('SADD', KEYS[5], ARGV[2])
return 1
";

const MARK_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('RTB_CACHE_LOST the epoch key is gone or changed') end
if redis.call('SET', KEYS[2], '1', 'NX') then return 1 end
return 0
";

/// The epoch key's value: created once per cache (the first open on an empty prefix).
fn new_epoch() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{nanos}-{}", std::process::id())
}

/// Connection settings of a [`RedisCache`].
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Server URL (`redis://[user:pass@]host:port[/db]`), without the settings below.
    pub url: String,
    /// Prefix of every key this cache writes (default empty: the ranking keys are exactly
    /// `rtb:{placement}:{category}`); tests use a unique one each.
    pub prefix: String,
    /// Retries while the server is unreachable.
    pub retry: RetryPolicy,
    /// Idempotency key retention and pruning step.
    pub retention: KeyRetention,
    /// Connect timeout, and read/write timeout of each command.
    pub timeout: Duration,
    /// The epoch this cache had when last opened (`None`: first open; an empty prefix gets a new epoch,
    /// an existing one is adopted). With `Some`, a missing or different epoch fails the open with
    /// [`Error::CacheLost`].
    pub expect_epoch: Option<String>,
}

impl RedisConfig {
    /// Settings from a URL whose query may hold `prefix=` and `retry_for=` (see [`URL_SETTINGS`]); the
    /// rest of the URL goes to the driver.
    pub fn from_url(url: &str) -> Result<Self> {
        let (url, settings) = retry::take_settings(url, URL_SETTINGS)?;
        let mut cfg = Self {
            url,
            prefix: String::new(),
            retry: RetryPolicy::default(),
            retention: KeyRetention::default(),
            timeout: Duration::from_secs(5),
            expect_epoch: None,
        };
        for (k, v) in settings {
            match k.as_str() {
                "prefix" => {
                    retry::check_name("Redis key prefix", &v, |c| c.is_ascii_alphanumeric() || "_-.:".contains(c))?;
                    cfg.prefix = v;
                }
                _ => cfg.retry.give_up_after = retry::parse_duration(&k, &v)?,
            }
        }
        Ok(cfg)
    }
}

/// A [`Cache`] on a Redis server. Cheap to clone (shares one connection pool); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    cfg: RedisConfig,
    epoch: String,
    epoch_key: String,
    pool: Pool<Connection>,
    pruner: Pruner,
    window: Script,
    spend: Script,
    prune: Script,
    ranking: Script,
    mark: Script,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache").field("url", &self.cfg.url).field("prefix", &self.cfg.prefix).finish()
    }
}

/// A window row as stored: the counters as decimal strings, so the Lua script moves totals exactly.
#[derive(Serialize, Deserialize)]
struct StoredWindow {
    campaign_id: String,
    category: String,
    window_end: Timestamp,
    m: [String; 5],
}

/// What one try of a call failed with.
enum RedisFailure {
    Driver(redis::RedisError),
    Lost,
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisFailure::Driver(e) => write!(f, "{e}"),
            RedisFailure::Lost => f.write_str("epoch lost"),
        }
    }
}

fn transient(e: redis::RedisError) -> Try<RedisFailure> {
    if e.to_string().contains("RTB_CACHE_LOST") {
        return Try::Final(RedisFailure::Lost);
    }
    match e.retry_method() {
        RetryMethod::NoRetry => Try::Final(RedisFailure::Driver(e)),
        _ => Try::Transient(RedisFailure::Driver(e)),
    }
}

fn scope_char(s: MetricsScope) -> char {
    match s {
        MetricsScope::Campaign => 'c',
        MetricsScope::Ad => 'a',
    }
}

fn metrics_of(fields: &std::collections::HashMap<String, i64>) -> Metrics {
    let g = |k: &str| fields.get(k).copied().unwrap_or(0);
    Metrics { impressions: g("impressions"), clicks: g("clicks"), conversions: g("conversions"), spend: g("spend"), revenue: g("revenue") }
}

fn parse<T: redis::FromRedisValue>(v: redis::Value) -> redis::RedisResult<T> {
    redis::from_redis_value(v).map_err(redis::RedisError::from)
}

impl RedisCache {
    /// Connects to the server of `cfg` (retrying within its policy), checks it answers and sets up or
    /// verifies the cache's epoch (see the module documentation).
    pub fn open(cfg: RedisConfig) -> Result<Self> {
        let mut cache = Self::bare(cfg)?;
        if let Some(inner) = Arc::get_mut(&mut cache.inner) {
            inner.pool = Pool::new(16);
        }
        let (key, expected) = (cache.inner.epoch_key.clone(), cache.inner.cfg.expect_epoch.clone());
        let candidate = new_epoch();
        let found: Option<String> = cache.call("open", |c| match &expected {
            Some(_) => redis::cmd("GET").arg(&key).query(c),
            None => {
                redis::cmd("SET").arg(&key).arg(&candidate).arg("NX").query::<Option<String>>(c)?;
                redis::cmd("GET").arg(&key).query(c)
            }
        })?;
        let epoch = match (expected, found) {
            (None, Some(found)) => found,
            (Some(want), Some(found)) if want == found => found,
            (Some(want), found) => {
                return Err(cache.lost(
                    "open",
                    &format!("expected epoch `{want}`, found {}", found.map_or("none".to_owned(), |f| format!("`{f}`"))),
                ))
            }
            (None, None) => return Err(Error::sink(SINK, "open", "the epoch key vanished right after it was set")),
        };
        match Arc::get_mut(&mut cache.inner) {
            Some(inner) => inner.epoch = epoch,
            None => return Err(Error::sink(SINK, "open", "cache handle shared while opening")),
        }
        Ok(cache)
    }

    /// The epoch the server holds for `cfg`'s prefix (`None`: no epoch, an empty or lost cache), read
    /// without opening the cache.
    pub fn current_epoch(cfg: &RedisConfig) -> Result<Option<String>> {
        let probe = Self::bare(cfg.clone())?;
        let key = probe.inner.epoch_key.clone();
        probe.call("current_epoch", |c| redis::cmd("GET").arg(&key).query(c))
    }

    /// Deletes every key of the cache at `cfg` (the ones under its prefix that this cache writes:
    /// `rtb:*` and `rtb-*`), the epoch first, so that it can be rebuilt from nothing. Returns how many went.
    pub fn clear(cfg: &RedisConfig) -> Result<u64> {
        let c = Self::bare(cfg.clone())?;
        let epoch_key = c.inner.epoch_key.clone();
        let patterns = [format!("{}rtb:*", cfg.prefix), format!("{}rtb-*", cfg.prefix)];
        c.call("clear", |con| {
            let mut n: u64 = redis::cmd("DEL").arg(&epoch_key).query(con)?;
            for pattern in &patterns {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) =
                        redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000).query(con)?;
                    if !keys.is_empty() {
                        n += redis::cmd("DEL").arg(&keys).query::<u64>(con)?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(n)
        })
    }

    /// A handle without an epoch (for [`Self::current_epoch`] and [`Self::clear`] only).
    fn bare(cfg: RedisConfig) -> Result<Self> {
        let client = Client::open(cfg.url.as_str()).map_err(|e| Error::sink(SINK, "open", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                pruner: Pruner::new(cfg.retention),
                epoch: String::new(),
                epoch_key: format!("{}rtb-epoch", cfg.prefix),
                cfg,
                pool: Pool::new(1),
                window: Script::new(WINDOW_LUA),
                spend: Script::new(SPEND_LUA),
                prune: Script::new(PRUNE_LUA),
                ranking: Script::new(RANKING_LUA),
                mark: Script::new(MARK_LUA),
            }),
        })
    }

    /// [`Self::open`] on a URL (see [`RedisConfig::from_url`]).
    pub fn connect(url: &str) -> Result<Self> {
        Self::open(RedisConfig::from_url(url)?)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.cfg.prefix
    }

    /// This cache's epoch (keep it to open the same cache later with [`RedisConfig::expect_epoch`]).
    pub fn epoch(&self) -> &str {
        &self.inner.epoch
    }

    /// How many spend idempotency keys are held (for tests and monitoring).
    pub fn spend_keys_held(&self) -> Result<u64> {
        let k = self.key("rtb-spendkeys");
        self.call("spend_keys_held", |c| redis::cmd("HLEN").arg(&k).query(c))
    }

    /// Deletes every key under this cache's prefix, its epoch included (tests; also what a Redis restarted
    /// empty looks like to this prefix). Refuses an empty prefix.
    pub fn delete_all(&self) -> Result<u64> {
        if self.inner.cfg.prefix.is_empty() {
            return Err(Error::Config("refusing to delete every key of a Redis cache without a prefix".into()));
        }
        let pattern = format!("{}*", self.inner.cfg.prefix);
        let epoch_key = self.inner.epoch_key.clone();
        self.call("delete_all", |c| {
            // The epoch first: from then on no writer recreates a deleted key (as after a real restart).
            let mut n: u64 = redis::cmd("DEL").arg(&epoch_key).query(c)?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) =
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(c)?;
                if !keys.is_empty() {
                    n += redis::cmd("DEL").arg(&keys).query::<u64>(c)?;
                }
                if next == 0 {
                    return Ok(n);
                }
                cursor = next;
            }
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.inner.cfg.prefix)
    }

    fn lost(&self, op: &'static str, detail: &str) -> Error {
        tracing::error!(
            sink = SINK,
            operation = op,
            prefix = %self.inner.cfg.prefix,
            "Redis lost this cache's data ({detail}): refusing to count or serve from it"
        );
        Error::CacheLost {
            sink: SINK,
            detail: format!(
                "`{}` ({detail}): the server restarted empty or the keys were deleted; nothing is counted or served \
                 from the lost data",
                self.inner.epoch_key
            ),
        }
    }

    fn call<T>(&self, op: &'static str, mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        let i = &self.inner;
        let r = retry::call(
            SINK,
            op,
            &i.cfg.retry,
            &i.pool,
            || {
                let c = i.client.get_connection_with_timeout(i.cfg.timeout).map_err(transient)?;
                c.set_read_timeout(Some(i.cfg.timeout)).map_err(transient)?;
                c.set_write_timeout(Some(i.cfg.timeout)).map_err(transient)?;
                Ok(c)
            },
            |c| f(c).map_err(transient),
        );
        match r {
            Err(Error::Sink { reason, .. }) if reason == "epoch lost" => Err(self.lost(op, "the epoch key is gone or changed")),
            r => r,
        }
    }

    /// Runs the read commands `build` adds in one `MULTI`/`EXEC` after a read of the epoch key; fails with
    /// [`Error::CacheLost`] when the epoch is not this cache's. Returns the replies of `build`'s commands.
    fn read(&self, op: &'static str, build: impl Fn(&mut redis::Pipeline)) -> Result<Vec<redis::Value>> {
        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg(&self.inner.epoch_key);
        build(&mut p);
        let mut replies: Vec<redis::Value> = self.call(op, |c| p.query(c))?;
        let epoch: Option<String> = match replies.first() {
            Some(v) => redis::from_redis_value_ref(v).map_err(|e| Error::sink(SINK, op, e))?,
            None => None,
        };
        if epoch.as_deref() != Some(self.inner.epoch.as_str()) {
            return Err(self.lost(op, "the epoch key is gone or changed"));
        }
        replies.remove(0);
        Ok(replies)
    }

    fn read_one<T: redis::FromRedisValue>(&self, op: &'static str, build: impl Fn(&mut redis::Pipeline)) -> Result<T> {
        let v = self.read(op, build)?.into_iter().next().unwrap_or(redis::Value::Nil);
        parse(v).map_err(|e| Error::sink(SINK, op, e))
    }

    fn invoke<T: redis::FromRedisValue>(&self, op: &'static str, script: &Script, keys: &[String], args: &[&[u8]]) -> Result<T> {
        let mut inv = script.prepare_invoke();
        inv.key(&self.inner.epoch_key).arg(&self.inner.epoch);
        for k in keys {
            inv.key(k);
        }
        for a in args {
            inv.arg(*a);
        }
        self.call(op, |c| inv.invoke(c))
    }

    fn window_key(&self, scope: MetricsScope, id: &str) -> String {
        self.key(&format!("rtb-win:{}:{id}", scope_char(scope)))
    }

    fn ids_key(&self, scope: MetricsScope) -> String {
        self.key(&format!("rtb-winids:{}", scope_char(scope)))
    }

    fn spend_key(&self, campaign_id: &str, day: Day) -> String {
        self.key(&format!("rtb-spend:{campaign_id}:{day}"))
    }

    fn decode_windows(&self, scope: MetricsScope, id: &str, fields: Vec<(String, String)>) -> Result<Vec<WindowMetrics>> {
        let corrupt = |reason: String| Error::SinkCorrupt { sink: SINK, key: self.window_key(scope, id), reason };
        let mut rows = Vec::with_capacity(fields.len());
        for (field, value) in fields {
            let (start, shard) = field.split_once(':').ok_or_else(|| corrupt(format!("field `{field}`")))?;
            let window_start: Timestamp = start.parse().map_err(|_| corrupt(format!("field `{field}`")))?;
            let shard: u32 = shard.parse().map_err(|_| corrupt(format!("field `{field}`")))?;
            let s: StoredWindow = serde_json::from_str(&value).map_err(|e| corrupt(e.to_string()))?;
            let n = |i: usize| s.m[i].parse::<i64>().map_err(|e| corrupt(format!("counter `{}`: {e}", s.m[i])));
            let metrics = Metrics { impressions: n(0)?, clicks: n(1)?, conversions: n(2)?, spend: n(3)?, revenue: n(4)? };
            rows.push(WindowMetrics {
                scope,
                id: id.to_owned(),
                campaign_id: s.campaign_id,
                category: s.category,
                window_start,
                window_end: s.window_end,
                shard,
                metrics,
            });
        }
        rows.sort_by_key(|r| (r.window_start, r.shard));
        Ok(merge_shards(rows))
    }

    fn totals(&self, op: &'static str, key: String) -> Result<Metrics> {
        let fields: std::collections::HashMap<String, i64> = self.read_one(op, |p| {
            p.cmd("HGETALL").arg(&key);
        })?;
        Ok(metrics_of(&fields))
    }
}

impl Cache for RedisCache {
    fn sync(&self) -> Result<()> {
        if let Some(cutoff) = self.inner.pruner.due() {
            let n = self.prune_spend_keys(cutoff)?;
            self.inner.pruner.done(cutoff);
            tracing::debug!(cutoff, pruned = n, "pruned Redis spend idempotency keys");
        }
        Ok(())
    }

    fn put_ranking(&self, placement: Placement, category: &str, entries: &[RankedEntry]) -> Result<()> {
        let suffix = format!("{}:{category}", placement.as_str());
        let keys = [
            self.key(&ranking_key(placement, category)),
            self.key(&format!("rtb-cpc:{suffix}")),
            self.key(&format!("rtb-entry:{suffix}")),
            self.key("rtb-rankings"),
        ];
        let mut owned: Vec<Vec<u8>> = vec![suffix.into_bytes()];
        for e in entries {
            owned.push(e.rank.to_string().into_bytes());
            owned.push(e.campaign_id.clone().into_bytes());
            owned.push(e.cpc.to_string().into_bytes());
            owned.push(enc("ranked entry", e)?);
        }
        let args: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        self.invoke::<i64>("put_ranking", &self.inner.ranking, &keys, &args).map(drop)
    }

    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>> {
        let z = self.key(&ranking_key(placement, category));
        let entry = self.key(&format!("rtb-entry:{}:{category}", placement.as_str()));
        let mut replies = self
            .read("ranking", |p| {
                p.cmd("ZRANGE").arg(&z).arg(0).arg(-1).cmd("HGETALL").arg(&entry);
            })?
            .into_iter();
        let members: Vec<String> = parse(replies.next().unwrap_or(redis::Value::Nil)).map_err(|e| Error::sink(SINK, "ranking", e))?;
        let values: std::collections::HashMap<String, Vec<u8>> =
            parse(replies.next().unwrap_or(redis::Value::Nil)).map_err(|e| Error::sink(SINK, "ranking", e))?;
        members
            .iter()
            .map(|m| {
                let bytes = values.get(m).ok_or_else(|| Error::SinkCorrupt {
                    sink: SINK,
                    key: entry.clone(),
                    reason: format!("no entry for ranked member `{m}`"),
                })?;
                dec(SINK, entry.as_bytes(), bytes)
            })
            .collect()
    }

    fn rankings(&self) -> Result<Vec<(Placement, String, Vec<RankedEntry>)>> {
        let index = self.key("rtb-rankings");
        let members: Vec<String> = self.read_one("rankings", |p| {
            p.cmd("SMEMBERS").arg(&index);
        })?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let parsed = m.split_once(':').and_then(|(p, cat)| Placement::parse(p).map(|p| (p, cat.to_owned())));
            let (placement, category) = parsed.ok_or_else(|| Error::SinkCorrupt {
                sink: SINK,
                key: index.clone(),
                reason: format!("member `{m}` is not placement:category"),
            })?;
            let entries = self.ranking(placement, &category)?;
            out.push((placement, category, entries));
        }
        out.sort_by_key(|r| ranking_key(r.0, &r.1));
        Ok(out)
    }

    fn write_window_metrics(&self, row: &WindowMetrics) -> Result<()> {
        let m = row.metrics;
        let counters = [m.impressions, m.clicks, m.conversions, m.spend, m.revenue].map(|v| v.to_string());
        let stored = StoredWindow {
            campaign_id: row.campaign_id.clone(),
            category: row.category.clone(),
            window_end: row.window_end,
            m: counters.clone(),
        };
        let value = serde_json::to_string(&stored).map_err(|e| Error::Encode { what: "window row", reason: e.to_string() })?;
        let keys = [
            self.window_key(row.scope, &row.id),
            self.ids_key(row.scope),
            self.key(&format!("rtb-tot:campaign:{}", row.campaign_id)),
            self.key(&format!("rtb-tot:category:{}", row.category)),
        ];
        let field = format!("{}:{}", row.window_start, row.shard);
        let campaign = if row.scope == MetricsScope::Campaign { "1" } else { "0" };
        let mut args: Vec<&[u8]> =
            vec![field.as_bytes(), value.as_bytes(), row.id.as_bytes(), campaign.as_bytes(), self.inner.cfg.prefix.as_bytes()];
        args.extend(counters.iter().map(|c| c.as_bytes()));
        self.invoke::<i64>("write_window_metrics", &self.inner.window, &keys, &args).map(drop)
    }

    fn window_metrics(&self, scope: MetricsScope, id: &str) -> Result<Vec<WindowMetrics>> {
        let key = self.window_key(scope, id);
        let fields: Vec<(String, String)> = self.read_one("window_metrics", |p| {
            p.cmd("HGETALL").arg(&key);
        })?;
        self.decode_windows(scope, id, fields)
    }

    fn all_window_metrics(&self, scope: MetricsScope) -> Result<Vec<WindowMetrics>> {
        let ids_key = self.ids_key(scope);
        let mut ids: Vec<String> = self.read_one("all_window_metrics", |p| {
            p.cmd("SMEMBERS").arg(&ids_key);
        })?;
        ids.sort();
        let mut out = Vec::new();
        // One round trip per 500 ids.
        for chunk in ids.chunks(500) {
            let all = self.read("all_window_metrics", |p| {
                for id in chunk {
                    p.cmd("HGETALL").arg(self.window_key(scope, id));
                }
            })?;
            for (id, fields) in chunk.iter().zip(all) {
                let fields: Vec<(String, String)> = parse(fields).map_err(|e| Error::sink(SINK, "all_window_metrics", e))?;
                out.extend(self.decode_windows(scope, id, fields)?);
            }
        }
        Ok(out)
    }

    fn campaign_totals(&self, campaign_id: &str) -> Result<Metrics> {
        self.totals("campaign_totals", self.key(&format!("rtb-tot:campaign:{campaign_id}")))
    }

    fn category_totals(&self, category: &str) -> Result<Metrics> {
        self.totals("category_totals", self.key(&format!("rtb-tot:category:{category}")))
    }

    fn add_spend_once(&self, campaign_id: &str, day: Day, delta: i64, idempotency_key: &str, event_time: Timestamp) -> Result<(i64, bool)> {
        let keys = [self.spend_key(campaign_id, day), self.key("rtb-spendkeys"), self.key("rtb-spendkeys-by-time")];
        let (t, d) = (event_time.to_string(), delta.to_string());
        let (total, applied): (i64, i64) =
            self.invoke("add_spend_once", &self.inner.spend, &keys, &[idempotency_key.as_bytes(), t.as_bytes(), d.as_bytes()])?;
        if applied == 1 {
            self.inner.pruner.note(event_time);
        }
        Ok((total, applied == 1))
    }

    fn prune_spend_keys(&self, before: Timestamp) -> Result<u64> {
        let keys = [self.key("rtb-spendkeys"), self.key("rtb-spendkeys-by-time")];
        let b = before.to_string();
        let mut pruned = 0u64;
        loop {
            let n: u64 = self.invoke("prune_spend_keys", &self.inner.prune, &keys, &[b.as_bytes(), b"1000"])?;
            if n == 0 {
                return Ok(pruned);
            }
            pruned += n;
        }
    }

    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        let key = self.spend_key(campaign_id, day);
        let v: Option<i64> = self.read_one("spend", |p| {
            p.cmd("GET").arg(&key);
        })?;
        Ok(v.unwrap_or(0))
    }

    fn mark_once(&self, key: &str) -> Result<bool> {
        let k = self.key(&format!("rtb-mark:{key}"));
        let r: i64 = self.invoke("mark_once", &self.inner.mark, &[k], &[])?;
        Ok(r == 1)
    }
}
