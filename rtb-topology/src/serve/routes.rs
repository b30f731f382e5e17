//! The `/v1` handlers: advertisers, campaigns, events, and the reads.
//!
//! Writes become events on the topics the topology consumes (campaign changes on `campaign-events`,
//! impressions and clicks on `ad-events`, orders on `conversion-events`), validated by the same
//! [`Validator`](rtb_ops::schema::Validator) as the topology's decoders, and answered once they are
//! durably in the log. Advertisers (accounts, not events) go straight to the database, as `rtb run`'s
//! simulator registers them. Reads answer from the stores the topology writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rtb_ops::calendar::{parse_time_zone, Day};
use rtb_ops::schema::{
    rfc3339, AdEventType, ApprovalStatus, CampaignEvent, CampaignEventType, CampaignStatus, Invalid, Placement,
    RtbImpact, Targeting, WireEnum,
};
use rtb_ops::sink::{Advertiser, AdvertiserRow, CampaignRow, ConversionRow, LedgerKind, MetricsScope, RankedEntry};
use rtb_stream::io::ProduceRecord;
use rtb_stream::{SourceCoord, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{parse, raw_body, ApiError, Body, ErrorBody};
use super::auth::Role;
use super::state::AppState;

type S = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

pub use rtb_stream::time::wall_clock_ms as now_ms;

fn fmt_ts(ts: Timestamp) -> String {
    rfc3339::format(ts).unwrap_or_else(|_| ts.to_string())
}

fn parse_ts(field: &str, s: &str) -> ApiResult<Timestamp> {
    rfc3339::parse(s).map_err(|e| ApiError::field(field, format!("`{s}` is not an RFC 3339 UTC time: {e}")))
}

/// The field an [`Invalid`] is about, if one.
fn invalid_field(e: &Invalid) -> Option<&'static str> {
    match e {
        Invalid::MissingField { field }
        | Invalid::UnknownEnum { field, .. }
        | Invalid::BadTimestamp { field, .. }
        | Invalid::NegativeAmount { field, .. }
        | Invalid::AbsurdAmount { field, .. }
        | Invalid::IdTooLong { field, .. }
        | Invalid::IdNotPrintable { field, .. }
        | Invalid::InvalidValue { field, .. } => Some(field),
        Invalid::ActualAboveBid { .. } => Some("actual_price"),
        Invalid::FutureTimestamp { .. } => Some("timestamp"),
        _ => None,
    }
}

/// A 400 for an event the topology's validator rejects; `at` prefixes the field (`[3]` in a batch).
fn rejected(at: &str, e: &Invalid) -> ApiError {
    match invalid_field(e) {
        Some(f) => ApiError::field(format!("{at}{}{f}", if at.is_empty() { "" } else { "." }), e.to_string()),
        None if at.is_empty() => ApiError::bad_request(e.to_string()),
        None => ApiError::field(at.to_string(), e.to_string()),
    }
}

fn coord() -> SourceCoord {
    SourceCoord::new("api", 0, 0)
}

// ---------------------------------------------------------------------------------------------------------
// Advertisers

/// `POST /v1/advertisers` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdvertiser {
    /// Id.
    pub advertiser_id: String,
    /// Opening balance (KRW, ≥ 0).
    pub opening_balance: i64,
    /// IANA time zone of the budget day (default: the budget monitor's default zone).
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// An advertiser and its balance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdvertiserView {
    advertiser_id: String,
    opening_balance: i64,
    balance: i64,
    time_zone: String,
}

impl From<AdvertiserRow> for AdvertiserView {
    fn from(r: AdvertiserRow) -> Self {
        Self { advertiser_id: r.advertiser_id, opening_balance: r.opening_balance, balance: r.balance, time_zone: r.time_zone }
    }
}

fn check_id(st: &AppState, field: &str, id: &str) -> ApiResult<()> {
    let max = st.validator.config.max_id_bytes;
    if id.is_empty() {
        return Err(ApiError::field(field, "must not be empty"));
    }
    if id.len() > max {
        return Err(ApiError::field(field, format!("is {} bytes long (max {max})", id.len())));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::field(field, "must not hold control characters"));
    }
    Ok(())
}

