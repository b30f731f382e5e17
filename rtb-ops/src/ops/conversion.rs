//! Conversion matching: a conversion at time `t` is attributed to the most recent CLICK with the same
//! `device_id` and `product_id` in `[t − 24 h, t]` (last click wins); one result per `order_id`.
//!
//! Built on [`rtb_stream::join::IntervalJoin`] in `OnClose` + `LeftOuter` mode with the conversion as the
//! left side and clicks as the right side (`lower = −24 h`, `upper = 0`): when the watermark passes a
//! conversion's time, the join hands over every buffered click of its window sorted by time, and the
//! last one wins (on equal times, the one that arrived last). Conversions without a click are written as
//! unattributed rows (no campaign) and counted.
//!
//! One result per order: the join closes conversions in event-time order, and the database keeps the
//! first result written per `order_id` (its unique key, which also makes replays idempotent), so of the
//! conversions of one order the **earliest** counts; later ones are ignored for attribution and recorded
//! ([`Database::record_duplicate_order`], idempotent, so a restart neither loses nor double-counts them). An unattributed
//! conversion is a result too (it claims its order; reports that list attributed conversions only filter
//! on [`ConversionRow::is_attributed`]). Clicks without a `product_id` cannot match and are skipped.
//! Conversions and clicks that arrive after they could be joined correctly are counted
//! ([`ConversionStats::late_conversions`], [`ConversionStats::late_clicks`]) and go to the late-records
//! output ([`Context::late`]) with the reason: they are valid input that arrived late, not dead letters.
//!
//! The two inputs must be co-partitioned by device: `conversion-events` (4 partitions) is not, against
//! `ad-events` (8), so the topology repartitions it first (see `rtb-topology`).

use std::sync::Arc;
use std::time::Duration;

use rtb_stream::join::{IntervalJoin, IntervalJoinSpec, JoinEmit, JoinEvent, JoinKind, Timed};
use rtb_stream::runtime::Output;
use rtb_stream::state::{StateScope, WriteBatch};
use rtb_stream::{Context, Operator, Record, SourceCoord, Timestamp};
use serde::{Deserialize, Serialize};

pub use super::MatchInput;
pub use crate::config::ConversionConfig;
use super::dead_letter;
use crate::error::Result;
use crate::schema::ConversionType;
use crate::sink::{ConversionRow, Database};

/// The conversion side of the join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionSide {
    /// Order.
    pub order_id: String,
    /// Revenue (KRW).
    pub revenue_amount: i64,
    /// Kind.
    pub conversion_type: ConversionType,
    /// Where the conversion was read: tells a later report of the same order (a duplicate, possibly
    /// byte-identical) from the redelivery of this one after a restart.
    pub source: SourceCoord,
}

/// The click side of the join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickSide {
    /// Campaign.
    pub campaign_id: String,
    /// Ad.
    pub ad_id: String,
    /// Advertiser.
    pub advertiser_id: String,
}

/// Join key: `(device_id, product_id)`.
pub type MatchKey = (String, String);

/// Counters of the matcher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversionStats {
    /// Conversions taken in.
    pub conversions: u64,
    /// Clicks buffered.
    pub clicks: u64,
    /// Results written with a click.
    pub attributed: u64,
    /// Results written without a click.
    pub unattributed: u64,
    /// Conversions of an order that already has its result (ignored).
    pub duplicate_orders: u64,
    /// Clicks without a product id (cannot match).
    pub clicks_without_product: u64,
    /// Conversions too late to be matched correctly (sent to the late-records output).
    pub late_conversions: u64,
    /// Clicks too late to be matched correctly (sent to the late-records output).
    pub late_clicks: u64,
}

/// The conversion matcher operator (inputs: `ad-events` and the repartitioned `conversion-events`).
pub struct ConversionMatcher {
    db: Arc<dyn Database>,
    join: IntervalJoin<MatchKey, ConversionSide, ClickSide>,
    cfg: ConversionConfig,
    events: Vec<JoinEvent<MatchKey, ConversionSide, ClickSide>>,
    stats: ConversionStats,
}

impl std::fmt::Debug for ConversionMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversionMatcher").field("cfg", &self.cfg).field("stats", &self.stats).finish()
    }
}

