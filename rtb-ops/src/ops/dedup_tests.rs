#![allow(clippy::unwrap_used)]

use super::*;
use rtb_stream::time::{HOUR, MINUTE};
use crate::schema::{rfc3339, AdEventType, Placement};
use rtb_stream::{Harness, SourceCoord};

const SEC: i64 = 1_000;

fn ts(s: &str) -> i64 {
    rfc3339::parse(s).unwrap()
}

fn click(device: &str, ad: &str, t: i64, price: i64) -> AdEvent {
    AdEvent {
        event_id: None,
        event_type: AdEventType::Click,
        timestamp: t,
        device_id: device.into(),
        session_id: None,
        ad_id: ad.into(),
        campaign_id: "campaign_100".into(),
        advertiser_id: "advertiser_50".into(),
        product_id: Some("product_200".into()),
        placement: Placement::Home,
        category: "전자제품/컴퓨터".into(),
        bid_price: Some(1500),
        actual_price: Some(price),
        search_term: None,
        revenue_amount: None,
        order_id: None,
    }
}

struct F {
    h: Harness<DuplicateClickDetector>,
    offset: u64,
}

fn detector() -> F {
    F { h: Harness::new(DuplicateClickDetector::new(&StateScope::in_memory(), DedupConfig::default()).unwrap()), offset: 0 }
}

impl F {
    fn send(&mut self, ev: AdEvent) {
        self.offset += 1;
        let t = ev.timestamp;
        let key = ev.device_id.clone();
        self.h.process(Record::new(key, std::sync::Arc::new(ev), t, SourceCoord::new("ad-events", 0, self.offset))).unwrap();
    }
    fn comps(&mut self) -> Vec<CompensationEvent> {
        self.h
            .drain()
            .into_iter()
            .map(|o| {
                assert_eq!(o.topic, "compensation-events");
                let ev: CompensationEvent = serde_json::from_slice(&o.record.payload).unwrap();
                assert_eq!(o.record.key.as_deref(), Some(ev.advertiser_id.as_bytes()), "keyed by advertiser");
                ev
            })
            .collect()
    }
}

#[test]
fn spec_example_three_clicks_in_seconds_give_one_compensation_of_2400() {
    let mut f = detector();
    for s in ["2024-01-15T10:30:15Z", "2024-01-15T10:30:18Z", "2024-01-15T10:30:22Z"] {
        f.send(click("device_12345", "ad_001", ts(s), 1200));
    }
    let close = ts("2024-01-15T10:35:15Z") - 1; // t0 + 5 min − 1
    f.h.advance_watermark(close - 1).unwrap();
    assert!(f.comps().is_empty(), "window not complete one ms earlier");
    f.h.advance_watermark(close).unwrap();
    let c = f.comps();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].duplicate_click_count, c[0].refund_amount), (3, 2400));
    assert_eq!(
        c[0].original_click_timestamps,
        vec![ts("2024-01-15T10:30:15Z"), ts("2024-01-15T10:30:18Z"), ts("2024-01-15T10:30:22Z")]
    );
    assert_eq!((c[0].device_id.as_str(), c[0].ad_id.as_str(), c[0].campaign_id.as_str()), ("device_12345", "ad_001", "campaign_100"));
    assert_eq!(c[0].timestamp, ts("2024-01-15T10:35:15Z"));
    assert_eq!(c[0].refund_key(), format!("refund:device_12345/ad_001/{}", ts("2024-01-15T10:30:15Z")));
    let s = f.h.operator.stats();
    assert_eq!((s.clicks, s.windows, s.compensations, s.duplicates, s.late_clicks), (3, 1, 1, 2, 0));
}

#[test]
fn refund_sums_the_duplicates_prices_not_the_first() {
    let mut f = detector();
    f.send(click("d", "a", 0, 900));
    f.send(click("d", "a", 10 * SEC, 1000));
    f.send(click("d", "a", 20 * SEC, 1100));
    f.h.advance_watermark(300 * SEC).unwrap();
    let c = f.comps();
    assert_eq!(c[0].refund_amount, 2100);
    assert_eq!(c[0].event_id, None);
}