/// `POST /v1/advertisers` (admin).
#[utoipa::path(post, path = "/v1/advertisers", tag = "advertisers", request_body = NewAdvertiser, responses((status = 201, body = AdvertiserView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 409, description = "exists", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_advertiser(
    State(st): S,
    Extension(role): Extension<Role>,
    Body(body): Body<NewAdvertiser>,
) -> ApiResult<Response> {
    role.admin()?;
    check_id(&st, "advertiser_id", &body.advertiser_id)?;
    if body.opening_balance < 0 {
        return Err(ApiError::field("opening_balance", "must be >= 0"));
    }
    if body.opening_balance > st.validator.config.max_amount.saturating_mul(1_000) {
        return Err(ApiError::field("opening_balance", "is absurdly large"));
    }
    let time_zone = body.time_zone.unwrap_or_else(|| st.ops.budget.default_time_zone.clone());
    parse_time_zone(&time_zone).map_err(|e| ApiError::field("time_zone", e.to_string()))?;
    if st.db.advertiser(&body.advertiser_id)?.is_some() {
        return Err(ApiError::conflict(format!("advertiser `{}` already exists", body.advertiser_id)));
    }
    st.db.upsert_advertiser(&Advertiser {
        advertiser_id: body.advertiser_id.clone(),
        opening_balance: body.opening_balance,
        time_zone,
    })?;
    st.db.sync()?;
    let row = st
        .db
        .advertiser(&body.advertiser_id)?
        .ok_or_else(|| ApiError::internal("the advertiser just written cannot be read back"))?;
    Ok((StatusCode::CREATED, Json(AdvertiserView::from(row))).into_response())
}

fn advertiser_row(st: &AppState, id: &str) -> ApiResult<AdvertiserRow> {
    st.db.advertiser(id)?.ok_or_else(|| ApiError::not_found(format!("advertiser `{id}` not found")))
}

/// `GET /v1/advertisers/{id}` (admin, the advertiser).
#[utoipa::path(get, path = "/v1/advertisers/{id}", tag = "advertisers", params(("id" = String, Path, description = "advertiser id")), responses((status = 200, body = AdvertiserView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_advertiser(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> ApiResult<Json<AdvertiserView>> {
    role.advertiser(&id)?;
    Ok(Json(advertiser_row(&st, &id)?.into()))
}

/// `GET /v1/advertisers/{id}/ledger` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// One ledger row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerView {
    seq: u64,
    #[schema(value_type = String)]
    kind: LedgerKind,
    amount: i64,
    balance_after: i64,
    campaign_id: Option<String>,
    event_time: String,
    reference: String,
}

/// A page of the ledger.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LedgerPage {
    advertiser_id: String,
    entries: Vec<LedgerView>,
    /// Pass as `after` for the next page (absent on the last page).
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// Largest ledger page.
pub const MAX_LEDGER_PAGE: usize = 1_000;

/// `GET /v1/advertisers/{id}/ledger?limit=&after=` (admin, the advertiser): rows in application order,
/// after sequence number `after`.
#[utoipa::path(get, path = "/v1/advertisers/{id}/ledger", tag = "advertisers", params(("id" = String, Path, description = "advertiser id"), LedgerQuery), responses((status = 200, body = LedgerPage), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_ledger(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(q): Query<LedgerQuery>,
) -> ApiResult<Json<LedgerPage>> {
    role.advertiser(&id)?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LEDGER_PAGE).contains(&n) => n,
            _ => return Err(ApiError::field("limit", format!("`{s}` is not a whole number from 1 to {MAX_LEDGER_PAGE}"))),
        },
    };
    let after = match q.after.as_deref() {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| ApiError::field("after", format!("`{s}` is not a sequence number")))?),
    };
    advertiser_row(&st, &id)?;
    let mut rows = st
        .db
        .ledger()?
        .into_iter()
        .filter(|r| r.entry.advertiser_id == id && after.is_none_or(|a| r.seq > a));
    let entries: Vec<LedgerView> = rows
        .by_ref()
        .take(limit)
        .map(|r| LedgerView {
            seq: r.seq,
            kind: r.entry.kind,
            amount: r.entry.amount,
            balance_after: r.balance_after,
            campaign_id: r.entry.campaign_id,
            event_time: fmt_ts(r.entry.event_time),
            reference: r.entry.reference,
        })
        .collect();
    let more = rows.next().is_some();
    let next_after = if more { entries.last().map(|e| e.seq) } else { None };
    Ok(Json(LedgerPage { advertiser_id: id, entries, next_after }))
}

// ---------------------------------------------------------------------------------------------------------
// Campaigns

/// `POST /v1/campaigns` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    /// Id (default: assigned by the server).
    #[serde(default)]
    pub campaign_id: Option<String>,
    /// Owner (must exist).
    pub advertiser_id: String,
    /// Product.
    #[serde(default)]
    pub product_id: Option<String>,
    /// Placement.
    #[schema(value_type = String, example = "HOME")]
    pub placement: Placement,
    /// Category.
    pub category: String,
    /// Bid (KRW).
    pub bid_price: i64,
    /// Daily budget (KRW).
    pub daily_budget: i64,
    /// Targeting.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub targeting: Option<Targeting>,
    /// Serving start (RFC 3339; default: at once).
    #[serde(default)]
    pub effective_from: Option<String>,
    /// Ranking-impact hint.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub rtb_impact: Option<RtbImpact>,
}

