//! `rtb serve`: the API server on the embedded default — one process holding the HTTP server and the
//! topology, running on the embedded log, the state journal and the embedded sinks under one data directory,
//! exactly as `rtb run` wires them (without the simulator: the API is the producer).
//!
//! - [`auth`] — bearer tokens and roles (`admin`, `advertiser:{id}`, `ingest`): 401 without a known
//!   token, 403 for a role that may not do what it asks.
//! - [`api`] — JSON errors and the body extractor whose 400s name the field.
//! - [`routes`] — the `/v1` handlers: writes become events on the topology's topics (validated by the
//!   topology's own validator, answered once durable), reads answer from its stores.
//! - [`state`] — what the handlers share.
//!
//! Start-up takes the data directory's lock, verifies the stores' seal, opens the log and stores, spawns
//! every stage, and binds the listener. Shutdown (SIGINT / SIGTERM, or the future given to [`serve`]):
//! the listener stops accepting, requests already accepted finish, then the topology stops and commits,
//! the log and state are flushed and the stores sealed.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod offload;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use rtb_ops::schema::{Placement, Validator};
use rtb_stream::io::LogIo;
use rtb_stream::runtime::Runtime;

use self::api::ApiError;
use self::auth::Tokens;
use self::state::AppState;
use crate::app::lock::DataDirLock;
use crate::app::runlog::RunLog;
use crate::app::stores;
use crate::app::wiring;
use crate::error::{Error, Result};
use crate::plan::ExecutionPlan;

/// Request limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (413 past it).
    pub max_body_bytes: usize,
    /// Most events in one batch (413 past it).
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_body_bytes: 4 * 1024 * 1024, max_batch: 10_000 }
    }
}

/// What `rtb serve` does.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port; the bound address is printed).
    pub listen: SocketAddr,
    /// Token file (`TOKEN ROLE` a line); `None`: a development set is made and printed.
    pub tokens: Option<PathBuf>,
    /// Where the log, state and sinks live.
    pub data_dir: PathBuf,
    /// Request limits.
    pub limits: Limits,
    /// The log and the operators' state on this Kafka cluster (topics created when missing, state in
    /// changelog topics) instead of the embedded log and journal under `data_dir`; `None`: embedded.
    pub kafka: Option<rtb_stream::kafka::KafkaConfig>,
}

/// Runs the server until `shutdown` resolves (or SIGINT / SIGTERM), then stops gracefully. Writes the
/// bound address (`rtb serve listening on http://ADDR`) and, without a token file, the development
/// tokens to `out` once it accepts requests.
pub fn serve(
    plan: &ExecutionPlan,
    opts: &ServeOptions,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tokens = match &opts.tokens {
        Some(p) => Tokens::from_file(p)?,
        None => Tokens::development(),
    };
    std::fs::create_dir_all(&opts.data_dir)
        .map_err(|e| Error::Run(format!("{}: {e}", opts.data_dir.display())))?;
    let _lock = DataDirLock::acquire(&opts.data_dir)?;
    // A Redis cache that lost its data is rebuilt by re-processing, as `rtb run` does.
    let mut plan = plan.clone();
    crate::app::servers::prepare_caches(&mut plan, &opts.data_dir)?;
    let plan = &plan;
    let mut stores = stores::stores(plan, &opts.data_dir);
    if opts.kafka.is_some() {
        // On Kafka the operators' state is in changelog topics: only the sinks are stores of the directory.
        stores.retain(|s| s.name != stores::STATE_DIR);
    }
    stores::verify(&opts.data_dir, &stores)?;
    stores::unseal(&opts.data_dir)?;
    serve_open(plan, opts, tokens, out, shutdown)?;
    stores::seal(&opts.data_dir, &stores)
}

