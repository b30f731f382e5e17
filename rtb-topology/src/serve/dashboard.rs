//! The dashboard: `GET /` (a page), its scripts and styles under `/assets/` — uPlot 1.6.32 (MIT) is
//! bundled into the binary, nothing is loaded from a CDN — and `GET /v1/dashboard` (admin), the one JSON
//! document the page polls every second: rankings with CPCs, per-campaign windows (CTR, CVR, spend),
//! today's budget use, balances, recent refunds and dead letters.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use rtb_ops::calendar::{parse_time_zone, Day};
use rtb_ops::sink::{LedgerKind, MetricsScope};
use rtb_stream::DeadLetter;
use serde::Serialize;

use super::api::{ApiError, ErrorBody};
use super::auth::Role;
use super::routes::now_ms;
use super::state::AppState;
use crate::app::wiring::DEAD_LETTER_TOPIC;
use crate::replay::outputs::is_late_reason;

const PAGE: &str = include_str!("../../assets/dashboard.html");
const SCRIPT: &str = include_str!("../../assets/dashboard.js");
const UPLOT_JS: &str = include_str!("../../assets/vendor/uplot-1.6.32/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../assets/vendor/uplot-1.6.32/uPlot.min.css");

/// How many refunds and dead letters the dashboard lists.
const RECENT: usize = 20;

/// `GET /`.
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// `GET /assets/dashboard.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}
/// `GET /assets/uplot.iife.min.js`.
pub async fn uplot_js() -> Response {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}
/// `GET /assets/uplot.min.css`.
pub async fn uplot_css() -> Response {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}

/// One placement+category ranking.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashRanking {
    placement: String,
    category: String,
    #[schema(value_type = Vec<Object>)]
    entries: Vec<rtb_ops::sink::RankedEntry>,
}

/// One window point of a campaign's series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashPoint {
    /// Window start, seconds since the epoch.
    t: i64,
    impressions: i64,
    clicks: i64,
    spend: i64,
    ctr: f64,
    cvr: f64,
}

/// A campaign with its series and today's budget use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashCampaign {
    campaign_id: String,
    advertiser_id: String,
    status: String,
    approval_status: String,
    paused_by_budget: bool,
    daily_budget: i64,
    spend_today: i64,
    windows: Vec<DashPoint>,
}

/// An advertiser's balance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashAdvertiser {
    advertiser_id: String,
    opening_balance: i64,
    balance: i64,
}

/// A refund.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashRefund {
    advertiser_id: String,
    campaign_id: Option<String>,
    amount: i64,
    event_time: String,
}

/// A dead letter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashDead {
    stage: String,
    reason: String,
}

/// Dead letters: how many, and the latest.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashDeadLetters {
    total: u64,
    recent: Vec<DashDead>,
}

/// What the dashboard shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    as_of: String,
    rankings: Vec<DashRanking>,
    campaigns: Vec<DashCampaign>,
    advertisers: Vec<DashAdvertiser>,
    refunds: Vec<DashRefund>,
    dead_letters: DashDeadLetters,
}

fn fmt_ts(ts: i64) -> String {
    rtb_ops::schema::rfc3339::format(ts).unwrap_or_else(|_| ts.to_string())
}

/// `GET /v1/dashboard` (admin).
#[utoipa::path(get, path = "/v1/dashboard", tag = "dashboard", responses((status = 200, body = Dashboard), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn data(State(st): State<Arc<AppState>>, Extension(role): Extension<Role>) -> Result<Json<Dashboard>, ApiError> {
    role.admin()?;
    let st2 = Arc::clone(&st);
    tokio::task::spawn_blocking(move || collect(&st2))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map(Json)
}

fn collect(st: &AppState) -> Result<Dashboard, ApiError> {
    let now = now_ms();
    let rankings = st
        .cache
        .rankings()?
        .into_iter()
        .map(|(p, category, entries)| DashRanking { placement: p.as_str().to_string(), category, entries })
        .collect();
    let advertisers: Vec<_> = st.db.advertisers()?;
    let snapshots: Vec<_> = st.campaigns.read().values().cloned().collect();
    let mut campaigns = Vec::with_capacity(snapshots.len());
    for ev in snapshots {
        let tz_name = advertisers
            .iter()
            .find(|a| a.advertiser_id == ev.advertiser_id)
            .map_or_else(|| st.ops.budget.default_time_zone.clone(), |a| a.time_zone.clone());
        let day = Day::of(now, parse_time_zone(&tz_name)?);
        let row = st.db.campaign(&ev.campaign_id)?;
        let paused = row.as_ref().is_some_and(|r| r.budget_paused_day.is_some());
        let windows = st
            .cache
            .window_metrics(MetricsScope::Campaign, &ev.campaign_id)?
            .into_iter()
            .map(|w| DashPoint {
                t: w.window_start / 1000,
                impressions: w.metrics.impressions,
                clicks: w.metrics.clicks,
                spend: w.metrics.spend,
                ctr: w.metrics.ctr(),
                cvr: w.metrics.cvr(),
            })
            .collect();
        campaigns.push(DashCampaign {
            spend_today: st.cache.spend(&ev.campaign_id, day)?,
            status: if paused { "PAUSED".to_string() } else { ev.status.as_str().to_string() },
            approval_status: ev.approval_status.as_str().to_string(),
            paused_by_budget: paused,
            daily_budget: ev.daily_budget,
            campaign_id: ev.campaign_id,
            advertiser_id: ev.advertiser_id,
            windows,
        });
    }
    let mut refunds: Vec<DashRefund> = st
        .db
        .ledger()?
        .into_iter()
        .rev()
        .filter(|r| r.entry.kind == LedgerKind::Refund)
        .take(RECENT)
        .map(|r| DashRefund {
            advertiser_id: r.entry.advertiser_id,
            campaign_id: r.entry.campaign_id,
            amount: r.entry.amount,
            event_time: fmt_ts(r.entry.event_time),
        })
        .collect();
    refunds.shrink_to_fit();
    // Dead letters (invalid input; late records reported as LATE_* by older operators are not counted).
    let start = st.log.start_offset(DEAD_LETTER_TOPIC, 0)?;
    let end = st.log.end_offset(DEAD_LETTER_TOPIC, 0)?;
    let from = end.saturating_sub(RECENT as u64).max(start);
    let recent: Vec<DashDead> = st
        .log
        .read(DEAD_LETTER_TOPIC, 0, from, RECENT)?
        .into_iter()
        .rev()
        .filter_map(|r| serde_json::from_slice::<DeadLetter>(&r.payload).ok())
        .filter(|d| !is_late_reason(&d.reason))
        .map(|d| DashDead { stage: d.stage, reason: d.reason })
        .collect();
    let total = st.runtime_metrics.snapshot().values().map(|c| c.dead_letters).sum();
    Ok(Dashboard {
        as_of: fmt_ts(now),
        rankings,
        campaigns,
        advertisers: advertisers
            .into_iter()
            .map(|a| DashAdvertiser { advertiser_id: a.advertiser_id, opening_balance: a.opening_balance, balance: a.balance })
            .collect(),
        refunds,
        dead_letters: DashDeadLetters { total, recent },
    })
}
