use super::*;

/// Test pricing: rank by bid, pay own bid.
struct ByBid;
impl PriceModel for ByBid {
    fn rank(&mut self, c: &[AuctionCandidate], _: u64, _: u64) -> Vec<Slot> {
        let mut v: Vec<_> = c.iter().map(|c| (c.bid, c.index)).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|(bid, index)| Slot { index, cpc: bid }).collect()
    }
}

fn small(seed: u64) -> SimConfig {
    SimConfig { seed, ad_events: 20_000, ..SimConfig::default() }.spanning(6 * 3_600_000)
}

#[test]
fn same_seed_same_events_other_seed_other_events() {
    let a: Vec<_> = Simulator::new(small(7), ByBid).collect();
    let b: Vec<_> = Simulator::new(small(7), ByBid).collect();
    let c: Vec<_> = Simulator::new(small(8), ByBid).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_larger_total_continues_a_smaller_one_event_for_event() {
    // A restart with a larger --events must continue the first run, not re-time it: event i depends on
    // the seed, the scale, the pace and i only.
    let cfg = |n| SimConfig { seed: 3, ad_events: n, ..SimConfig::default() };
    let short: Vec<_> = Simulator::new(cfg(2_000), ByBid).collect();
    let long: Vec<_> = Simulator::new(cfg(6_000), ByBid).collect();
    assert!(long.len() > short.len() + 3_000, "{} vs {}", long.len(), short.len());
    assert_eq!(short[..], long[..short.len()], "the short run is a prefix of the long one");
    let last_short = short.iter().map(|e| e.timestamp).max().expect("events");
    let first_new = long[short.len()..].iter().map(|e| e.timestamp).min().expect("events");
    assert!(first_new > last_short - 1_000_000, "the continuation is not far behind the first run");
}

#[test]
fn exact_ad_event_count_dense_seq_and_arrival_order() {
    let evs: Vec<_> = Simulator::new(small(1), ByBid).collect();
    assert_eq!(evs.iter().filter(|e| e.topic == SimTopic::Ad).count(), 20_000);
    for (i, w) in evs.windows(2).enumerate() {
        assert!(w[0].arrival <= w[1].arrival, "arrival order broken at {i}");
        assert_eq!(w[0].seq + 1, w[1].seq);
    }
}

#[test]
fn traffic_has_every_ingredient() {
    let evs: Vec<_> = Simulator::new(small(3), ByBid).collect();
    let text: Vec<String> = evs.iter().map(|e| String::from_utf8_lossy(&e.payload).into_owned()).collect();
    let has = |needle: &str| text.iter().filter(|t| t.contains(needle)).count();
    assert!(has("CAMPAIGN_CREATED") >= 40);
    assert!(has("CAMPAIGN_APPROVED") >= 40);
    assert!(has("\"CLICK\"") > 100, "clicks: {}", has("\"CLICK\""));
    assert!(has("\"CONVERSION\"") > 5);
    assert!(evs.iter().any(|e| e.topic == SimTopic::Conversion));
    let malformed = text.iter().filter(|t| serde_json::from_str::<serde_json::Value>(t).is_err()).count();
    assert!(malformed > 0, "some events are not even JSON");
    // Out of order: some event has an earlier timestamp than one that arrived before it.
    let mut max_ts = i64::MIN;
    let mut disorder = 0;
    let mut late = 0;
    for e in &evs {
        if e.timestamp < max_ts {
            disorder += 1;
            if max_ts - e.timestamp > 60_000 {
                late += 1;
            }
        }
        max_ts = max_ts.max(e.timestamp);
    }
    assert!(disorder > 100, "disorder {disorder}");
    assert!(late > 0, "late {late}");
}

#[test]
fn duplicate_clicks_within_five_minutes_exist() {
    let evs: Vec<_> = Simulator::new(small(5), ByBid).collect();
    let mut clicks: std::collections::HashMap<(String, String), Vec<i64>> = Default::default();
    for e in evs.iter().filter(|e| e.topic == SimTopic::Ad) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.payload) else { continue };
        if v["event_type"] == "CLICK" {
            let k = (v["device_id"].to_string(), v["ad_id"].to_string());
            clicks.entry(k).or_default().push(e.timestamp);
        }
    }
    let mut dups = 0;
    for ts in clicks.values_mut() {
        ts.sort_unstable();
        if ts.windows(2).any(|w| w[1] - w[0] < 300_000) {
            dups += 1;
        }
    }
    assert!(dups > 5, "device+ad pairs with a duplicate: {dups}");
}