/// `PATCH /v1/campaigns/{id}` body: the fields to change.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignPatch {
    /// Bid (KRW).
    #[serde(default)]
    pub bid_price: Option<i64>,
    /// Daily budget (KRW).
    #[serde(default)]
    pub daily_budget: Option<i64>,
    /// Targeting.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub targeting: Option<Targeting>,
    /// Placement.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub placement: Option<Placement>,
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// Product.
    #[serde(default)]
    pub product_id: Option<String>,
    /// Serving start (RFC 3339).
    #[serde(default)]
    pub effective_from: Option<String>,
    /// Ranking-impact hint.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub rtb_impact: Option<RtbImpact>,
}

/// A campaign as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    campaign_id: String,
    advertiser_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
    #[schema(value_type = String)]
    placement: Placement,
    category: String,
    bid_price: i64,
    daily_budget: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    targeting: Option<Targeting>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effective_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    rtb_impact: Option<RtbImpact>,
    /// The status in effect: PAUSED while the budget monitor holds it, else the admin's status.
    #[schema(value_type = String)]
    status: CampaignStatus,
    /// The status the admin or advertiser set.
    #[schema(value_type = String)]
    admin_status: CampaignStatus,
    #[schema(value_type = String)]
    approval_status: ApprovalStatus,
    /// The budget day the budget monitor paused it on.
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_paused_day: Option<String>,
    /// Its place in the live ranking of its placement and category.
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<u32>,
    /// The CPC it pays now (GSP), when ranked.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpc: Option<i64>,
    /// Whether the topology has processed its latest change.
    processed: bool,
    /// Why it is (or is not) serving.
    why: String,
    /// Time of its latest change.
    updated_at: String,
}

fn campaign_view(st: &AppState, ev: &CampaignEvent) -> ApiResult<CampaignView> {
    let row: Option<CampaignRow> = st.db.campaign(&ev.campaign_id)?;
    let processed = row.as_ref().is_some_and(|r| r.updated_at >= ev.timestamp);
    let ranking = st.cache.ranking(ev.placement, &ev.category)?;
    let ranked: Option<&RankedEntry> = ranking.iter().find(|e| e.campaign_id == ev.campaign_id);
    let budget_day = row.as_ref().and_then(|r| r.budget_paused_day);
    let status = if budget_day.is_some() { CampaignStatus::Paused } else { ev.status };
    let now = now_ms();
    let where_ = format!("{}/{}", ev.placement.as_str(), ev.category);
    let why = if !processed {
        format!(
            "its latest change ({} at {}) is published; the topology has not processed it yet",
            ev.event_type.as_str(),
            fmt_ts(ev.timestamp)
        )
    } else if ev.status == CampaignStatus::Deleted {
        "deleted".to_string()
    } else if ev.approval_status == ApprovalStatus::Rejected {
        "rejected in review: it does not serve".to_string()
    } else if ev.approval_status == ApprovalStatus::Pending {
        "awaiting approval: it serves once an admin approves it".to_string()
    } else if let Some(day) = budget_day {
        format!("paused by the budget monitor: the daily budget was spent on {day}; it resumes on the next budget day or when the budget is raised")
    } else if ev.status == CampaignStatus::Paused {
        "paused by the advertiser or an admin".to_string()
    } else if ev.status == CampaignStatus::Pending {
        "not active yet".to_string()
    } else if let Some(from) = ev.effective_from.filter(|f| *f > now) {
        format!("scheduled: it enters the ranking of {where_} at {}", fmt_ts(from))
    } else if let Some(e) = ranked {
        format!("serving: rank {} of {} in {where_}, paying {} KRW per click", e.rank, ranking.len(), e.cpc)
    } else {
        format!("eligible, not in the ranking of {where_} yet (it enters at the next recompute)")
    };
    Ok(CampaignView {
        campaign_id: ev.campaign_id.clone(),
        advertiser_id: ev.advertiser_id.clone(),
        product_id: ev.product_id.clone(),
        placement: ev.placement,
        category: ev.category.clone(),
        bid_price: ev.bid_price,
        daily_budget: ev.daily_budget,
        targeting: ev.targeting.clone(),
        effective_from: ev.effective_from.map(fmt_ts),
        rtb_impact: ev.rtb_impact,
        status,
        admin_status: ev.status,
        approval_status: ev.approval_status,
        budget_paused_day: budget_day.map(|d| d.to_string()),
        rank: ranked.map(|e| e.rank),
        cpc: ranked.map(|e| e.cpc),
        processed,
        why,
        updated_at: fmt_ts(ev.timestamp),
    })
}

/// The campaign `id` (404) that `role` may see (403).
fn campaign_for(st: &AppState, role: &Role, id: &str) -> ApiResult<CampaignEvent> {
    let ev = st
        .campaigns
        .read()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("campaign `{id}` not found")))?;
    role.advertiser(&ev.advertiser_id)
        .map_err(|_| ApiError::forbidden(format!("{role} may not access campaign `{id}` (it belongs to another advertiser)")))?;
    Ok(ev)
}

