//! `--redis URL` / `--postgres URL` (or `RTB_REDIS` / `RTB_POSTGRES`): run or export with the topology's
//! cache sinks on a Redis server and its database sinks on a PostgreSQL server instead of the backends
//! the file names. The log and the operators' state stay in the data directory.

use rtb_ops::registry::sink_kinds;
use rtb_stream::registry::SinkOptions;

use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;
use crate::registry::default_registry;

/// The servers given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSinks {
    /// Redis URL for every `cache` sink (`redis://host:6379[/db][?prefix=P&retry_for=60s]`).
    pub redis: Option<String>,
    /// PostgreSQL URL for every `database` sink (`postgres://user@host:5432/db[?schema=S&retry_for=60s]`).
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
