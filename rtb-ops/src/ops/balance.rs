//! The balance worker: every CLICK in `ad-events` deducts its `actual_price` from the advertiser's
//! balance at once — no duplicate check here (refunds come from duplicate detection) — with a ledger row.
//!
//! By default each click is charged as it is processed. [`BalanceWorker::with_batch_size`] lets the
//! worker gather up to `n` charges and apply them in one database transaction (one round trip), at the
//! latest when the runtime commits (`flush_state`), i.e. within one commit interval.
//!
//! Exactly once: the ledger's idempotency key is the click's `event_id`, or `{topic}/{partition}/{offset}`
//! when it carries none (the spec's rule), and the database inserts the row and moves the balance in one
//! transaction unless the key exists. Replaying records after a crash therefore charges nothing twice.

use std::sync::Arc;

use rtb_stream::runtime::Output;
use rtb_stream::state::WriteBatch;
use rtb_stream::{Context, Operator, Record, SourceCoord};

use super::click_id;
use crate::error::Result;
use crate::schema::AdEvent;
use crate::sink::{Database, LedgerEntry, LedgerKind, LedgerOutcome};

/// Counters of the balance worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BalanceStats {
    /// Clicks charged.
    pub charged: u64,
    /// Clicks whose charge was already in the ledger (replays).
    pub duplicates: u64,
    /// KRW charged.
    pub amount: i64,
}

/// The balance worker (input: `ad-events`; non-click events are ignored).
#[derive(Debug)]
pub struct BalanceWorker {
    db: Arc<dyn Database>,
    batch_size: usize,
    pending: Vec<LedgerEntry>,
    stats: BalanceStats,
}

/// The ledger entry charging one click.
pub fn charge_entry(ev: &AdEvent, source: &SourceCoord) -> LedgerEntry {
    let id = click_id(ev, source);
    LedgerEntry {
        idempotency_key: id.clone(),
        advertiser_id: ev.advertiser_id.clone(),
        campaign_id: Some(ev.campaign_id.clone()),
        kind: LedgerKind::Charge,
        amount: -ev.price(),
        event_time: ev.timestamp,
        reference: id,
    }
}

impl BalanceWorker {
    /// A worker charging each click at once.
    pub fn new(db: Arc<dyn Database>) -> Self {
        Self::with_batch_size(db, 1)
    }

    /// A worker applying charges in batches of up to `batch_size` (and at every commit).
    pub fn with_batch_size(db: Arc<dyn Database>, batch_size: usize) -> Self {
        Self { db, batch_size: batch_size.max(1), pending: Vec::new(), stats: BalanceStats::default() }
    }

    /// Applies the gathered charges.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let outcomes = self.db.apply_ledger_batch(&self.pending)?;
        for (entry, outcome) in self.pending.drain(..).zip(outcomes) {
            match outcome {
                LedgerOutcome::Applied { .. } => {
                    self.stats.charged += 1;
                    self.stats.amount -= entry.amount;
                }
                LedgerOutcome::Duplicate => {
                    self.stats.duplicates += 1;
                    tracing::debug!(key = %entry.idempotency_key, "charge already applied (replay)");
                }
            }
        }
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> BalanceStats {
        self.stats
    }

    /// Charges one click (what `process` does): gathered, and applied once the batch is full.
    pub fn charge(&mut self, ev: &AdEvent, source: &SourceCoord) -> Result<()> {
        self.pending.push(charge_entry(ev, source));
        if self.pending.len() >= self.batch_size {
            self.flush()?;
        }
        Ok(())
    }
}

impl Operator for BalanceWorker {
    type Key = String;
    type In = AdEvent;
    type Out = Output;

    fn process(&mut self, record: Record<String, AdEvent>, _ctx: &mut Context<'_, Output>) -> rtb_stream::Result<()> {
        if record.value.is_click() {
            self.charge(&record.value, &record.source)?;
        }
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

    fn ev(id: Option<&str>, t: AdEventType, price: i64) -> AdEvent {
        AdEvent {
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
        }
    }

    fn records() -> Vec<Record<String, AdEvent>> {
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
                assert_eq!(h2.operator.stats(), BalanceStats { charged: 0, duplicates: 3, amount: 0 });
            }
            assert_eq!(h.operator.stats(), BalanceStats { charged: 3, duplicates: 0, amount: 2800 });
            assert_eq!(db.balance("adv").unwrap(), Some(100_000 - 1200 - 800 - 800));
            let keys: Vec<String> = db.ledger().unwrap().into_iter().map(|r| r.entry.idempotency_key).collect();
            assert_eq!(keys, vec!["e1", "ad-events/2/2", "ad-events/2/3"]);
        }
    }

    #[test]
    fn batched_charges_wait_for_a_full_batch_or_the_commit() {
        let db = Arc::new(EmbeddedDatabase::temporary().unwrap());
        let mut h = Harness::new(BalanceWorker::with_batch_size(db.clone(), 2));
        let recs = records();
        h.process(recs[0].clone()).unwrap();
        assert_eq!(db.balance("adv").unwrap(), None, "gathered, not applied yet");
        h.process(recs[1].clone()).unwrap(); // an impression: nothing to gather
        h.process(recs[2].clone()).unwrap(); // second charge: the batch is full
        assert_eq!(db.balance("adv").unwrap(), Some(-2000));
        h.process(recs[3].clone()).unwrap();
        h.operator.flush_state(&mut WriteBatch::new()).unwrap();
        assert_eq!(db.balance("adv").unwrap(), Some(-2800));
        assert_eq!(h.operator.stats(), BalanceStats { charged: 3, duplicates: 0, amount: 2800 });
    }
}
