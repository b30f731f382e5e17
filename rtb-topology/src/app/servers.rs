//! `--redis URL` / `--postgres URL` (or `RTB_REDIS` / `RTB_POSTGRES`): run or export with the topology's
//! cache sinks on a Redis server and its database sinks on a PostgreSQL server instead of the backends
//! the file names. The log and the operators' state stay in the data directory.

use rtb_ops::registry::sink_kinds;
use rtb_stream::registry::SinkOptions;

use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::registry::default_registry;

/// The servers given on the command line (the `--redis` / `--postgres` flags of `rtb run`, `rtb export`
/// and `rtb serve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServerSinks {
    /// Redis server for the topology's cache sinks (rankings, metrics, spend counters) instead of the
    /// backend the file names (`redis://host:6379[/db][?prefix=P&retry_for=60s]`).
    #[arg(long, value_name = "URL", env = "RTB_REDIS")]
    pub redis: Option<String>,
    /// PostgreSQL server for the topology's database sinks (advertisers, ledger, campaigns, conversions,
    /// alerts) instead of the backend the file names (`postgres://user@host:5432/db[?schema=S&retry_for=60s]`);
    /// its migrations are applied at start.
    #[arg(long, value_name = "URL", env = "RTB_POSTGRES")]
    pub postgres: Option<String>,
}

impl ServerSinks {
    /// Moves the plan's cache sinks to the `redis` backend and its database sinks to the `postgres`
    /// backend, with the given URLs (checked by the backends as a topology file's would be).
    pub fn apply(&self, plan: &mut ExecutionPlan) -> Result<()> {
        let registry = default_registry()?;
        for (kind, backend, url, flag) in [
            (sink_kinds::CACHE, sink_kinds::REDIS, &self.redis, "--redis"),
            (sink_kinds::DATABASE, sink_kinds::POSTGRES, &self.postgres, "--postgres"),
        ] {
            let Some(url) = url else { continue };
            let b = registry.sink_backend(kind, backend).ok_or_else(|| {
                Error::Run(format!("{flag}: this rtb was built without the `{backend}` sink backend"))
            })?;
            for s in plan.sinks.iter_mut().filter(|s| s.kind == kind) {
                let options = SinkOptions { name: &s.name, path: None, url: Some(url), data_dir: std::path::Path::new(".") };
                b.check(&options).map_err(|e| Error::Run(format!("{flag} {url}: {e}")))?;
                s.backend = backend.to_owned();
                s.url = Some(url.clone());
                s.path = None;
            }
        }
        Ok(())
    }
}

/// The file in a data directory recording how many times its Redis caches were rebuilt.
pub const CACHE_REBUILDS_FILE: &str = "cache-rebuilds.json";

/// What [`CACHE_REBUILDS_FILE`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheRebuilds {
    /// Rebuilds so far; the stages that write a Redis cache run in groups `{group}.cache-{generation}`
    /// from the first rebuild on.
    pub generation: u32,
}

/// Before `rtb run` opens its sinks (the caller holds the data directory's lock): every Redis cache sink
/// whose epoch (kept in the data directory) the server no longer holds lost its data — the server
/// restarted empty. Such a cache is rebuilt by re-processing: its remaining keys are deleted, and every
/// stage that writes a Redis cache gets a new group (`{group}.cache-{generation}`, recorded in
/// [`CACHE_REBUILDS_FILE`]), so it starts again from the beginning of the log with empty state and
/// re-derives what the cache held (rankings, windows and totals, spend counters with their idempotency
/// keys). Its database effects are idempotent (ledger keys, alerts once, pauses settled by the same
/// decisions), so re-processing changes no money. Applies the recorded generation on every start.
pub fn prepare_caches(plan: &mut ExecutionPlan, data_dir: &std::path::Path) -> Result<()> {
    use rtb_ops::sink::{RedisCache, RedisConfig};
    let redis_caches: Vec<(String, String)> = plan
        .sinks
        .iter()
        .filter(|s| s.kind == sink_kinds::CACHE && s.backend == sink_kinds::REDIS)
        .filter_map(|s| s.url.clone().map(|u| (s.name.clone(), u)))
        .collect();
    if redis_caches.is_empty() {
        return Ok(());
    }
    let state_path = data_dir.join(CACHE_REBUILDS_FILE);
    let io = |e: std::io::Error| Error::Run(format!("{}: {e}", state_path.display()));
    let mut state: CacheRebuilds = match std::fs::read(&state_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Run(format!("{}: {e}", state_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheRebuilds::default(),
        Err(e) => return Err(io(e)),
    };
    for (name, url) in &redis_caches {
        let file = rtb_ops::registry::redis_epoch_file(data_dir, name);
        let expected = match std::fs::read_to_string(&file) {
            Ok(s) => s.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // first open
            Err(e) => return Err(Error::Run(format!("{}: {e}", file.display()))),
        };
        let cfg = RedisConfig::from_url(url).map_err(|e| Error::Run(format!("sink `{name}`: {e}")))?;
        let found = RedisCache::current_epoch(&cfg).map_err(|e| Error::Run(format!("sink `{name}`: {e}")))?;
        if found.as_deref() == Some(expected.as_str()) {
            continue;
        }
        state.generation += 1;
        tracing::warn!(
            sink = %name,
            expected = %expected,
            found = ?found,
            generation = state.generation,
            "the Redis cache lost its data (restarted empty): rebuilding it by re-processing the stages that write it from the start of the log"
        );
        // Recorded first: a crash after it only makes the next start rebuild again.
        let json = serde_json::to_vec_pretty(&state).map_err(|e| Error::Run(e.to_string()))?;
        std::fs::write(&state_path, json).map_err(io)?;
        RedisCache::clear(&cfg).map_err(|e| Error::Run(format!("sink `{name}`: {e}")))?;
        std::fs::remove_file(&file).map_err(|e| Error::Run(format!("{}: {e}", file.display())))?;
    }
    if state.generation > 0 {
        let names: Vec<&str> = redis_caches.iter().map(|(n, _)| n.as_str()).collect();
        for stage in plan.stages.iter_mut().filter(|s| s.repartition.is_none()) {
            if stage.sinks.iter().any(|s| names.contains(&s.as_str())) {
                stage.group = format!("{}.cache-{}", stage.group, state.generation);
            }
        }
    }
    Ok(())
}

/// The declared group of a runtime group: `{group}.cache-{n}` (a stage re-run to rebuild a Redis cache,
/// see [`prepare_caches`]) is `{group}`; any other name is itself.
pub fn stage_of_group(group: &str) -> &str {
    match group.rsplit_once(".cache-") {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => group,
    }
}

#[cfg(test)]
mod tests {
    use super::stage_of_group;

    #[test]
    fn a_rebuild_generation_maps_back_to_its_stage() {
        assert_eq!(stage_of_group("budget-monitor.cache-2"), "budget-monitor");
        assert_eq!(stage_of_group("budget-monitor"), "budget-monitor");
        assert_eq!(stage_of_group("a.cache-x"), "a.cache-x");
        assert_eq!(stage_of_group("a.cache-"), "a.cache-");
    }
}