/// The result row of a closed conversion: attributed to the last click, or unattributed.
pub fn conversion_row(key: &MatchKey, conversion: &Timed<ConversionSide>, last_click: Option<&Timed<ClickSide>>) -> ConversionRow {
    ConversionRow {
        order_id: conversion.value.order_id.clone(),
        device_id: key.0.clone(),
        product_id: key.1.clone(),
        campaign_id: last_click.map(|c| c.value.campaign_id.clone()),
        ad_id: last_click.map(|c| c.value.ad_id.clone()),
        advertiser_id: last_click.map(|c| c.value.advertiser_id.clone()),
        click_timestamp: last_click.map(|c| c.timestamp),
        conversion_timestamp: conversion.timestamp,
        revenue_amount: conversion.value.revenue_amount,
        conversion_type: conversion.value.conversion_type,
        source: Some(conversion.value.source.clone()),
    }
}

impl ConversionMatcher {
    /// Builds the matcher; its join buffers live in `scope`.
    pub fn new(scope: &StateScope, db: Arc<dyn Database>, cfg: ConversionConfig) -> Result<Self> {
        let spec =
            IntervalJoinSpec::within(cfg.attribution_window, Duration::ZERO, JoinKind::LeftOuter, JoinEmit::OnClose);
        Ok(Self {
            db,
            join: IntervalJoin::new(scope, "conversion-join", spec)?,
            cfg,
            events: Vec::new(),
            stats: ConversionStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> ConversionStats {
        self.stats
    }

    fn write(&mut self, row: &ConversionRow) -> Result<()> {
        if self.db.insert_conversion_once(row)? {
            if row.is_attributed() {
                self.stats.attributed += 1;
            } else {
                self.stats.unattributed += 1;
            }
        } else if self.db.record_duplicate_order(row)? {
            self.stats.duplicate_orders += 1;
        }
        Ok(())
    }

    fn drain(&mut self, source: Option<&SourceCoord>, ctx: &mut Context<'_, Output>) -> Result<()> {
        for ev in std::mem::take(&mut self.events) {
            match ev {
                JoinEvent::Group { key, left, rights } => {
                    let row = conversion_row(&key, &left, rights.last());
                    self.write(&row)?;
                }
                JoinEvent::Unmatched { key, left } => {
                    let row = conversion_row(&key, &left, None);
                    self.write(&row)?;
                }
                JoinEvent::Pair { key, left, right } => {
                    // Not produced in OnClose mode; handled as a one-click group for completeness.
                    let row = conversion_row(&key, &left, Some(&right));
                    self.write(&row)?;
                }
                JoinEvent::LateLeft { key, left } => {
                    self.stats.late_conversions += 1;
                    if let Some(src) = source {
                        let reason = format!(
                            "LATE_CONVERSION: order {} at {} ms arrived after the watermark passed it",
                            left.value.order_id, left.timestamp
                        );
                        ctx.late(dead_letter(src, "conversion-matcher", reason, &(&key, &left)));
                    }
                }
                JoinEvent::LateRight { key, right } => {
                    self.stats.late_clicks += 1;
                    if let Some(src) = source {
                        let reason = format!(
                            "LATE_CLICK: click at {} ms arrived after conversions it could match were closed",
                            right.timestamp
                        );
                        ctx.late(dead_letter(src, "conversion-matcher", reason, &(&key, &right)));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Operator for ConversionMatcher {
    type Key = String;
    type In = MatchInput;
    type Out = Output;

    fn process(&mut self, record: Record<String, MatchInput>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let Record { value, source, .. } = record;
        match value {
            MatchInput::Conversion(c) => {
                self.stats.conversions += 1;
                let side = ConversionSide {
                    order_id: c.order_id,
                    revenue_amount: c.revenue_amount,
                    conversion_type: c.conversion_type,
                    source: source.clone(),
                };
                self.join.process_left((c.device_id, c.product_id), c.timestamp, side, &mut self.events);
            }
            MatchInput::Ad(a) if a.is_click() => {
                let a = std::sync::Arc::unwrap_or_clone(a); // clicks only: a few per cent of the records
                let Some(product_id) = a.product_id else {
                    self.stats.clicks_without_product += 1;
                    return Ok(());
                };
                self.stats.clicks += 1;
                let side = ClickSide { campaign_id: a.campaign_id, ad_id: a.ad_id, advertiser_id: a.advertiser_id };
                self.join.process_right((a.device_id, product_id), a.timestamp, side, &mut self.events);
            }
            MatchInput::Ad(_) => return Ok(()),
        }
        if !self.events.is_empty() {
            self.drain(Some(&source), ctx)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.join.on_watermark(watermark, &mut self.events);
        if !self.events.is_empty() {
            self.drain(None, ctx)?;
        }
        Ok(())
    }

    fn flush_state(&mut self, batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        self.join.flush_into(batch)
    }
}

#[cfg(test)]
#[path = "conversion_tests.rs"]
mod tests;