/// Validates `ev` as the topology would, publishes it and records it as the campaign's snapshot.
async fn publish_campaign(st: &AppState, ev: CampaignEvent) -> ApiResult<CampaignEvent> {
    let payload = serde_json::to_vec(&ev).map_err(|e| ApiError::internal(e.to_string()))?;
    let checked = st.validator.campaign_event(&payload, &coord(), Some(now_ms())).map_err(|e| rejected("", &e))?;
    let rec = ProduceRecord {
        key: Some(checked.partition_key().into_bytes()),
        payload,
        timestamp: checked.timestamp,
        partition: None,
        origin: None,
    };
    st.publish(&st.topics().campaign_events, vec![rec]).await?;
    st.campaigns.write().insert(checked.campaign_id.clone(), checked.clone());
    Ok(checked)
}

/// The next event time of a campaign: now, but after its previous change (the ranking keeps the latest
/// event by event time).
fn next_time(prev: Option<&CampaignEvent>) -> Timestamp {
    let now = now_ms();
    prev.map_or(now, |p| now.max(p.timestamp + 1))
}

/// `POST /v1/campaigns` (admin, the owner): publishes `CAMPAIGN_CREATED` (PENDING, awaiting approval).
#[utoipa::path(post, path = "/v1/campaigns", tag = "campaigns", request_body = NewCampaign, responses((status = 201, description = "CAMPAIGN_CREATED published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 409, description = "exists", body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_campaign(
    State(st): S,
    Extension(role): Extension<Role>,
    Body(body): Body<NewCampaign>,
) -> ApiResult<Response> {
    role.advertiser(&body.advertiser_id)?;
    if st.db.advertiser(&body.advertiser_id)?.is_none() {
        return Err(ApiError::field("advertiser_id", format!("advertiser `{}` does not exist", body.advertiser_id)));
    }
    let effective_from = body.effective_from.as_deref().map(|s| parse_ts("effective_from", s)).transpose()?;
    let _guard = st.campaign_writes.lock().await;
    let campaign_id = match body.campaign_id {
        Some(id) => {
            check_id(&st, "campaign_id", &id)?;
            if st.campaigns.read().contains_key(&id) {
                return Err(ApiError::conflict(format!("campaign `{id}` already exists")));
            }
            id
        }
        None => st.ids.next("campaign"),
    };
    let ev = CampaignEvent {
        event_id: Some(st.ids.next("evt")),
        event_type: CampaignEventType::Created,
        timestamp: now_ms(),
        campaign_id,
        advertiser_id: body.advertiser_id,
        product_id: body.product_id,
        placement: body.placement,
        category: body.category,
        bid_price: body.bid_price,
        daily_budget: body.daily_budget,
        status: CampaignStatus::Pending,
        approval_status: ApprovalStatus::Pending,
        targeting: body.targeting,
        effective_from,
        rtb_impact: body.rtb_impact,
        status_reason: None,
    };
    let ev = publish_campaign(&st, ev).await?;
    Ok((StatusCode::CREATED, Json(campaign_view(&st, &ev)?)).into_response())
}

/// `GET /v1/campaigns/{id}` (admin, the owner): the campaign with its status and why.
#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_campaign(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> ApiResult<Json<CampaignView>> {
    let ev = campaign_for(&st, &role, &id)?;
    Ok(Json(campaign_view(&st, &ev)?))
}

/// `PATCH /v1/campaigns/{id}` (admin, the owner): publishes `CAMPAIGN_UPDATED`.
#[utoipa::path(patch, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), request_body = CampaignPatch, responses((status = 200, description = "CAMPAIGN_UPDATED published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "deleted", body = ErrorBody)), security(("bearer" = [])))]
pub async fn patch_campaign(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Body(patch): Body<CampaignPatch>,
) -> ApiResult<Json<CampaignView>> {
    let _guard = st.campaign_writes.lock().await;
    let prev = campaign_for(&st, &role, &id)?;
    if prev.status == CampaignStatus::Deleted {
        return Err(ApiError::conflict(format!("campaign `{id}` is deleted")));
    }
    let mut ev = prev.clone();
    let effective_from = patch.effective_from.map(|v| parse_ts("effective_from", &v)).transpose()?;
    // `|`, not `||`: every field sent is applied.
    let changed = put(&mut ev.bid_price, patch.bid_price)
        | put(&mut ev.daily_budget, patch.daily_budget)
        | put(&mut ev.targeting, patch.targeting.map(Some))
        | put(&mut ev.placement, patch.placement)
        | put(&mut ev.category, patch.category)
        | put(&mut ev.product_id, patch.product_id.map(Some))
        | put(&mut ev.effective_from, effective_from.map(Some))
        | put(&mut ev.rtb_impact, patch.rtb_impact.map(Some));
    if !changed {
        return Err(ApiError::bad_request(
            "the patch changes nothing: send at least one of bid_price, daily_budget, targeting, placement, category, product_id, effective_from, rtb_impact",
        ));
    }
    ev.event_type = CampaignEventType::Updated;
    ev.event_id = Some(st.ids.next("evt"));
    ev.timestamp = next_time(Some(&prev));
    let ev = publish_campaign(&st, ev).await?;
    Ok(Json(campaign_view(&st, &ev)?))
}

