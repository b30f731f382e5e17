#![allow(clippy::unwrap_used)]

use super::*;
use crate::schema::{AdEvent, AdEventType, ConversionEvent, Placement};
use crate::sink::MemoryDatabase;
use rtb_stream::time::{HOUR, MINUTE};
use rtb_stream::Harness;

const T: i64 = 1_705_329_000_000; // 2024-01-15T14:30:00Z

fn click(device: &str, product: Option<&str>, campaign: &str, at: i64) -> MatchInput {
    MatchInput::Ad(std::sync::Arc::new(AdEvent {
        event_id: None,
        event_type: AdEventType::Click,
        timestamp: at,
        device_id: device.into(),
        session_id: None,
        ad_id: format!("ad_{campaign}"),
        campaign_id: campaign.into(),
        advertiser_id: "adv".into(),
        product_id: product.map(str::to_string),
        placement: Placement::Search,
        category: "x".into(),
        bid_price: Some(1500),
        actual_price: Some(1200),
        search_term: None,
        revenue_amount: None,
        order_id: None,
    }))
}

fn conversion(device: &str, product: &str, order: &str, at: i64) -> MatchInput {
    MatchInput::Conversion(ConversionEvent {
        event_id: None,
        timestamp: at,
        device_id: device.into(),
        session_id: None,
        order_id: order.into(),
        product_id: product.into(),
        revenue_amount: 50_000,
        conversion_type: ConversionType::Purchase,
        attribution_window: Some(24),
        referrer_url: None,
    })
}

struct F {
    db: MemoryDatabase,
    h: Harness<ConversionMatcher>,
    offset: u64,
}

fn matcher() -> F {
    let db = MemoryDatabase::new();
    let op = ConversionMatcher::new(&StateScope::in_memory(), Arc::new(db.clone()), ConversionConfig::default()).unwrap();
    F { db, h: Harness::new(op), offset: 0 }
}

impl F {
    fn send(&mut self, input: MatchInput) {
        self.offset += 1;
        let (topic, ts) = match &input {
            MatchInput::Ad(a) => ("ad-events", a.timestamp),
            MatchInput::Conversion(c) => ("conversion-events", c.timestamp),
        };
        self.h.process(Record::new("d".into(), input, ts, SourceCoord::new(topic, 0, self.offset))).unwrap();
    }
    fn rows(&self) -> Vec<(String, Option<String>, Option<i64>)> {
        self.db.conversions().unwrap().into_iter().map(|c| (c.order_id, c.campaign_id, c.click_timestamp)).collect()
    }
}

fn row(order: &str, campaign: Option<&str>, click: Option<i64>) -> (String, Option<String>, Option<i64>) {
    (order.to_string(), campaign.map(str::to_string), click)
}

#[test]
fn the_last_click_within_24_hours_wins() {
    let mut f = matcher();
    f.send(click("d1", Some("p1"), "early", T - 3 * HOUR));
    f.send(click("d1", Some("p1"), "late", T - HOUR));
    f.send(click("d1", Some("p2"), "other-product", T - 10 * MINUTE));
    f.send(click("d2", Some("p1"), "other-device", T - 10 * MINUTE));
    f.send(conversion("d1", "p1", "order_789", T));
    f.h.advance_watermark(T - 1).unwrap();
    assert!(f.rows().is_empty(), "not closed before the watermark reaches the conversion");
    f.h.advance_watermark(T).unwrap();
    assert_eq!(f.rows(), vec![row("order_789", Some("late"), Some(T - HOUR))]);
    let c = &f.db.conversions().unwrap()[0];
    assert_eq!((c.device_id.as_str(), c.product_id.as_str(), c.ad_id.as_deref(), c.revenue_amount), ("d1", "p1", Some("ad_late"), 50_000));
    assert_eq!(f.h.operator.stats().attributed, 1);
}

#[test]
fn window_bounds_are_inclusive_and_clicks_after_the_conversion_do_not_count() {
    let mut f = matcher();
    f.send(click("d", Some("a"), "exactly-24h", T - 24 * HOUR));
    f.send(conversion("d", "a", "o-a", T));
    f.send(click("d", Some("b"), "too-old", T - 24 * HOUR - 1));
    f.send(click("d", Some("b"), "after", T + 1));
    f.send(conversion("d", "b", "o-b", T));
    f.send(click("d", Some("c"), "same-ms", T));
    f.send(conversion("d", "c", "o-c", T));
    f.h.advance_watermark(T + HOUR).unwrap();
    assert_eq!(f.rows(), vec![
        row("o-a", Some("exactly-24h"), Some(T - 24 * HOUR)),
        row("o-b", None, None),
        row("o-c", Some("same-ms"), Some(T)),
    ]);
    assert_eq!((f.h.operator.stats().attributed, f.h.operator.stats().unattributed), (2, 1));
}

