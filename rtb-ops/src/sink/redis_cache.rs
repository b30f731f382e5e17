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
//!
//! Atomicity: a ranking is replaced in one `MULTI`/`EXEC` (delete, then add); a window row and the totals
//! it moves are one Lua script (the previous row is read inside it, so a replayed row moves nothing);
//! `add_spend_once` is one Lua script (`HSETNX` of the key, then `INCRBY`); pruning is a script per chunk
//! of 1 000 keys. Every call runs under the bounded retry loop of [`super::retry`]. Keys with the same
//! prefix must live on one server (no Cluster hash tags).

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
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[4] ~= '1' then return 0 end
local f = {'impressions', 'clicks', 'conversions', 'spend', 'revenue'}
local function neg(s) if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end return '-' .. s end
if old then
  local o = cjson.decode(old)
  local ck = ARGV[5] .. 'rtb-tot:campaign:' .. o.campaign_id
  local gk = ARGV[5] .. 'rtb-tot:category:' .. o.category
  for i = 1, 5 do
    if o.m[i] ~= '0' then
      redis.call('HINCRBY', ck, f[i], neg(o.m[i]))
      redis.call('HINCRBY', gk, f[i], neg(o.m[i]))
    end
  end
end
for i = 1, 5 do
  if ARGV[5 + i] ~= '0' then
    redis.call('HINCRBY', KEYS[3], f[i], ARGV[5 + i])
    redis.call('HINCRBY', KEYS[4], f[i], ARGV[5 + i])
  end
end
return 1
";

const SPEND_LUA: &str = r"
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return {redis.call('INCRBY', KEYS[1], 0), 0}
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return {redis.call('INCRBY', KEYS[1], ARGV[3]), 1}
";

const PRUNE_LUA: &str = r"
local ks = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ks == 0 then return 0 end
redis.call('HDEL', KEYS[1], unpack(ks))
redis.call('ZREM', KEYS[2], unpack(ks))
return #ks
";

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
    pool: Pool<Connection>,
    pruner: Pruner,
    window: Script,
    spend: Script,
    prune: Script,
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