/// Sets `field` to `value` if one was sent; whether it was.
fn put<T>(field: &mut T, value: Option<T>) -> bool {
    value.map(|v| *field = v).is_some()
}

/// A status action on a campaign.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    /// Review passed (admin): `CAMPAIGN_APPROVED`, APPROVED, and ACTIVE if it was PENDING.
    Approve,
    /// Review failed (admin): `CAMPAIGN_APPROVED` (review finished) with REJECTED.
    Reject,
    /// `CAMPAIGN_STATUS_CHANGED` to PAUSED.
    Pause,
    /// `CAMPAIGN_STATUS_CHANGED` to ACTIVE.
    Resume,
    /// `CAMPAIGN_STATUS_CHANGED` to DELETED.
    Delete,
}

async fn act(st: Arc<AppState>, role: Role, id: String, action: Action) -> ApiResult<Json<CampaignView>> {
    let _guard = st.campaign_writes.lock().await;
    let prev = campaign_for(&st, &role, &id)?;
    if matches!(action, Action::Approve | Action::Reject) {
        role.admin()?;
    }
    if prev.status == CampaignStatus::Deleted {
        return Err(ApiError::conflict(format!("campaign `{id}` is deleted")));
    }
    let mut ev = prev.clone();
    match action {
        Action::Approve => {
            ev.event_type = CampaignEventType::Approved;
            ev.approval_status = ApprovalStatus::Approved;
            if ev.status == CampaignStatus::Pending {
                ev.status = CampaignStatus::Active;
            }
        }
        Action::Reject => {
            ev.event_type = CampaignEventType::Approved;
            ev.approval_status = ApprovalStatus::Rejected;
        }
        Action::Pause => {
            ev.event_type = CampaignEventType::StatusChanged;
            ev.status = CampaignStatus::Paused;
        }
        Action::Resume => {
            if prev.approval_status != ApprovalStatus::Approved {
                return Err(ApiError::conflict(format!(
                    "campaign `{id}` is {} in review: only an approved campaign can be resumed",
                    prev.approval_status.as_str()
                )));
            }
            ev.event_type = CampaignEventType::StatusChanged;
            ev.status = CampaignStatus::Active;
        }
        Action::Delete => {
            ev.event_type = CampaignEventType::StatusChanged;
            ev.status = CampaignStatus::Deleted;
        }
    }
    ev.event_id = Some(st.ids.next("evt"));
    ev.timestamp = next_time(Some(&prev));
    ev.status_reason = matches!(ev.event_type, CampaignEventType::StatusChanged).then_some(rtb_ops::schema::StatusReason::Manual);
    let ev = publish_campaign(&st, ev).await?;
    Ok(Json(campaign_view(&st, &ev)?))
}

/// `POST /v1/campaigns/{id}/approve` (admin).
#[utoipa::path(post, path = "/v1/campaigns/{id}/approve", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, description = "CAMPAIGN_APPROVED published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "deleted", body = ErrorBody)), security(("bearer" = [])))]
pub async fn approve(State(st): S, Extension(role): Extension<Role>, Path(id): Path<String>) -> ApiResult<Json<CampaignView>> {
    act(st, role, id, Action::Approve).await
}
/// `POST /v1/campaigns/{id}/reject` (admin).
#[utoipa::path(post, path = "/v1/campaigns/{id}/reject", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, description = "CAMPAIGN_APPROVED with approval_status REJECTED published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "deleted", body = ErrorBody)), security(("bearer" = [])))]
pub async fn reject(State(st): S, Extension(role): Extension<Role>, Path(id): Path<String>) -> ApiResult<Json<CampaignView>> {
    act(st, role, id, Action::Reject).await
}
/// `POST /v1/campaigns/{id}/pause` (admin, the owner).
#[utoipa::path(post, path = "/v1/campaigns/{id}/pause", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, description = "CAMPAIGN_STATUS_CHANGED published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "deleted", body = ErrorBody)), security(("bearer" = [])))]
pub async fn pause(State(st): S, Extension(role): Extension<Role>, Path(id): Path<String>) -> ApiResult<Json<CampaignView>> {
    act(st, role, id, Action::Pause).await
}
/// `POST /v1/campaigns/{id}/resume` (admin, the owner).
#[utoipa::path(post, path = "/v1/campaigns/{id}/resume", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, description = "CAMPAIGN_STATUS_CHANGED published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "deleted or not approved", body = ErrorBody)), security(("bearer" = [])))]
pub async fn resume(State(st): S, Extension(role): Extension<Role>, Path(id): Path<String>) -> ApiResult<Json<CampaignView>> {
    act(st, role, id, Action::Resume).await
}
/// `DELETE /v1/campaigns/{id}` (admin, the owner).
#[utoipa::path(delete, path = "/v1/campaigns/{id}", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, description = "CAMPAIGN_STATUS_CHANGED (DELETED) published", body = CampaignView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody), (status = 409, description = "already deleted", body = ErrorBody)), security(("bearer" = [])))]
pub async fn delete(State(st): S, Extension(role): Extension<Role>, Path(id): Path<String>) -> ApiResult<Json<CampaignView>> {
    act(st, role, id, Action::Delete).await
}

