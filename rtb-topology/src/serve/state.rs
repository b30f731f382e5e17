//! What the handlers share: the log's producer, the stores, the campaigns the server has published, the
//! validator, and the id generator.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use rtb_ops::config::{OpsConfig, TopicNames};
use rtb_ops::schema::{CampaignEvent, Validator};
use rtb_ops::sink::{Cache, Database};
use rtb_stream::io::{ProduceRecord, Producer};
use rtb_stream::log::EmbeddedLog;
use rtb_stream::runtime::{RuntimeMetrics, ShutdownToken};
use rtb_stream::state::StoreBackend;

use crate::plan::ExecutionPlan;

use super::api::ApiError;
use super::Limits;
use crate::error::{Error, Result};

/// Shared by every handler.
pub struct AppState {
    /// Appends to the topics the topology consumes.
    pub producer: Arc<dyn Producer>,
    /// The embedded log (readiness).
    pub log: EmbeddedLog,
    /// Rankings, metrics, spend counters.
    pub cache: Arc<dyn Cache>,
    /// Advertisers, ledger, campaigns, conversions, alerts.
    pub db: Arc<dyn Database>,
    /// The operators' configuration (topic names, validation limits, budget settings).
    pub ops: OpsConfig,
    /// The same validation the topology's decoders apply: nothing they would reject is published.
    pub validator: Validator,
    /// Every campaign's latest snapshot as published by this server (or found in the log at start):
    /// what a PATCH or a status change starts from, before the topology has processed it.
    pub campaigns: RwLock<BTreeMap<String, CampaignEvent>>,
    /// Serialises campaign changes (each is read-modify-publish of one snapshot).
    pub campaign_writes: tokio::sync::Mutex<()>,
    /// Server-assigned ids.
    pub ids: IdGen,
    /// Body and batch limits.
    pub limits: Limits,
    /// Triggered when a stage of the topology failed (not ready) or at shutdown.
    pub runtime: ShutdownToken,
    /// The topology's counters (for `/metrics`).
    pub runtime_metrics: Arc<RuntimeMetrics>,
    /// The plan the topology runs (its stages' groups and inputs, for consumer lag).
    pub plan: ExecutionPlan,
    /// The operators' state (committed offsets, for consumer lag).
    pub state_store: Arc<dyn StoreBackend>,
}

impl AppState {
    /// The topic names.
    pub fn topics(&self) -> &TopicNames {
        &self.ops.topics
    }

    /// Appends `records` to `topic` and makes them durable (fsync) before returning.
    pub async fn publish(&self, topic: &str, records: Vec<ProduceRecord>) -> std::result::Result<(), ApiError> {
        let producer = Arc::clone(&self.producer);
        let n = records.len();
        let topic_name = topic.to_string();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            producer.send(&topic, records)?;
            producer.flush()
        })
        .await
        .map_err(|e| ApiError::internal(format!("publishing: {e}")))?
        .map_err(ApiError::from)?;
        super::telemetry::published(&topic_name, n);
        Ok(())
    }
}

/// Unique ids: a random prefix per server start and a counter.
#[derive(Debug)]
pub struct IdGen {
    prefix: String,
    next: AtomicU64,
}

impl IdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        let r: u64 = rand::random();
        Self { prefix: format!("{r:016x}"), next: AtomicU64::new(1) }
    }
    /// `{kind}_{random prefix}{counter}`.
    pub fn next(&self, kind: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{kind}_{}{n:08x}", self.prefix)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// The campaigns found in the campaign topic: each one's latest snapshot written by the API (the budget
/// monitor's events carry `status_reason` BUDGET_* and only mark a pause, which the database row holds).
pub fn campaigns_in_log(log: &EmbeddedLog, topic: &str) -> Result<BTreeMap<String, CampaignEvent>> {
    let mut out: BTreeMap<String, CampaignEvent> = BTreeMap::new();
    let partitions = log.topic_config(topic)?.partitions;
    for p in 0..partitions {
        let mut at = log.start_offset(topic, p)?;
        let end = log.end_offset(topic, p)?;
        while at < end {
            let recs = log.read(topic, p, at, 4_096)?;
            let Some(last) = recs.last() else { break };
            at = last.offset + 1;
            for r in recs {
                let Ok(ev) = serde_json::from_slice::<CampaignEvent>(&r.payload) else { continue };
                if ev.status_reason.is_some_and(|s| s.is_budget()) {
                    continue;
                }
                match out.get(&ev.campaign_id) {
                    Some(prev) if prev.timestamp > ev.timestamp => {}
                    _ => {
                        out.insert(ev.campaign_id.clone(), ev);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A failure of a store at start.
pub fn store_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Run(format!("{what}: {e}"))
}