#[test]
fn single_clicks_and_other_keys_emit_nothing() {
    let mut f = detector();
    f.send(click("d", "a", 0, 1000));
    f.send(click("d", "b", SEC, 1000)); // other ad
    f.send(click("e", "a", 2 * SEC, 1000)); // other device
    let mut imp = click("d", "a", 3 * SEC, 0);
    imp.event_type = AdEventType::Impression;
    f.send(imp);
    f.h.advance_watermark(3_600 * SEC).unwrap();
    assert!(f.comps().is_empty());
    assert_eq!(f.h.operator.stats().windows, 3);
}

#[test]
fn click_exactly_at_window_end_opens_the_next_window() {
    let mut f = detector();
    f.send(click("d", "a", 0, 1000));
    f.send(click("d", "a", 300 * SEC - 1, 1000)); // last ms of [0, 5 min): duplicate
    f.send(click("d", "a", 300 * SEC, 1000)); // exactly t0 + 5 min: new window
    f.send(click("d", "a", 400 * SEC, 1000)); // inside the second window
    f.h.advance_watermark(600 * SEC - 1).unwrap();
    let c = f.comps();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].original_click_timestamps, vec![0, 300 * SEC - 1]);
    assert_eq!(c[1].original_click_timestamps, vec![300 * SEC, 400 * SEC]);
}

#[test]
fn windows_chain_from_the_first_click_not_from_clock_boundaries() {
    // 0, 4 min, 6 min, 9 min: window [0, 5) holds 0 and 4; 6 opens [6, 11) which holds 9.
    let mut f = detector();
    for m in [0, 4, 6, 9] {
        f.send(click("d", "a", m * 60 * SEC, 500));
    }
    f.h.advance_watermark(i64::MAX).unwrap();
    let c = f.comps();
    assert_eq!(c.iter().map(|e| e.original_click_timestamps.clone()).collect::<Vec<_>>(), vec![
        vec![0, 240 * SEC],
        vec![360 * SEC, 540 * SEC]
    ]);
}

#[test]
fn out_of_order_clicks_are_sessionized_by_event_time() {
    // Arrival: 100 s, 0 s, 290 s, 310 s. By event time: [0, 300 s) = {0, 100, 290}; 310 alone.
    // (Deciding in arrival order would have opened the first window at 100 s and put 310 in it.)
    let mut f = detector();
    for s in [100, 0, 290, 310] {
        f.send(click("d", "a", s * SEC, 1000 + s));
    }
    f.h.advance_watermark(10_000 * SEC).unwrap();
    let c = f.comps();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].original_click_timestamps, vec![0, 100 * SEC, 290 * SEC]);
    assert_eq!(c[0].refund_amount, 1100 + 1290);
}

#[test]
fn late_click_into_a_closed_window_goes_to_the_late_output_and_is_counted() {
    let mut f = detector();
    f.send(click("d", "a", 0, 1000));
    f.send(click("d", "a", 10 * SEC, 1000));
    f.h.advance_watermark(300 * SEC - 1).unwrap();
    assert_eq!(f.comps().len(), 1);
    f.send(click("d", "a", 150 * SEC, 1000)); // belonged to the closed window
    assert!(f.comps().is_empty());
    assert_eq!(f.h.operator.stats().late_clicks, 1);
    assert!(f.h.dead_letters.is_empty(), "late is not invalid");
    assert_eq!(f.h.late.len(), 1);
    let dl = &f.h.late[0];
    assert!(dl.reason.starts_with("LATE_CLICK"), "{}", dl.reason);
    assert_eq!((dl.stage.as_str(), dl.source.offset), ("duplicate-detector", 3));
    assert!(dl.payload.contains("\"device_id\":\"d\""));
    // A click behind the watermark but after the closed window is still placed correctly.
    f.send(click("d", "a", 305 * SEC, 1000));
    f.send(click("d", "a", 306 * SEC, 1000));
    f.h.advance_watermark(605 * SEC).unwrap();
    assert_eq!(f.comps()[0].original_click_timestamps, vec![305 * SEC, 306 * SEC]);
}