/// `GET /v1/campaigns/{id}/metrics` query: RFC 3339 bounds on the window start.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsQuery {
    from: Option<String>,
    to: Option<String>,
}

/// One 5-minute window.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WindowView {
    window_start: String,
    window_end: String,
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend: i64,
    revenue: i64,
    ctr: f64,
    cvr: f64,
}

/// A campaign's closed windows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MetricsView {
    campaign_id: String,
    windows: Vec<WindowView>,
    /// Sums over the windows shown.
    totals: WindowTotals,
}

/// Sums over windows.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct WindowTotals {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend: i64,
    revenue: i64,
    ctr: f64,
    cvr: f64,
}

/// `GET /v1/campaigns/{id}/metrics?from=&to=` (admin, the owner): written performance windows whose start
/// is in `[from, to)`.
#[utoipa::path(get, path = "/v1/campaigns/{id}/metrics", tag = "campaigns", params(("id" = String, Path, description = "campaign id"), MetricsQuery), responses((status = 200, body = MetricsView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)), security(("bearer" = [])))]
pub async fn campaign_metrics(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
    Query(q): Query<MetricsQuery>,
) -> ApiResult<Json<MetricsView>> {
    let from = q.from.as_deref().map(|s| parse_ts("from", s)).transpose()?;
    let to = q.to.as_deref().map(|s| parse_ts("to", s)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ApiError::field("to", "must not be before `from`"));
        }
    }
    campaign_for(&st, &role, &id)?;
    let rows = st.cache.window_metrics(MetricsScope::Campaign, &id)?;
    let mut sum = rtb_ops::sink::Metrics::default();
    let windows: Vec<WindowView> = rows
        .into_iter()
        .filter(|w| from.is_none_or(|f| w.window_start >= f) && to.is_none_or(|t| w.window_start < t))
        .map(|w| {
            sum = sum.plus(w.metrics);
            WindowView {
                window_start: fmt_ts(w.window_start),
                window_end: fmt_ts(w.window_end),
                impressions: w.metrics.impressions,
                clicks: w.metrics.clicks,
                conversions: w.metrics.conversions,
                spend: w.metrics.spend,
                revenue: w.metrics.revenue,
                ctr: w.metrics.ctr(),
                cvr: w.metrics.cvr(),
            }
        })
        .collect();
    let totals = WindowTotals {
        impressions: sum.impressions,
        clicks: sum.clicks,
        conversions: sum.conversions,
        spend: sum.spend,
        revenue: sum.revenue,
        ctr: sum.ctr(),
        cvr: sum.cvr(),
    };
    Ok(Json(MetricsView { campaign_id: id, windows, totals }))
}

/// Today's spend against the daily budget.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    campaign_id: String,
    /// The budget day (in the advertiser's zone).
    day: String,
    time_zone: String,
    daily_budget: i64,
    spend: i64,
    remaining: i64,
    used_pct: f64,
    paused_by_budget: bool,
}

/// `GET /v1/campaigns/{id}/budget` (admin, the owner).
#[utoipa::path(get, path = "/v1/campaigns/{id}/budget", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, body = BudgetView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)), security(("bearer" = [])))]
pub async fn campaign_budget(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> ApiResult<Json<BudgetView>> {
    let ev = campaign_for(&st, &role, &id)?;
    let time_zone = st
        .db
        .advertiser(&ev.advertiser_id)?
        .map_or_else(|| st.ops.budget.default_time_zone.clone(), |a| a.time_zone);
    let tz = parse_time_zone(&time_zone)?;
    let day = Day::of(now_ms(), tz);
    let spend = st.cache.spend(&id, day)?;
    let paused = st.db.campaign(&id)?.is_some_and(|r| r.budget_paused_day == Some(day));
    Ok(Json(BudgetView {
        campaign_id: id,
        day: day.to_string(),
        time_zone,
        daily_budget: ev.daily_budget,
        spend,
        remaining: (ev.daily_budget - spend).max(0),
        used_pct: if ev.daily_budget > 0 { spend as f64 * 100.0 / ev.daily_budget as f64 } else { 0.0 },
        paused_by_budget: paused,
    }))
}

/// Attributed conversions of a campaign.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversionsView {
    campaign_id: String,
    #[schema(value_type = Vec<Object>)]
    conversions: Vec<ConversionRow>,
}