#[test]
fn equal_click_times_go_to_the_later_arrival() {
    let mut f = matcher();
    f.send(click("d", Some("p"), "first", T - MINUTE));
    f.send(click("d", Some("p"), "second", T - MINUTE));
    f.send(conversion("d", "p", "o", T));
    f.h.advance_watermark(T).unwrap();
    assert_eq!(f.rows(), vec![row("o", Some("second"), Some(T - MINUTE))]);
}

#[test]
fn one_result_per_order_the_earliest_conversion_counts() {
    let mut f = matcher();
    f.send(click("d", Some("p"), "c1", T - HOUR));
    f.send(conversion("d", "p", "o", T + MINUTE)); // arrives first, but is later
    f.send(conversion("d", "p", "o", T)); // the earliest
    f.send(conversion("d", "p", "o", T + 2 * MINUTE));
    f.h.advance_watermark(T + HOUR).unwrap();
    let rows = f.db.conversions().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].conversion_timestamp, T);
    assert_eq!(f.h.operator.stats().duplicate_orders, 2);
    let dups = f.db.duplicate_orders().unwrap();
    assert_eq!(dups.iter().map(|r| r.conversion_timestamp).collect::<Vec<_>>(), vec![T + MINUTE, T + 2 * MINUTE]);
    // Replaying the same input after a restart writes nothing new: neither a result nor a duplicate.
    let mut g = F {
        db: f.db.clone(),
        h: Harness::new(ConversionMatcher::new(&StateScope::in_memory(), Arc::new(f.db.clone()), ConversionConfig::default()).unwrap()),
        offset: 0,
    };
    g.send(click("d", Some("p"), "c1", T - HOUR));
    g.send(conversion("d", "p", "o", T + MINUTE));
    g.send(conversion("d", "p", "o", T));
    g.send(conversion("d", "p", "o", T + 2 * MINUTE));
    g.h.advance_watermark(T + HOUR).unwrap();
    assert_eq!(g.db.conversions().unwrap().len(), 1);
    assert_eq!(g.db.duplicate_orders().unwrap(), dups, "a redelivered duplicate is recorded once");
    assert_eq!(g.h.operator.stats().duplicate_orders, 0);
}

#[test]
fn a_click_arriving_after_its_conversion_still_matches_before_the_close() {
    let mut f = matcher();
    f.send(conversion("d", "p", "o", T));
    f.send(click("d", Some("p"), "late-arrival", T - 5 * MINUTE));
    f.h.advance_watermark(T).unwrap();
    assert_eq!(f.rows(), vec![row("o", Some("late-arrival"), Some(T - 5 * MINUTE))]);
}

#[test]
fn late_conversions_go_to_the_late_output_and_clicks_without_product_are_skipped() {
    let mut f = matcher();
    f.h.advance_watermark(T).unwrap();
    f.send(conversion("d", "p", "o-late", T - 1));
    assert_eq!(f.h.operator.stats().late_conversions, 1);
    assert!(f.h.dead_letters.is_empty(), "late is not invalid: {:?}", f.h.dead_letters);
    assert_eq!(f.h.late.len(), 1);
    assert!(f.h.late[0].reason.starts_with("LATE_CONVERSION"));
    assert_eq!(f.h.late[0].stage, "conversion-matcher");
    f.send(click("d", None, "no-product", T + 1));
    assert_eq!(f.h.operator.stats().clicks_without_product, 1);
    // A click so old that no open or future conversion can use it.
    f.send(click("d", Some("p"), "ancient", T - 25 * HOUR));
    assert_eq!(f.h.operator.stats().late_clicks, 1);
    assert_eq!(f.h.late.len(), 2, "the late click is counted and reported too");
    assert!(f.h.late[1].reason.starts_with("LATE_CLICK"), "{}", f.h.late[1].reason);
    assert!(f.h.dead_letters.is_empty());
    assert!(f.rows().is_empty());
}