#[test]
fn a_click_behind_the_watermark_closes_its_window_at_once() {
    let mut f = detector();
    f.h.advance_watermark(1_000 * SEC).unwrap();
    f.send(click("d", "a", 900 * SEC, 1000)); // window [900, 1200) not complete: buffered
    f.send(click("d", "a", 901 * SEC, 1000));
    assert!(f.comps().is_empty());
    f.send(click("x", "y", 100 * SEC, 1000)); // window [100, 400) complete on arrival: closed at once
    assert!(f.comps().is_empty(), "a single click is no duplicate");
    assert_eq!(f.h.operator.stats().windows, 1);
    f.h.advance_watermark(1_200 * SEC - 1).unwrap();
    assert_eq!(f.comps().len(), 1);
}

#[test]
fn keys_are_forgotten_after_retention_and_very_late_clicks_are_still_reported() {
    let mut f = detector();
    f.send(click("d", "a", 0, 1000));
    f.h.advance_watermark(300 * SEC - 1).unwrap();
    assert_eq!(f.h.operator.keys_held(), 1, "remembered to recognise late clicks");
    f.h.advance_watermark(300 * SEC - 1 + HOUR).unwrap();
    assert_eq!(f.h.operator.keys_held(), 0);
    f.send(click("d", "a", 10 * SEC, 1000)); // memory gone, but far behind the watermark
    assert_eq!(f.h.operator.stats().late_clicks, 1);
    assert_eq!(f.h.late.len(), 1);
    assert!(f.h.late[0].reason.starts_with("LATE_CLICK"), "{}", f.h.late[0].reason);
    assert!(f.h.dead_letters.is_empty());
}

#[test]
fn state_survives_a_restart_from_committed_stores() {
    let scope = StateScope::in_memory();
    let mut h = Harness::new(DuplicateClickDetector::new(&scope, DedupConfig::default()).unwrap());
    for (i, t) in [0, 5 * SEC].into_iter().enumerate() {
        h.process(Record::new("d".into(), std::sync::Arc::new(click("d", "a", t, 700)), t, SourceCoord::new("ad-events", 0, i as u64))).unwrap();
    }
    let mut batch = WriteBatch::new();
    h.operator.flush_state(&mut batch).unwrap();
    scope.backend().apply(batch).unwrap();
    drop(h);
    let mut h = Harness::new(DuplicateClickDetector::new(&scope, DedupConfig::default()).unwrap());
    h.process(Record::new("d".into(), std::sync::Arc::new(click("d", "a", 9 * SEC, 800)), 9 * SEC, SourceCoord::new("ad-events", 0, 2))).unwrap();
    h.advance_watermark(300 * SEC).unwrap();
    let out = h.drain();
    assert_eq!(out.len(), 1);
    let ev: CompensationEvent = serde_json::from_slice(&out[0].record.payload).unwrap();
    assert_eq!((ev.duplicate_click_count, ev.refund_amount), (3, 1500));
}