fn serve_open(
    plan: &ExecutionPlan,
    opts: &ServeOptions,
    tokens: Tokens,
    out: &mut dyn Write,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (log, state_store, sinks): (Arc<dyn RunLog>, _, _) = match &opts.kafka {
        None => {
            let (log, state, sinks) = crate::app::run::open_data_dir(plan, &opts.data_dir)?;
            (Arc::new(log), state, sinks)
        }
        Some(cfg) => {
            let sinks = wiring::Sinks::open(plan, &opts.data_dir)?;
            let (log, state) = crate::app::run::open_kafka(plan, cfg.clone(), true)?;
            (Arc::new(log), state, sinks)
        }
    };
    let ops = crate::app::run::ops_config(plan)?;

    let mut rt = Runtime::new(log.io(), Arc::clone(&state_store));
    wiring::spawn_all(&mut rt, plan, crate::registry::default_registry()?, &sinks.all, false)?;
    let token = rt.shutdown_token();

    let campaigns = state::campaigns_in_log(&*log, &ops.topics.campaign_events)?;
    // A sink on a server blocks on network I/O: the handlers call it off the async workers.
    let on_server = |kind: &str| plan.sinks.iter().any(|s| s.kind == kind && s.backend != rtb_ops::registry::sink_kinds::EMBEDDED);
    let (flush, flusher) = state::GroupFlush::start(log.io().producer())?;
    let app = Arc::new(AppState {
        flush: Arc::clone(&flush),
        log: Arc::clone(&log),
        cache: offload::offload_cache(Arc::clone(&sinks.cache), on_server(rtb_ops::registry::sink_kinds::CACHE)),
        db: offload::offload_database(Arc::clone(&sinks.db), on_server(rtb_ops::registry::sink_kinds::DATABASE)),
        validator: Validator::new(ops.validation),
        ops,
        campaigns: parking_lot::RwLock::new(campaigns),
        campaign_writes: tokio::sync::Mutex::new(()),
        ids: state::IdGen::new(),
        limits: opts.limits,
        runtime: token.clone(),
        runtime_metrics: rt.metrics(),
        plan: plan.clone(),
        state_store: Arc::clone(&state_store),
    });
    telemetry::handle().map_err(Error::Run)?;

    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rtb-serve")
        .build()
        .map_err(|e| Error::Run(format!("cannot start the async runtime: {e}")))
        .and_then(|tokio_rt| {
            tokio_rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(opts.listen)
                    .await
                    .map_err(|e| Error::Run(format!("cannot listen on {}: {e}", opts.listen)))?;
                let addr = listener.local_addr().map_err(|e| Error::Run(format!("listener: {e}")))?;
                announce(out, addr, &tokens, opts.tokens.is_none()).map_err(Error::Output)?;
                let router = router(Arc::clone(&app), tokens);
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop_signal(shutdown))
                    .await
                    .map_err(|e| Error::Run(format!("server: {e}")))
            })
        });
    // Every accepted request has finished (its events are durable): stop the flusher and the topology (it
    // commits what it processed), flush.
    flush.stop();
    let _ = flusher.join();
    token.trigger();
    let joined = rt.join();
    log.flush()?;
    state_store.flush()?;
    sinks.cache.sync().map_err(|e| Error::Run(format!("cache: {e}")))?;
    sinks.db.sync().map_err(|e| Error::Run(format!("database: {e}")))?;
    served?;
    joined?;
    Ok(())
}

fn announce(out: &mut dyn Write, addr: SocketAddr, tokens: &Tokens, development: bool) -> std::io::Result<()> {
    writeln!(out, "rtb serve listening on http://{addr}")?;
    if development {
        writeln!(out, "development tokens (new at every start; pass --tokens FILE to use your own):")?;
        for (token, role) in tokens.list() {
            writeln!(out, "  {role:<8} {token}")?;
        }
    }
    out.flush()
}

/// Resolves on `shutdown`, SIGINT or SIGTERM.
async fn stop_signal(shutdown: impl Future<Output = ()> + Send + 'static) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = shutdown => {}
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: no new connections; finishing the requests accepted");
}

/// The whole HTTP surface.
pub fn router(app: Arc<AppState>, tokens: Tokens) -> Router {
    use routes as r;
    let v1 = Router::new()
        .route("/v1/advertisers", post(r::create_advertiser))
        .route("/v1/advertisers/{id}", get(r::get_advertiser))
        .route("/v1/advertisers/{id}/ledger", get(r::get_ledger))
        .route("/v1/campaigns", post(r::create_campaign))
        .route("/v1/campaigns/{id}", get(r::get_campaign).patch(r::patch_campaign).delete(r::delete))
        .route("/v1/campaigns/{id}/approve", post(r::approve))
        .route("/v1/campaigns/{id}/reject", post(r::reject))
        .route("/v1/campaigns/{id}/pause", post(r::pause))
        .route("/v1/campaigns/{id}/resume", post(r::resume))
        .route("/v1/campaigns/{id}/metrics", get(r::campaign_metrics))
        .route("/v1/campaigns/{id}/budget", get(r::campaign_budget))
        .route("/v1/campaigns/{id}/conversions", get(r::campaign_conversions))
        .route("/v1/rankings/{placement}/{category}", get(r::get_ranking))
        .route("/v1/events/ad", post(r::post_ad_events))
        .route("/v1/events/conversion", post(r::post_conversion_events))
        .route("/v1/dashboard", get(dashboard::data))
        .route_layer(middleware::from_fn_with_state(tokens, auth::require_token));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(telemetry::render))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(dashboard::page))
        .route("/assets/dashboard.js", get(dashboard::script))
        .route("/assets/uplot.iife.min.js", get(dashboard::uplot_js))
        .route("/assets/uplot.min.css", get(dashboard::uplot_css))
        .fallback(not_found)
        .layer(middleware::from_fn(telemetry::track))
        .layer(DefaultBodyLimit::max(app.limits.max_body_bytes))
        .with_state(app)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the topology runs and the log and both stores answer.
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.runtime.is_triggered() {
        return ApiError::unavailable("the topology has stopped (a stage failed, or the server is shutting down)")
            .into_response();
    }
    if let Some(e) = app.flush.failed() {
        return ApiError::unavailable(format!("log: appending or flushing failed: {e}")).into_response();
    }
    let topic = &app.topics().campaign_events;
    if let Err(e) = app.log.end_offset(topic, 0) {
        return ApiError::unavailable(format!("log: {e}")).into_response();
    }
    if let Err(e) = app.db.advertiser("readyz") {
        return ApiError::unavailable(format!("database: {e}")).into_response();
    }
    if let Err(e) = app.cache.ranking(Placement::Home, "readyz") {
        return ApiError::unavailable(format!("cache: {e}")).into_response();
    }
    (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}