#[test]
#[ignore = "prints a sample; run by hand"]
fn peek() {
    let evs: Vec<_> = Simulator::new(small(9), ByBid).collect();
    for e in evs.iter().step_by(2_000).take(12) {
        println!("{} {:?} {} {}", e.seq, e.topic, e.key, String::from_utf8_lossy(&e.payload));
    }
    let n = |s: &str| evs.iter().filter(|e| String::from_utf8_lossy(&e.payload).contains(s)).count();
    println!("total {} clicks {} conv-ad {} conv {}", evs.len(), n("\"CLICK\""), n("\"CONVERSION\""), evs.iter().filter(|e| e.topic == SimTopic::Conversion).count());
}

#[test]
fn every_slot_used_has_more_than_two_approved_campaigns() {
    // The README's `rtb run` default is scale 1: every placement+category that has campaigns must have
    // competitors, so that GSP prices are set by the campaign below and not by the reserve.
    for (seed, scale) in [(42, 1), (7, 1), (1_234, 1), (42, 2), (5, 3), (9, 4)] {
        let cfg = SimConfig { seed, scale, ad_events: 1_000, ..SimConfig::default() };
        let evs: Vec<_> = Simulator::new(cfg, ByBid).collect();
        let mut approved: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<String>> =
            Default::default();
        let mut campaigns = std::collections::BTreeSet::new();
        for e in evs.iter().filter(|e| e.topic == SimTopic::Campaign) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&e.payload) else { continue };
            let id = v["campaign_id"].as_str().expect("campaign_id").to_string();
            campaigns.insert(id.clone());
            let slot = (v["placement"].as_str().expect("placement").into(), v["category"].as_str().expect("category").into());
            let set = approved.entry(slot).or_default();
            if v["event_type"] == "CAMPAIGN_APPROVED" && v["approval_status"] == "APPROVED" {
                set.insert(id);
            }
        }
        assert_eq!(campaigns.len(), 40 * scale as usize, "seed {seed} scale {scale}");
        assert_eq!(approved.len(), slots(scale).len(), "seed {seed} scale {scale}: slots used");
        for (slot, ids) in &approved {
            assert!(ids.len() > 2, "seed {seed} scale {scale}: {slot:?} has only {} approved campaigns", ids.len());
        }
        // Every placement and every category is still in the traffic.
        let placements: std::collections::BTreeSet<_> = approved.keys().map(|k| k.0.clone()).collect();
        let categories: std::collections::BTreeSet<_> = approved.keys().map(|k| k.1.clone()).collect();
        assert_eq!((placements.len(), categories.len()), (PLACEMENTS.len(), CATEGORIES.len()), "seed {seed} scale {scale}");
    }
}

#[test]
fn slots_are_distinct_and_cover_every_placement_and_category() {
    for scale in 1..=4 {
        let s = slots(scale);
        let distinct: std::collections::BTreeSet<_> = s.iter().collect();
        assert_eq!(distinct.len(), s.len(), "scale {scale}: {s:?}");
        assert!(40 * scale as usize / s.len() >= CAMPAIGNS_PER_SLOT, "scale {scale}: {} slots", s.len());
    }
    assert_eq!(slots(1).len(), 8);
    assert_eq!(slots(3).len(), 24);
    assert_eq!(slots(10).len(), 24, "never more than the 24 placement+category pairs");
}