#[test]
fn matches_a_naive_sorted_sessionizer_on_shuffled_input() {
    // Naive model: sort each key's clicks by time and cut windows from the first click.
    let mut seed = 42u64;
    let mut rnd = |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    for _ in 0..30 {
        let clicks: Vec<(String, i64, i64)> =
            (0..40).map(|_| (format!("d{}", rnd(3)), rnd(1_800) as i64 * SEC, 100 + rnd(900) as i64)).collect();
        let mut expected: Vec<(String, Vec<i64>, i64)> = Vec::new();
        for dev in ["d0", "d1", "d2"] {
            let mut mine: Vec<(i64, i64)> = clicks.iter().filter(|c| c.0 == dev).map(|c| (c.1, c.2)).collect();
            mine.sort_by_key(|c| c.0);
            let mut i = 0;
            while i < mine.len() {
                let t0 = mine[i].0;
                let j = i + mine[i..].iter().take_while(|c| c.0 < t0 + 300 * SEC).count();
                if j - i > 1 {
                    expected.push((dev.to_string(), mine[i..j].iter().map(|c| c.0).collect(), mine[i + 1..j].iter().map(|c| c.1).sum()));
                }
                i = j;
            }
        }
        // Feed shuffled (watermark only at the end, so nothing is late), prices tied to (device, time).
        let mut f = detector();
        let mut order: Vec<usize> = (0..clicks.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rnd(i as u64 + 1) as usize);
        }
        let mut sorted_prices = clicks.clone();
        sorted_prices.sort_by_key(|c| (c.0.clone(), c.1));
        for &i in &order {
            f.send(click(&clicks[i].0, "a", clicks[i].1, clicks[i].2));
        }
        f.h.advance_watermark(i64::MAX).unwrap();
        let mut got: Vec<(String, Vec<i64>, i64)> =
            f.comps().into_iter().map(|c| (c.device_id, c.original_click_timestamps, c.refund_amount)).collect();
        got.sort();
        expected.sort();
        // Equal timestamps may carry different prices in either order; compare times always, refunds
        // only where a window has no tied timestamps.
        assert_eq!(got.iter().map(|g| (&g.0, &g.1)).collect::<Vec<_>>(), expected.iter().map(|e| (&e.0, &e.1)).collect::<Vec<_>>());
        for (g, e) in got.iter().zip(&expected) {
            let ties = g.1.windows(2).any(|w| w[0] == w[1]);
            if !ties {
                assert_eq!(g.2, e.2, "{g:?}");
            }
        }
    }
}

#[test]
fn ids_come_from_the_first_click_by_time_and_ties_keep_arrival_order() {
    let mut f = detector();
    let mut later = click("d", "a", 10 * SEC, 300);
    later.campaign_id = "arrived-first".into();
    f.send(later);
    let mut earlier = click("d", "a", 0, 100);
    earlier.campaign_id = "earliest".into();
    earlier.advertiser_id = "adv-earliest".into();
    f.send(earlier);
    f.send(click("d", "a", 10 * SEC, 200)); // same time as the first arrival: after it
    f.h.advance_watermark(i64::MAX).unwrap();
    let c = f.comps();
    assert_eq!((c[0].campaign_id.as_str(), c[0].advertiser_id.as_str()), ("earliest", "adv-earliest"));
    assert_eq!(c[0].original_click_timestamps, vec![0, 10 * SEC, 10 * SEC]);
    assert_eq!(c[0].refund_amount, 500);
}

#[test]
fn a_redelivered_click_is_not_a_duplicate_but_a_second_real_click_is() {
    let mut f = detector();
    let t0 = ts("2024-01-15T10:30:15Z");
    let mut first = click("device_12345", "ad_001", t0, 1200);
    first.event_id = Some("click-1".into());
    f.send(first.clone());
    // The producer retries: the same click (same event_id) arrives again a moment later.
    f.send(first);
    assert!(f.comps().is_empty());
    f.h.advance_watermark(t0 + 5 * MINUTE).unwrap();
    assert!(f.comps().is_empty(), "one real click: nothing to refund");
    assert_eq!(f.h.operator.stats().redelivered, 1);

    // A second real click (another event_id) inside the window is a duplicate and is refunded.
    let t1 = t0 + 10 * MINUTE;
    let mut a = click("device_12345", "ad_001", t1, 1200);
    a.event_id = Some("click-2".into());
    let mut b = click("device_12345", "ad_001", t1 + 3_000, 1200);
    b.event_id = Some("click-3".into());
    f.send(a);
    f.send(b);
    f.h.advance_watermark(t1 + 5 * MINUTE).unwrap();
    let comps = f.comps();
    assert_eq!(comps.len(), 1);
    assert_eq!((comps[0].duplicate_click_count, comps[0].refund_amount), (2, 1200));
}
