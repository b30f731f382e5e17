//! `GET /metrics`: Prometheus text from the `metrics` facade (`metrics-exporter-prometheus`).
//!
//! - `rtb_http_requests_total{method,route,status}` and `rtb_http_request_duration_seconds{method,route}`
//!   (a histogram), by matched route — recorded by [`track`];
//! - `rtb_events_published_total{topic}` — events the API appended durably;
//! - per consumer group of the topology (read at scrape time from the runtime and its committed
//!   offsets): `rtb_stage_records_in`, `rtb_stage_dead_letters`, `rtb_stage_late_records` (totals since
//!   start) and `rtb_consumer_lag` (records in the log not yet committed by the group).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use rtb_stream::runtime::task_scope;

use super::api::ApiError;
use super::state::AppState;

/// Request latency buckets (seconds).
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0];

/// The process's Prometheus recorder (installed once; a second server in the same process shares it).
pub fn handle() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("rtb_http_request_duration_seconds".into()), &BUCKETS)
                .and_then(|b| b.install_recorder())
                .map_err(|e| format!("cannot install the metrics recorder: {e}"))
        })
        .clone()
}

/// Middleware: counts and times every request by method, matched route and status.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("rtb_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("rtb_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Counts events the API published to `topic`.
pub fn published(topic: &str, n: usize) {
    metrics::counter!("rtb_events_published_total", "topic" => topic.to_string()).increment(n as u64);
}

/// `GET /metrics`.
pub async fn render(State(app): State<Arc<AppState>>) -> Response {
    let handle = match handle() {
        Ok(h) => h,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let app2 = Arc::clone(&app);
    let stages = tokio::task::spawn_blocking(move || stage_gauges(&app2)).await;
    match stages {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    }
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

fn stage_gauges(app: &AppState) -> Result<(), ApiError> {
    for (group, c) in app.runtime_metrics.snapshot() {
        metrics::gauge!("rtb_stage_records_in", "group" => group.clone()).set(c.records_in as f64);
        metrics::gauge!("rtb_stage_dead_letters", "group" => group.clone()).set(c.dead_letters as f64);
        metrics::gauge!("rtb_stage_late_records", "group" => group).set(c.late_records as f64);
    }
    for stage in &app.plan.stages {
        let mut lag = 0u64;
        for p in 0..stage.partitions {
            let committed = task_scope(&app.state_store, stage.runtime_group(), p).read_offsets()?;
            for topic in &stage.inputs {
                let end = app.log.end_offset(topic, p)?;
                lag += end.saturating_sub(committed.get(&(topic.clone(), p)).copied().unwrap_or(0));
            }
        }
        metrics::gauge!("rtb_consumer_lag", "group" => stage.runtime_group().to_string()).set(lag as f64);
    }
    Ok(())
}
