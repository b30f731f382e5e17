//! The balance worker: every CLICK in `ad-events` deducts its `actual_price` from the advertiser's
//! balance at once — no duplicate check here (refunds come from duplicate detection) — with a ledger row.
//!
//! By default each click is charged as it is processed. [`BalanceWorker::with_batch_size`] lets the
//! worker gather up to `n` charges and apply them in one database transaction (one round trip), at the
//! latest when the runtime commits (`flush_state`), i.e. within one commit interval.
//!
//! Exactly once: the ledger's idempotency key is [`charge_key`] — `charge:id:{event_id}`, or
//! `charge:src:{topic}/{partition}/{offset}` when the click carries no id (the spec's rule, namespaced so
//! no client id can equal a refund or coordinate key) — stored with the click's content fingerprint
//! ([`AdEvent::fingerprint`]); the database inserts the row and moves the balance in one transaction
//! unless the key exists. Replaying records after a crash, or a producer redelivering the same click,
//! therefore charges nothing twice.
//!
//! Refused, each as a dead letter with its reason (never silently):
//! - `EVENT_ID_REUSED`: a click whose `event_id` was already charged for a *different* click (the
//!   fingerprints differ). It is not charged — the id cannot be charged twice — and the operator sees it.
//! - `UNKNOWN_ADVERTISER` and `CAMPAIGN_ADVERTISER_MISMATCH`: see [`Billing`] (a click for a campaign
//!   the database does not know yet is charged, and why).
//!
//! In batch mode the ledger answers at `flush_state`, where no output is at hand; the `EVENT_ID_REUSED`
//! dead letters found there are emitted with the next record, watermark or processing-time tick.

use std::sync::Arc;

use rtb_stream::runtime::Output;
use rtb_stream::state::WriteBatch;
use rtb_stream::{Context, DeadLetter, Operator, Record, SourceCoord, Timestamp};

use super::{charge_key, dead_letter, Billing};
use crate::error::Result;
use crate::schema::AdEvent;
use crate::sink::{Database, LedgerEntry, LedgerKind, LedgerOutcome};

const STAGE: &str = "balance";

/// Counters of the balance worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceStats {
    /// Clicks charged.
    pub charged: u64,
    /// Clicks whose charge was already in the ledger (replays and redeliveries of the same click).
    pub duplicates: u64,
    /// KRW charged.
    pub amount: i64,
    /// Clicks refused because their `event_id` was charged for a different click (dead-lettered).
    pub reused_ids: u64,
    /// Clicks refused for an unknown advertiser or a campaign of another advertiser (dead-lettered).
    pub refused: u64,
}

/// The balance worker (input: `ad-events`; non-click events are ignored).
#[derive(Debug)]
pub struct BalanceWorker {
    db: Arc<dyn Database>,
    billing: Billing,
    batch_size: usize,
    pending: Vec<(LedgerEntry, SourceCoord, Arc<AdEvent>)>,
    unreported: Vec<DeadLetter>,
    stats: BalanceStats,
}

/// The ledger entry charging one click.
pub fn charge_entry(ev: &AdEvent, source: &SourceCoord) -> LedgerEntry {
    LedgerEntry {
        idempotency_key: charge_key(ev, source),
        advertiser_id: ev.advertiser_id.clone(),
        campaign_id: Some(ev.campaign_id.clone()),
        kind: LedgerKind::Charge,
        amount: -ev.price(),
        event_time: ev.timestamp,
        reference: match &ev.event_id {
            Some(id) => id.clone(),
            None => source.to_string(),
        },
        fingerprint: ev.fingerprint(),
    }
}

impl BalanceWorker {
    /// A worker charging each click at once.
    pub fn new(db: Arc<dyn Database>) -> Self {
        Self::with_batch_size(db, 1)
    }

    /// A worker applying charges in batches of up to `batch_size` (and at every commit).
    pub fn with_batch_size(db: Arc<dyn Database>, batch_size: usize) -> Self {
        Self {
            db,
            billing: Billing::default(),
            batch_size: batch_size.max(1),
            pending: Vec::new(),
            unreported: Vec::new(),
            stats: BalanceStats::default(),
        }
    }