/// `GET /v1/campaigns/{id}/conversions` (admin, the owner).
#[utoipa::path(get, path = "/v1/campaigns/{id}/conversions", tag = "campaigns", params(("id" = String, Path, description = "campaign id")), responses((status = 200, body = ConversionsView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 404, description = "unknown id", body = ErrorBody)), security(("bearer" = [])))]
pub async fn campaign_conversions(
    State(st): S,
    Extension(role): Extension<Role>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversionsView>> {
    campaign_for(&st, &role, &id)?;
    let conversions = st.db.conversions()?.into_iter().filter(|c| c.campaign_id.as_deref() == Some(id.as_str())).collect();
    Ok(Json(ConversionsView { campaign_id: id, conversions }))
}

// ---------------------------------------------------------------------------------------------------------
// Rankings

/// What a slot shows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RankingView {
    #[schema(value_type = String)]
    placement: Placement,
    category: String,
    /// The cache key.
    key: String,
    #[schema(value_type = Vec<Object>)]
    entries: Vec<RankedEntry>,
}

/// `GET /v1/rankings/{placement}/{category}` (admin, ingest).
#[utoipa::path(get, path = "/v1/rankings/{placement}/{category}", tag = "rankings", params(("placement" = String, Path, description = "HOME, CATEGORY, PRODUCT_DETAIL or SEARCH"), ("category" = String, Path, description = "category (URL-encoded)")), responses((status = 200, body = RankingView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_ranking(
    State(st): S,
    Extension(role): Extension<Role>,
    Path((placement, category)): Path<(String, String)>,
) -> ApiResult<Json<RankingView>> {
    role.serving()?;
    let p = Placement::parse(&placement).ok_or_else(|| {
        ApiError::field("placement", format!("`{placement}` is not one of HOME, CATEGORY, PRODUCT_DETAIL, SEARCH"))
    })?;
    let entries = st.cache.ranking(p, &category)?;
    Ok(Json(RankingView { placement: p, key: rtb_ops::sink::ranking_key(p, &category), category, entries }))
}

// ---------------------------------------------------------------------------------------------------------
// Events

/// One accepted event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    event_id: String,
    /// The price charged for a click (filled from the live ranking when the request had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    actual_price: Option<i64>,
}

/// The 202 answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedView {
    accepted: usize,
    events: Vec<Accepted>,
}

