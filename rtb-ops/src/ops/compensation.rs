//! The compensation worker: each `compensation-events` record credits `refund_amount` back to the
//! advertiser's balance (one ledger row, idempotency key [`CompensationEvent::refund_key`]
//! `refund:{device}/{ad}/{window start ms}`, stored with the compensation's fingerprint) and lowers the
//! campaign's spend counter of the day of the compensation's timestamp (the window end, in the
//! advertiser's zone) by the same amount, with its own idempotency key (`spend:{refund key}`), so the
//! budget sees the refund and replays change nothing twice.
//!
//! Refused, as dead letters with the reason: `REFUND_CONFLICT` (the refund key was already booked for a
//! compensation with different content: nothing is credited twice), and `UNKNOWN_ADVERTISER` /
//! `CAMPAIGN_ADVERTISER_MISMATCH` (the [`Billing`] rule: the clicks it refunds were never charged).

use std::sync::Arc;

use rtb_stream::runtime::Output;
use rtb_stream::{Context, Operator, Record};

use super::{dead_letter, Billing, ZoneCache};
use crate::calendar::{Day, DEFAULT_TIME_ZONE};
use crate::error::Result;
use crate::schema::CompensationEvent;
use crate::sink::{Cache, Database, LedgerEntry, LedgerKind, LedgerOutcome};

/// Counters of the compensation worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompensationStats {
    /// Refunds credited.
    pub refunded: u64,
    /// Refunds already in the ledger (replays).
    pub duplicates: u64,
    /// KRW credited.
    pub amount: i64,
    /// Compensations whose refund key was booked with different content (dead-lettered).
    pub conflicts: u64,
    /// Compensations of unknown advertisers or of campaigns of another advertiser (dead-lettered).
    pub refused: u64,
}

/// The compensation worker (input: `compensation-events`).
#[derive(Debug)]
pub struct CompensationWorker {
    cache: Arc<dyn Cache>,
    db: Arc<dyn Database>,
    zones: ZoneCache,
    billing: Billing,
    stats: CompensationStats,
}

impl CompensationWorker {
    /// A worker over the two sinks; advertisers without a zone use `default_time_zone`.
    pub fn new(cache: Arc<dyn Cache>, db: Arc<dyn Database>, default_time_zone: &str) -> Result<Self> {
        Ok(Self {
            zones: ZoneCache::new(default_time_zone)?,
            billing: Billing::default(),
            cache,
            db,
            stats: CompensationStats::default(),
        })
    }

    /// A worker with the default zone (`Asia/Seoul`).
    pub fn with_default_zone(cache: Arc<dyn Cache>, db: Arc<dyn Database>) -> Result<Self> {
        Self::new(cache, db, DEFAULT_TIME_ZONE)
    }

    /// Counters so far.
    pub fn stats(&self) -> CompensationStats {
        self.stats
    }

    /// Applies one compensation (what `process` does).
    pub fn refund(&mut self, ev: &CompensationEvent) -> Result<LedgerOutcome> {
        let key = ev.refund_key();
        let entry = LedgerEntry {
            idempotency_key: key.clone(),
            advertiser_id: ev.advertiser_id.clone(),
            campaign_id: Some(ev.campaign_id.clone()),
            kind: LedgerKind::Refund,
            amount: ev.refund_amount,
            event_time: ev.timestamp,
            reference: ev.event_id.clone().unwrap_or_else(|| key.clone()),
            fingerprint: ev.fingerprint(),
        };
        let outcome = self.db.apply_ledger(&entry)?;
        match outcome {
            LedgerOutcome::Applied { .. } => {
                self.stats.refunded += 1;
                self.stats.amount += ev.refund_amount;
            }
            LedgerOutcome::Duplicate => self.stats.duplicates += 1,
            LedgerOutcome::Conflict => {
                self.stats.conflicts += 1;
                return Ok(outcome);
            }
        }
        // Lowered on every delivery (its own key makes it once), so a crash between the ledger and the
        // counter cannot lose the decrement.
        let day = Day::of(ev.timestamp, self.zones.zone(&*self.db, &ev.advertiser_id)?);
        self.cache.add_spend_once(&ev.campaign_id, day, -ev.refund_amount, &format!("spend:{key}"), ev.timestamp)?;
        Ok(outcome)
    }
}

impl Operator for CompensationWorker {
    type Key = String;
    type In = CompensationEvent;
    type Out = Output;