    /// Applies the gathered charges; the `EVENT_ID_REUSED` dead letters wait for [`Self::report`].
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let entries: Vec<LedgerEntry> = self.pending.iter().map(|p| p.0.clone()).collect();
        let outcomes = self.db.apply_ledger_batch(&entries)?;
        for ((entry, source, ev), outcome) in self.pending.drain(..).zip(outcomes) {
            match outcome {
                LedgerOutcome::Applied { .. } => {
                    self.stats.charged += 1;
                    self.stats.amount -= entry.amount;
                }
                LedgerOutcome::Duplicate => {
                    self.stats.duplicates += 1;
                    tracing::debug!(key = %entry.idempotency_key, "charge already applied (replay or redelivery)");
                }
                LedgerOutcome::Conflict => {
                    self.stats.reused_ids += 1;
                    let reason = format!(
                        "EVENT_ID_REUSED: event_id `{}` was already charged for a different click (ledger key `{}`); this click is not charged",
                        ev.event_id.as_deref().unwrap_or_default(),
                        entry.idempotency_key
                    );
                    tracing::warn!(source = %source, %reason, "reused event id");
                    self.unreported.push(dead_letter(&source, STAGE, reason, &ev));
                }
            }
        }
        Ok(())
    }

    /// Emits the dead letters found by earlier flushes.
    fn report(&mut self, ctx: &mut Context<'_, Output>) {
        for dl in self.unreported.drain(..) {
            ctx.dead_letter(dl);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BalanceStats {
        self.stats
    }

    /// Charges one click (what `process` does after the [`Billing`] check): gathered, and applied once
    /// the batch is full.
    pub fn charge(&mut self, ev: Arc<AdEvent>, source: SourceCoord) -> Result<()> {
        self.pending.push((charge_entry(&ev, &source), source, ev));
        if self.pending.len() >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }
}

impl Operator for BalanceWorker {
    type Key = String;
    type In = Arc<AdEvent>;
    type Out = Output;

    fn process(&mut self, record: Record<String, Arc<AdEvent>>, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        let Record { value, source, .. } = record;
        if value.is_click() {
            match self.billing.check(&*self.db, &value.advertiser_id, &value.campaign_id)? {
                Ok(()) => self.charge(value, source)?,
                Err(why) => {
                    self.stats.refused += 1;
                    let reason = why.reason(&value.advertiser_id, &value.campaign_id, "the click is not charged");
                    tracing::warn!(source = %source, %reason, "click not charged");
                    ctx.dead_letter(dead_letter(&source, STAGE, reason, &value));
                }
            }
        }
        self.report(ctx);
        Ok(())
    }

    fn on_watermark(&mut self, _watermark: Timestamp, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.report(ctx);
        Ok(())
    }

    fn on_processing_time(&mut self, _now: i64, ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        self.report(ctx);
        Ok(())
    }

    fn flush_state(&mut self, _batch: &mut WriteBatch) -> rtb_stream::Result<()> {
        Ok(self.flush()?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::schema::{AdEventType, Placement};
    use crate::sink::{Advertiser, EmbeddedDatabase, MemoryDatabase};
    use rtb_stream::Harness;

    fn ev(id: Option<&str>, t: AdEventType, price: i64) -> Arc<AdEvent> {
        Arc::new(AdEvent {
            event_id: id.map(str::to_string),
            event_type: t,
            timestamp: 1_000,
            device_id: "d".into(),
            session_id: None,
            ad_id: "ad".into(),
            campaign_id: "c".into(),
            advertiser_id: "adv".into(),
            product_id: None,
            placement: Placement::Search,
            category: "x".into(),
            bid_price: Some(5000),
            actual_price: Some(price),
            search_term: None,
            revenue_amount: None,
            order_id: None,
        })
    }

    fn records() -> Vec<Record<String, Arc<AdEvent>>> {
        let src = |o| SourceCoord::new("ad-events", 2, o);
        vec![
            Record::new("d".into(), ev(Some("e1"), AdEventType::Click, 1200), 1_000, src(0)),
            Record::new("d".into(), ev(None, AdEventType::Impression, 0), 1_000, src(1)),
            Record::new("d".into(), ev(None, AdEventType::Click, 800), 1_000, src(2)),
            Record::new("d".into(), ev(None, AdEventType::Click, 800), 1_000, src(3)), // a second, real click
        ]
    }

    #[test]
    fn replaying_the_same_records_charges_each_click_exactly_once() {
        for db in [Arc::new(MemoryDatabase::new()) as Arc<dyn Database>, Arc::new(EmbeddedDatabase::temporary().unwrap())] {
            db.upsert_advertiser(&Advertiser { advertiser_id: "adv".into(), opening_balance: 100_000, time_zone: "Asia/Seoul".into() })
                .unwrap();
            let mut h = Harness::new(BalanceWorker::new(db.clone()));
            for r in records() {
                h.process(r).unwrap();
            }
            // Crash before the offsets were committed: a fresh worker replays everything, twice.
            for _ in 0..2 {
                let mut h2 = Harness::new(BalanceWorker::new(db.clone()));
                for r in records() {
                    h2.process(r).unwrap();
                }
                assert_eq!(h2.operator.stats(), BalanceStats { charged: 0, duplicates: 3, ..BalanceStats::default() });
                assert!(h2.dead_letters.is_empty(), "a replay is no reuse: {:?}", h2.dead_letters);
            }
            assert_eq!(h.operator.stats(), BalanceStats { charged: 3, amount: 2800, ..BalanceStats::default() });
            assert_eq!(db.balance("adv").unwrap(), Some(100_000 - 1200 - 800 - 800));
            let keys: Vec<String> = db.ledger().unwrap().into_iter().map(|r| r.entry.idempotency_key).collect();
            assert_eq!(keys, vec!["charge:id:e1", "charge:src:ad-events/2/2", "charge:src:ad-events/2/3"]);
        }
    }

    #[test]
    fn batched_charges_wait_for_a_full_batch_or_the_commit() {
        let db = Arc::new(EmbeddedDatabase::temporary().unwrap());
        db.upsert_advertiser(&Advertiser { advertiser_id: "adv".into(), opening_balance: 0, time_zone: "Asia/Seoul".into() }).unwrap();
        let mut h = Harness::new(BalanceWorker::with_batch_size(db.clone(), 2));
        let recs = records();
        h.process(recs[0].clone()).unwrap();
        assert_eq!(db.balance("adv").unwrap(), Some(0), "gathered, not applied yet");
        h.process(recs[1].clone()).unwrap(); // an impression: nothing to gather
        h.process(recs[2].clone()).unwrap(); // second charge: the batch is full
        assert_eq!(db.balance("adv").unwrap(), Some(-2000));
        h.process(recs[3].clone()).unwrap();
        h.operator.flush_state(&mut WriteBatch::new()).unwrap();
        assert_eq!(db.balance("adv").unwrap(), Some(-2800));
        assert_eq!(h.operator.stats(), BalanceStats { charged: 3, amount: 2800, ..BalanceStats::default() });
    }

    fn registered() -> Arc<dyn Database> {
        let db = Arc::new(MemoryDatabase::new());
        db.upsert_advertiser(&Advertiser { advertiser_id: "adv".into(), opening_balance: 0, time_zone: "Asia/Seoul".into() }).unwrap();
        db
    }

    fn rec(ev: Arc<AdEvent>, offset: u64) -> Record<String, Arc<AdEvent>> {
        Record::new("d".into(), ev, 1_000, SourceCoord::new("ad-events", 2, offset))
    }

    #[test]
    fn client_ids_cannot_collide_with_keys_the_system_derives() {
        let db = registered();
        let cache = Arc::new(crate::sink::MemoryCache::new());
        let mut h = Harness::new(BalanceWorker::new(db.clone()));
        // A compensation whose refund key a client tries to take first.
        let comp: crate::schema::CompensationEvent = serde_json::from_str(r#"{"timestamp":"2024-01-15T10:35:00Z","advertiser_id":"adv","campaign_id":"c","ad_id":"ad","device_id":"d","duplicate_click_count":2,"refund_amount":500,"original_click_timestamps":["2024-01-15T10:30:15Z","2024-01-15T10:30:18Z"],"detection_window":"5_MINUTES","reason":"DUPLICATE_CLICK_DETECTED","compensation_type":"BALANCE_REFUND"}"#).unwrap();
        // Clicks whose client ids spell a refund key and the coordinate keys of id-less clicks, old and new.
        for (i, id) in [comp.refund_key(), "ad-events/2/5".into(), "charge:src:ad-events/2/6".into()].into_iter().enumerate() {
            h.process(rec(ev(Some(&id), AdEventType::Click, 100), i as u64)).unwrap();
        }
        h.process(rec(ev(None, AdEventType::Click, 10), 5)).unwrap();
        h.process(rec(ev(None, AdEventType::Click, 20), 6)).unwrap();
        assert_eq!(h.operator.stats().charged, 5, "the id-less clicks at offsets 5 and 6 are charged");
        let mut w = super::super::compensation::CompensationWorker::with_default_zone(cache, db.clone()).unwrap();
        assert!(matches!(w.refund(&comp).unwrap(), LedgerOutcome::Applied { .. }), "the refund is not blocked");
        assert_eq!(db.balance("adv").unwrap(), Some(-330 + 500));
        assert!(h.dead_letters.is_empty());
    }

    #[test]
    fn a_reused_event_id_is_refused_with_a_reason_and_a_redelivery_is_charged_once() {
        let db = registered();
        let mut h = Harness::new(BalanceWorker::new(db.clone()));
        let first = ev(Some("e1"), AdEventType::Click, 1200);
        h.process(rec(first.clone(), 0)).unwrap();
        h.process(rec(first.clone(), 1)).unwrap(); // the producer retried: same content, another offset
        assert_eq!(h.operator.stats().duplicates, 1);
        assert!(h.dead_letters.is_empty());
        let mut other = Arc::unwrap_or_clone(first.clone());
        other.device_id = "another-device".into();
        other.actual_price = Some(700);
        h.process(rec(Arc::new(other), 2)).unwrap();
        assert_eq!(db.balance("adv").unwrap(), Some(-1200), "charged once, the other click not at all");
        assert_eq!(h.operator.stats().reused_ids, 1);
        assert_eq!(h.dead_letters.len(), 1);
        let dl = &h.dead_letters[0];
        assert!(dl.reason.starts_with("EVENT_ID_REUSED"), "{}", dl.reason);
        assert_eq!((dl.stage.as_str(), dl.source.offset), ("balance", 2));
        assert!(dl.payload.contains("another-device"));
    }

    #[test]
    fn in_batch_mode_a_reused_id_found_at_the_commit_is_reported_with_the_next_call() {
        let db = registered();
        let mut h = Harness::new(BalanceWorker::with_batch_size(db.clone(), 10));
        h.process(rec(ev(Some("e1"), AdEventType::Click, 1200), 0)).unwrap();
        h.process(rec(ev(Some("e1"), AdEventType::Click, 1300), 1)).unwrap();
        h.operator.flush_state(&mut WriteBatch::new()).unwrap();
        assert!(h.dead_letters.is_empty(), "no output at hand during the commit");
        h.advance_watermark(5).unwrap();
        assert_eq!(h.dead_letters.len(), 1);
        assert!(h.dead_letters[0].reason.starts_with("EVENT_ID_REUSED"));
        assert_eq!(db.balance("adv").unwrap(), Some(-1200));
    }

    #[test]
    fn clicks_of_unknown_advertisers_and_of_campaigns_of_another_advertiser_are_not_charged() {
        use crate::schema::{ApprovalStatus, CampaignStatus};
        use crate::sink::CampaignRow;
        let db = Arc::new(MemoryDatabase::new());
        let mut h = Harness::new(BalanceWorker::new(db.clone() as Arc<dyn Database>));
        h.process(rec(ev(Some("e1"), AdEventType::Click, 1200), 0)).unwrap();
        assert!(db.ledger().unwrap().is_empty());
        assert_eq!(db.balance("adv").unwrap(), None, "no account is created for it");
        assert!(h.dead_letters[0].reason.starts_with("UNKNOWN_ADVERTISER"), "{}", h.dead_letters[0].reason);
        db.upsert_advertiser(&Advertiser { advertiser_id: "adv".into(), opening_balance: 0, time_zone: "Asia/Seoul".into() }).unwrap();
        // Campaign `c` unknown to the database: charged (it may simply not be stored yet).
        h.process(rec(ev(Some("e2"), AdEventType::Click, 100), 1)).unwrap();
        assert_eq!(db.balance("adv").unwrap(), Some(-100));
        db.upsert_campaign(&CampaignRow {
            campaign_id: "c".into(),
            advertiser_id: "someone-else".into(),
            product_id: None,
            placement: Placement::Search,
            category: "x".into(),
            bid_price: 5000,
            daily_budget: 100_000,
            status: CampaignStatus::Active,
            approval_status: ApprovalStatus::Approved,
            effective_from: None,
            rtb_impact: None,
            budget_paused_day: None,
            updated_at: 0,
        })
        .unwrap();
        h.process(rec(ev(Some("e3"), AdEventType::Click, 100), 2)).unwrap();
        assert_eq!(db.balance("adv").unwrap(), Some(-100));
        assert_eq!(h.dead_letters.len(), 2);
        assert!(h.dead_letters[1].reason.starts_with("CAMPAIGN_ADVERTISER_MISMATCH"), "{}", h.dead_letters[1].reason);
        assert!(h.dead_letters[1].reason.contains("someone-else"));
        assert_eq!(h.operator.stats().refused, 2);
    }
}