/// The events of a body: one object or an array of them (1 to `max_batch`).
fn events_of(st: &AppState, bytes: &[u8]) -> ApiResult<(Vec<serde_json::Map<String, Value>>, bool)> {
    let v: Value = parse(bytes)?;
    let (items, batch) = match v {
        Value::Array(a) => (a, true),
        v @ Value::Object(_) => (vec![v], false),
        _ => return Err(ApiError::bad_request("the body must be one event (a JSON object) or an array of events")),
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("the batch is empty"));
    }
    if items.len() > st.limits.max_batch {
        return Err(ApiError::too_large(format!(
            "the batch has {} events; at most {} per request",
            items.len(),
            st.limits.max_batch
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::Object(m) => out.push(m),
            _ => return Err(ApiError::field(format!("[{i}]"), "an event must be a JSON object")),
        }
    }
    Ok((out, batch))
}

fn prepare(st: &AppState, ev: &mut serde_json::Map<String, Value>, at: &str, now: Timestamp) -> ApiResult<String> {
    let field = |f: &str| if at.is_empty() { f.to_string() } else { format!("{at}.{f}") };
    if ev.contains_key("event_id") {
        return Err(ApiError::field(field("event_id"), "is assigned by the server; leave it out"));
    }
    let id = st.ids.next("evt");
    ev.insert("event_id".into(), Value::String(id.clone()));
    if !ev.contains_key("timestamp") {
        ev.insert("timestamp".into(), Value::String(fmt_ts(now)));
    }
    Ok(id)
}

/// `POST /v1/events/ad` (ingest): impressions, clicks, conversions; one or an array.
#[utoipa::path(post, path = "/v1/events/ad", tag = "events", request_body(content = Object, description = "one ad-event (SPEC §3; event_id assigned by the server, timestamp defaults to now, a CLICK without actual_price pays the live GSP price) or an array of them"), responses((status = 202, description = "durably in the log", body = AcceptedView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 413, description = "body or batch too large", body = ErrorBody)), security(("bearer" = [])))]
pub async fn post_ad_events(State(st): S, Extension(role): Extension<Role>, req: Request) -> ApiResult<Response> {
    role.ingest()?;
    let bytes = raw_body(req, &()).await?;
    let (mut items, batch) = events_of(&st, &bytes)?;
    let now = now_ms();
    let mut records = Vec::with_capacity(items.len());
    let mut accepted = Vec::with_capacity(items.len());
    let mut rankings: BTreeMap<(Placement, String), Vec<RankedEntry>> = BTreeMap::new();
    for (i, ev) in items.iter_mut().enumerate() {
        let at = if batch { format!("[{i}]") } else { String::new() };
        let field = |f: &str| if at.is_empty() { f.to_string() } else { format!("{at}.{f}") };
        let event_id = prepare(&st, ev, &at, now)?;
        // A click without a price pays the GSP price of the live ranking.
        let is_click = ev.get("event_type").and_then(Value::as_str) == Some(AdEventType::Click.as_str());
        if is_click && ev.get("actual_price").is_none_or(Value::is_null) {
            let placement = ev.get("placement").and_then(Value::as_str).and_then(Placement::parse);
            let category = ev.get("category").and_then(Value::as_str).map(str::to_string);
            let campaign = ev.get("campaign_id").and_then(Value::as_str).map(str::to_string);
            if let (Some(p), Some(c), Some(campaign)) = (placement, category, campaign) {
                let key = (p, c.clone());
                if !rankings.contains_key(&key) {
                    rankings.insert(key.clone(), st.cache.ranking(p, &c)?);
                }
                let entry = rankings[&key].iter().find(|e| e.campaign_id == campaign).cloned();
                let Some(entry) = entry else {
                    return Err(ApiError::field(
                        field("actual_price"),
                        format!(
                            "is absent and campaign `{campaign}` is not in the live ranking of {}/{c}, so no GSP price can be filled: send actual_price",
                            p.as_str()
                        ),
                    ));
                };
                ev.insert("actual_price".into(), Value::from(entry.cpc));
                if ev.get("bid_price").is_none_or(Value::is_null) {
                    ev.insert("bid_price".into(), Value::from(entry.bid_price));
                }
            }
        }
        let payload = serde_json::to_vec(&ev).map_err(|e| ApiError::internal(e.to_string()))?;
        let checked = st.validator.ad_event(&payload, &coord(), Some(now)).map_err(|e| rejected(&at, &e))?;
        {
            let campaigns = st.campaigns.read();
            let Some(c) = campaigns.get(&checked.campaign_id) else {
                return Err(ApiError::field(field("campaign_id"), format!("campaign `{}` does not exist", checked.campaign_id)));
            };
            if c.advertiser_id != checked.advertiser_id {
                return Err(ApiError::field(
                    field("advertiser_id"),
                    format!("campaign `{}` belongs to advertiser `{}`", checked.campaign_id, c.advertiser_id),
                ));
            }
        }
        records.push(ProduceRecord {
            key: Some(checked.device_id.as_bytes().to_vec()),
            payload,
            timestamp: checked.timestamp,
            partition: None,
            origin: None,
        });
        accepted.push(Accepted { event_id, actual_price: checked.actual_price });
    }
    st.publish(&st.topics().ad_events, records).await?;
    Ok((StatusCode::ACCEPTED, Json(AcceptedView { accepted: accepted.len(), events: accepted })).into_response())
}

/// `POST /v1/events/conversion` (ingest): orders; one or an array.
#[utoipa::path(post, path = "/v1/events/conversion", tag = "events", request_body(content = Object, description = "one conversion event (SPEC §3; event_id assigned by the server) or an array of them"), responses((status = 202, description = "durably in the log", body = AcceptedView), (status = 400, description = "invalid request (names the field)", body = ErrorBody), (status = 401, description = "no or unknown token", body = ErrorBody), (status = 403, description = "the role may not", body = ErrorBody), (status = 413, description = "body or batch too large", body = ErrorBody)), security(("bearer" = [])))]
pub async fn post_conversion_events(State(st): S, Extension(role): Extension<Role>, req: Request) -> ApiResult<Response> {
    role.ingest()?;
    let bytes = raw_body(req, &()).await?;
    let (mut items, batch) = events_of(&st, &bytes)?;
    let now = now_ms();
    let mut records = Vec::with_capacity(items.len());
    let mut accepted = Vec::with_capacity(items.len());
    for (i, ev) in items.iter_mut().enumerate() {
        let at = if batch { format!("[{i}]") } else { String::new() };
        let event_id = prepare(&st, ev, &at, now)?;
        let payload = serde_json::to_vec(&ev).map_err(|e| ApiError::internal(e.to_string()))?;
        let checked = st.validator.conversion_event(&payload, &coord(), Some(now)).map_err(|e| rejected(&at, &e))?;
        records.push(ProduceRecord {
            key: Some(checked.device_id.as_bytes().to_vec()),
            payload,
            timestamp: checked.timestamp,
            partition: None,
            origin: None,
        });
        accepted.push(Accepted { event_id, actual_price: None });
    }
    st.publish(&st.topics().conversion_events, records).await?;
    Ok((StatusCode::ACCEPTED, Json(AcceptedView { accepted: accepted.len(), events: accepted })).into_response())
}