    fn process(&mut self, record: Record<String, CompensationEvent>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let ev = &record.value;
        if let Err(why) = self.billing.check(&*self.db, &ev.advertiser_id, &ev.campaign_id)? {
            self.stats.refused += 1;
            let reason = why.reason(&ev.advertiser_id, &ev.campaign_id, "nothing is refunded");
            tracing::warn!(source = %record.source, %reason, "refund refused");
            ctx.dead_letter(dead_letter(&record.source, "compensation", reason, ev));
            return Ok(());
        }
        if self.refund(ev)? == LedgerOutcome::Conflict {
            let reason = format!(
                "REFUND_CONFLICT: refund key `{}` was already booked for a compensation with different content; nothing is refunded",
                ev.refund_key()
            );
            tracing::warn!(source = %record.source, %reason, "refund conflict");
            ctx.dead_letter(dead_letter(&record.source, "compensation", reason, ev));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::schema::{rfc3339, CompensationReason, CompensationType, DetectionWindow};
    use crate::sink::{Advertiser, MemoryCache, MemoryDatabase};
    use rtb_stream::{Harness, SourceCoord};

    fn ts(s: &str) -> i64 {
        rfc3339::parse(s).unwrap()
    }

    fn comp(times: &[&str], refund: i64) -> CompensationEvent {
        CompensationEvent {
            event_id: None,
            timestamp: ts(times[0]) + 300_000,
            advertiser_id: "advertiser_50".into(),
            campaign_id: "campaign_100".into(),
            ad_id: "ad_001".into(),
            device_id: "device_12345".into(),
            duplicate_click_count: times.len() as u32,
            refund_amount: refund,
            original_click_timestamps: times.iter().map(|s| ts(s)).collect(),
            detection_window: DetectionWindow::FiveMinutes,
            reason: CompensationReason::DuplicateClickDetected,
            compensation_type: CompensationType::BalanceRefund,
        }
    }

    #[test]
    fn spec_refund_credits_once_and_lowers_the_days_spend() {
        let cache = MemoryCache::new();
        let db = MemoryDatabase::new();
        db.upsert_advertiser(&Advertiser { advertiser_id: "advertiser_50".into(), opening_balance: 10_000, time_zone: "Asia/Seoul".into() }).unwrap();
        let day = Day::from_ymd(2024, 1, 15).unwrap();
        cache.add_spend_once("campaign_100", day, 3600, "clicks", 0).unwrap();
        db.apply_ledger(&LedgerEntry {
            idempotency_key: "charges".into(),
            advertiser_id: "advertiser_50".into(),
            campaign_id: None,
            kind: LedgerKind::Charge,
            amount: -3600,
            event_time: 0,
            reference: String::new(),
            fingerprint: 0,
        })
        .unwrap();
        let ev = comp(&["2024-01-15T10:30:15Z", "2024-01-15T10:30:18Z", "2024-01-15T10:30:22Z"], 2400);
        let mut h = Harness::new(CompensationWorker::with_default_zone(Arc::new(cache.clone()), Arc::new(db.clone())).unwrap());
        for offset in [0, 0, 1] {
            // the same record twice (replay), and a re-emitted copy at another offset
            h.process(Record::new("advertiser_50".into(), ev.clone(), ev.timestamp, SourceCoord::new("compensation-events", 0, offset)))
                .unwrap();
        }
        assert_eq!(h.operator.stats(), CompensationStats { refunded: 1, duplicates: 2, amount: 2400, ..CompensationStats::default() });
        assert_eq!(db.balance("advertiser_50").unwrap(), Some(10_000 - 3600 + 2400));
        assert_eq!(cache.spend("campaign_100", day).unwrap(), 1200);
        let ledger = db.ledger().unwrap();
        assert_eq!(ledger.last().unwrap().entry.idempotency_key, format!("refund:device_12345/ad_001/{}", ts("2024-01-15T10:30:15Z")));
        assert_eq!(ledger.last().unwrap().entry.kind, LedgerKind::Refund);
    }

    #[test]
    fn the_refund_lowers_the_day_of_the_compensation_timestamp() {
        // Duplicates at 23:58 and 23:59 KST on Jan 15; the window closes at 00:03 KST on Jan 16.
        let cache = MemoryCache::new();
        let db = MemoryDatabase::new();
        let ev = comp(&["2024-01-15T14:58:00Z", "2024-01-15T14:59:00Z"], 700);
        let mut w = CompensationWorker::with_default_zone(Arc::new(cache.clone()), Arc::new(db.clone())).unwrap();
        w.refund(&ev).unwrap();
        let jan16 = Day::from_ymd(2024, 1, 16).unwrap();
        assert_eq!(cache.spend("campaign_100", jan16).unwrap(), -700);
        assert_eq!(cache.spend("campaign_100", Day(jan16.0 - 1)).unwrap(), 0);
        assert_eq!(db.balance("advertiser_50").unwrap(), Some(700), "unknown advertiser opens at 0");
    }

    #[test]
    fn a_refund_for_an_unknown_advertiser_or_a_conflicting_refund_is_refused_with_a_reason() {
        let cache = MemoryCache::new();
        let db = MemoryDatabase::new();
        let mut h = Harness::new(CompensationWorker::with_default_zone(Arc::new(cache.clone()), Arc::new(db.clone())).unwrap());
        let ev = comp(&["2024-01-15T10:30:15Z", "2024-01-15T10:30:18Z"], 1200);
        let rec = |ev: &CompensationEvent, o| Record::new("advertiser_50".into(), ev.clone(), ev.timestamp, SourceCoord::new("compensation-events", 0, o));
        h.process(rec(&ev, 0)).unwrap();
        assert!(db.ledger().unwrap().is_empty(), "its clicks were never charged");
        assert_eq!(h.dead_letters.len(), 1);
        assert!(h.dead_letters[0].reason.starts_with("UNKNOWN_ADVERTISER"), "{}", h.dead_letters[0].reason);
        db.upsert_advertiser(&Advertiser { advertiser_id: "advertiser_50".into(), opening_balance: 0, time_zone: "Asia/Seoul".into() }).unwrap();
        h.process(rec(&ev, 1)).unwrap();
        // The same window refunded again with another amount: the key is taken, nothing more is credited.
        let other = comp(&["2024-01-15T10:30:15Z", "2024-01-15T10:30:18Z"], 9_999);
        h.process(rec(&other, 2)).unwrap();
        assert_eq!(db.balance("advertiser_50").unwrap(), Some(1200));
        assert_eq!(h.dead_letters.len(), 2);
        assert!(h.dead_letters[1].reason.starts_with("REFUND_CONFLICT"), "{}", h.dead_letters[1].reason);
        let s = h.operator.stats();
        assert_eq!((s.refunded, s.conflicts, s.refused), (1, 1, 1));
        let day = Day::from_ymd(2024, 1, 15).unwrap();
        assert_eq!(cache.spend("campaign_100", day).unwrap(), -1200, "the conflicting refund does not lower the spend");
    }
}