fn transient(e: redis::RedisError) -> Try<redis::RedisError> {
    match e.retry_method() {
        RetryMethod::NoRetry => Try::Final(e),
        _ => Try::Transient(e),
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

impl RedisCache {
    /// Connects to the server of `cfg` (failing at once if it cannot be reached within the retry policy)
    /// and checks it answers.
    pub fn open(cfg: RedisConfig) -> Result<Self> {
        let client = Client::open(cfg.url.as_str()).map_err(|e| Error::sink(SINK, "open", e))?;
        let cache = Self {
            inner: Arc::new(Inner {
                client,
                pruner: Pruner::new(cfg.retention),
                cfg,
                pool: Pool::new(16),
                window: Script::new(WINDOW_LUA),
                spend: Script::new(SPEND_LUA),
                prune: Script::new(PRUNE_LUA),
            }),
        };
        cache.call("open", |c| redis::cmd("PING").query::<String>(c).map(drop))?;
        Ok(cache)
    }

    /// [`Self::open`] on a URL (see [`RedisConfig::from_url`]).
    pub fn connect(url: &str) -> Result<Self> {
        Self::open(RedisConfig::from_url(url)?)
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.cfg.prefix
    }

    /// How many spend idempotency keys are held (for tests and monitoring).
    pub fn spend_keys_held(&self) -> Result<u64> {
        let k = self.key("rtb-spendkeys");
        self.call("spend_keys_held", |c| redis::cmd("HLEN").arg(&k).query(c))
    }

    /// Deletes every key under this cache's prefix (tests; also what a Redis restarted empty looks like to
    /// this prefix). Refuses an empty prefix.
    pub fn delete_all(&self) -> Result<u64> {
        if self.inner.cfg.prefix.is_empty() {
            return Err(Error::Config("refusing to delete every key of a Redis cache without a prefix".into()));
        }
        let pattern = format!("{}*", self.inner.cfg.prefix);
        self.call("delete_all", |c| {
            let mut n = 0u64;
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

    fn call<T>(&self, op: &'static str, mut f: impl FnMut(&mut Connection) -> redis::RedisResult<T>) -> Result<T> {
        let i = &self.inner;
        retry::call(
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
        )
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
        let fields: std::collections::HashMap<String, i64> = self.call(op, |c| redis::cmd("HGETALL").arg(&key).query(c))?;
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
        let (z, cpc, entry) =
            (self.key(&ranking_key(placement, category)), self.key(&format!("rtb-cpc:{suffix}")), self.key(&format!("rtb-entry:{suffix}")));
        let index = self.key("rtb-rankings");
        let mut encoded = Vec::with_capacity(entries.len());
        for e in entries {
            encoded.push(enc("ranked entry", e)?);
        }
        let mut p = redis::pipe();
        p.atomic();
        p.cmd("DEL").arg(&z).arg(&cpc).arg(&entry).ignore();
        if !entries.is_empty() {
            let zadd = p.cmd("ZADD").arg(&z);
            for e in entries {
                zadd.arg(e.rank).arg(&e.campaign_id);
            }
            zadd.ignore();
            let hcpc = p.cmd("HSET").arg(&cpc);
            for e in entries {
                hcpc.arg(&e.campaign_id).arg(e.cpc);
            }
            hcpc.ignore();
            let hentry = p.cmd("HSET").arg(&entry);
            for (e, bytes) in entries.iter().zip(&encoded) {
                hentry.arg(&e.campaign_id).arg(bytes.as_slice());
            }
            hentry.ignore();
        }
        p.cmd("SADD").arg(&index).arg(&suffix).ignore();
        self.call("put_ranking", |c| p.query::<()>(c))
    }

    fn ranking(&self, placement: Placement, category: &str) -> Result<Vec<RankedEntry>> {
        let z = self.key(&ranking_key(placement, category));
        let entry = self.key(&format!("rtb-entry:{}:{category}", placement.as_str()));
        let (members, values): (Vec<String>, std::collections::HashMap<String, Vec<u8>>) = self.call("ranking", |c| {
            redis::pipe().atomic().cmd("ZRANGE").arg(&z).arg(0).arg(-1).cmd("HGETALL").arg(&entry).query(c)
        })?;
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
        let members: Vec<String> = self.call("rankings", |c| redis::cmd("SMEMBERS").arg(&index).query(c))?;
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
        let mut inv = self.inner.window.prepare_invoke();
        inv.key(self.window_key(row.scope, &row.id))
            .key(self.ids_key(row.scope))
            .key(self.key(&format!("rtb-tot:campaign:{}", row.campaign_id)))
            .key(self.key(&format!("rtb-tot:category:{}", row.category)))
            .arg(format!("{}:{}", row.window_start, row.shard))
            .arg(value)
            .arg(&row.id)
            .arg(if row.scope == MetricsScope::Campaign { "1" } else { "0" })
            .arg(&self.inner.cfg.prefix);
        for c in &counters {
            inv.arg(c);
        }
        self.call("write_window_metrics", |c| inv.invoke::<i64>(c).map(drop))
    }

    fn window_metrics(&self, scope: MetricsScope, id: &str) -> Result<Vec<WindowMetrics>> {
        let key = self.window_key(scope, id);
        let fields: Vec<(String, String)> = self.call("window_metrics", |c| redis::cmd("HGETALL").arg(&key).query(c))?;
        self.decode_windows(scope, id, fields)
    }

    fn all_window_metrics(&self, scope: MetricsScope) -> Result<Vec<WindowMetrics>> {
        let ids_key = self.ids_key(scope);
        let mut ids: Vec<String> = self.call("all_window_metrics", |c| redis::cmd("SMEMBERS").arg(&ids_key).query(c))?;
        ids.sort();
        let mut out = Vec::new();
        // One pipelined round trip per 500 ids.
        for chunk in ids.chunks(500) {
            let mut p = redis::pipe();
            for id in chunk {
                p.cmd("HGETALL").arg(self.window_key(scope, id));
            }
            let all: Vec<Vec<(String, String)>> = self.call("all_window_metrics", |c| p.query(c))?;
            for (id, fields) in chunk.iter().zip(all) {
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
        let mut inv = self.inner.spend.prepare_invoke();
        inv.key(self.spend_key(campaign_id, day))
            .key(self.key("rtb-spendkeys"))
            .key(self.key("rtb-spendkeys-by-time"))
            .arg(idempotency_key)
            .arg(event_time)
            .arg(delta);
        let (total, applied): (i64, i64) = self.call("add_spend_once", |c| inv.invoke(c))?;
        if applied == 1 {
            self.inner.pruner.note(event_time);
        }
        Ok((total, applied == 1))
    }

    fn prune_spend_keys(&self, before: Timestamp) -> Result<u64> {
        let mut inv = self.inner.prune.prepare_invoke();
        inv.key(self.key("rtb-spendkeys")).key(self.key("rtb-spendkeys-by-time")).arg(before).arg(1_000);
        let mut pruned = 0u64;
        loop {
            let n: u64 = self.call("prune_spend_keys", |c| inv.invoke(c))?;
            if n == 0 {
                return Ok(pruned);
            }
            pruned += n;
        }
    }

    fn spend(&self, campaign_id: &str, day: Day) -> Result<i64> {
        let key = self.spend_key(campaign_id, day);
        let v: Option<i64> = self.call("spend", |c| redis::cmd("GET").arg(&key).query(c))?;
        Ok(v.unwrap_or(0))
    }

    fn mark_once(&self, key: &str) -> Result<bool> {
        let k = self.key(&format!("rtb-mark:{key}"));
        let r: Option<String> = self.call("mark_once", |c| redis::cmd("SET").arg(&k).arg(1).arg("NX").query(c))?;
        Ok(r.is_some())
    }
}
