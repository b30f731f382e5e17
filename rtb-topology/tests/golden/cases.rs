//! The golden inputs and their hand-computed answers (see `replay_golden.rs`).

use super::*;

const ADV50: Ad<'static> = Ad {
    device: "device_12345",
    ad: "ad_001",
    campaign: "campaign_100",
    advertiser: "advertiser_50",
    placement: "HOME",
    category: "전자제품/컴퓨터",
    product: "product_200",
    bid: 1500,
};

fn raw(campaigns: &[String], ads: &[String], conversions: &[String], advertisers: &[String]) -> RawInput {
    RawInput { campaign: file(campaigns), ad: file(ads), conversion: file(conversions), advertisers: file(advertisers) }
}

// ---------------------------------------------------------------------------------------------------------
// SPEC §3 example: three clicks of device_12345 on ad_001 at 10:30:15, :18, :22, each 1200 KRW.

pub fn spec_example() -> RawInput {
    raw(
        &[],
        &[
            ADV50.impression("2024-01-15T10:30:10Z"),
            ADV50.click("2024-01-15T10:30:15Z", 1200, Some("clk-1")),
            ADV50.click("2024-01-15T10:30:18Z", 1200, Some("clk-2")),
            ADV50.click("2024-01-15T10:30:22Z", 1200, None), // line 3, no event_id
        ],
        &[],
        &[advertiser("advertiser_50", 1_000_000, "Asia/Seoul")],
    )
}

pub fn check_spec_example(o: &Outputs) {
    // One metrics window [10:30, 10:35): 1 impression, 3 clicks, spend 3 × 1200 = 3600; clicks/impressions =
    // 3/1, shown as a rate capped at 1 (the counts 1 and 3 stay as they are); cvr = 0/3.
    assert_eq!(o.metrics.len(), 1, "{:#?}", o.metrics);
    let w = &o.metrics[0];
    assert_eq!(
        (w.campaign_id.as_str(), w.window_start, w.window_end),
        ("campaign_100", ms("2024-01-15T10:30:00Z"), ms("2024-01-15T10:35:00Z"))
    );
    assert_eq!((w.impressions, w.clicks, w.conversions, w.spend, w.revenue), (1, 3, 0, 3600, 0));
    assert!((w.ctr - 1.0).abs() < 1e-9 && w.cvr.abs() < 1e-9, "ctr {} cvr {}", w.ctr, w.cvr);
    // The dedup window [10:30:15, 10:35:15) holds all three: one compensation at t0 + 5 min, count 3,
    // refund = clicks 2..3 = 2 × 1200 = 2400.
    assert_eq!(
        o.compensations,
        vec![compensation(
            "device_12345",
            "ad_001",
            "campaign_100",
            "advertiser_50",
            &["2024-01-15T10:30:15Z", "2024-01-15T10:30:18Z", "2024-01-15T10:30:22Z"],
            2400
        )]
    );
    assert_eq!(o.compensations[0].timestamp, ms("2024-01-15T10:35:15Z"));
    // Ledger: three charges of 1200 (keys `charge:id:{event_id}`; line 3 has no event_id: its source coordinates,
    // partition(device_12345) = 6, offset 3 there (every line is that device's) → `charge:src:ad-events/6/3`) and one refund keyed
    // `refund:{device}/{ad}/{window start}` with the start 2024-01-15T10:30:15Z = 1 705 314 615 000 ms.
    let want: BTreeSet<_> = [
        entry("charge:id:clk-1", "advertiser_50", "campaign_100", "CHARGE", 1200),
        entry("charge:id:clk-2", "advertiser_50", "campaign_100", "CHARGE", 1200),
        entry("charge:src:ad-events/6/3", "advertiser_50", "campaign_100", "CHARGE", 1200),
        entry("refund:device_12345/ad_001/1705314615000", "advertiser_50", "campaign_100", "REFUND", 2400),
    ]
    .into();
    assert_eq!(ledger_set(o), want);
    // 1 000 000 − 3 × 1200 + 2400 = 998 800 = opening − 1200.
    assert_eq!(balances(o), vec![("advertiser_50", 998_800)]);
    assert!(o.conversions.is_empty() && o.dead_letters.is_empty() && o.alerts.is_empty() && o.rankings.is_empty());
    assert_unattributed(o, 0);
}

// ---------------------------------------------------------------------------------------------------------
// Dedup window boundary: a click exactly 5 min after the first opens a new window.

pub fn boundary_click() -> RawInput {
    let a = ADV50.on("device_777");
    let b = Ad { ad: "ad_002", ..a };
    raw(
        &[],
        &[
            a.click("2024-01-15T10:30:15.000Z", 1000, Some("w-1")),
            a.click("2024-01-15T10:35:15.000Z", 1100, Some("w-2")), // = t0 + 5 min: new window
            a.click("2024-01-15T10:40:14.999Z", 900, Some("w-3")),  // 1 ms before the 2nd window ends
            b.click("2024-01-15T10:36:00.000Z", 500, Some("w-4")),  // same device, other ad: its own window
        ],
        &[],
        &[advertiser("advertiser_50", 1_000_000, "Asia/Seoul")],
    )
}

pub fn check_boundary_click(o: &Outputs) {
    // ad_001 windows: [10:30:15, 10:35:15) = {w-1} → no compensation; [10:35:15, 10:40:15) = {w-2, w-3} →
    // count 2, refund 900, at 10:40:15. ad_002: {w-4} alone.
    assert_eq!(
        o.compensations,
        vec![compensation(
            "device_777",
            "ad_001",
            "campaign_100",
            "advertiser_50",
            &["2024-01-15T10:35:15Z", "2024-01-15T10:40:14.999Z"],
            900
        )]
    );
    // The refund key is the second window's start, 10:35:15 = 1 705 314 615 000 + 300 000.
    let want: BTreeSet<_> = [
        entry("charge:id:w-1", "advertiser_50", "campaign_100", "CHARGE", 1000),
        entry("charge:id:w-2", "advertiser_50", "campaign_100", "CHARGE", 1100),
        entry("charge:id:w-3", "advertiser_50", "campaign_100", "CHARGE", 900),
        entry("charge:id:w-4", "advertiser_50", "campaign_100", "CHARGE", 500),
        entry("refund:device_777/ad_001/1705314915000", "advertiser_50", "campaign_100", "REFUND", 900),
    ]
    .into();
    assert_eq!(ledger_set(o), want);
    // 1 000 000 − (1000 + 1100 + 900 + 500) + 900 = 997 400.
    assert_eq!(balances(o), vec![("advertiser_50", 997_400)]);
    // Metrics windows: [10:30,10:35) {w-1}: 1 click, 1000; [10:35,10:40) {w-2, w-4}: 2 clicks, 1600;
    // [10:40,10:45) {w-3}: 1 click, 900. No impressions: ctr 0.0; no conversions: cvr 0.0.
    let got: Vec<_> =
        o.metrics.iter().map(|m| (m.window_start, m.impressions, m.clicks, m.spend, m.ctr, m.cvr)).collect();
    assert_eq!(
        got,
        vec![
            (ms("2024-01-15T10:30:00Z"), 0, 1, 1000, 0.0, 0.0),
            (ms("2024-01-15T10:35:00Z"), 0, 2, 1600, 0.0, 0.0),
            (ms("2024-01-15T10:40:00Z"), 0, 1, 900, 0.0, 0.0),
        ]
    );
}

// ---------------------------------------------------------------------------------------------------------
// Conversion attribution.

pub fn attribution() -> RawInput {
    let p200 = Ad { device: "device_1", product: "product_200", ..ADV50 };
    let adv51 =
        |ad, campaign, device, product| Ad { ad, campaign, device, product, advertiser: "advertiser_51", ..ADV50 };
    raw(
        &[],
        &[
            p200.click("2024-01-15T10:00:00Z", 1000, Some("c-1")),
            adv51("ad_002", "campaign_101", "device_1", "product_200").click("2024-01-15T11:00:00Z", 800, Some("c-2")),
            adv51("ad_003", "campaign_102", "device_1", "product_999").click("2024-01-15T12:30:00Z", 700, Some("c-3")),
            Ad { device: "device_2", product: "product_300", ..ADV50 }.click("2024-01-14T09:00:00Z", 1000, Some("c-4")),
            Ad { device: "device_3", product: "product_400", ..ADV50 }.click("2024-01-14T12:00:00Z", 1000, Some("c-5")),
            p200.click("2024-01-15T14:00:01Z", 1000, Some("c-6")), // 1 s after order_1: too late for it
            Ad { ad: "ad_010", campaign: "campaign_110", device: "device_4", product: "product_500", ..ADV50 }.click(
                "2024-01-15T09:00:00Z",
                500,
                Some("c-7"),
            ),
            adv51("ad_011", "campaign_111", "device_4", "product_500").click("2024-01-15T09:00:00Z", 600, Some("c-8")),
        ],
        &[
            conversion("2024-01-15T14:00:00Z", "device_1", "order_1", "product_200", 50_000, "PURCHASE"),
            conversion("2024-01-15T10:00:00Z", "device_2", "order_2", "product_300", 30_000, "PURCHASE"),
            conversion("2024-01-15T14:00:05Z", "device_1", "order_1", "product_200", 99_000, "SIGNUP"),
            conversion("2024-01-15T12:00:00Z", "device_3", "order_3", "product_400", 20_000, "ADD_TO_CART"),
            conversion("2024-01-15T13:00:00Z", "device_1", "order_5", "product_200", 1_000, "SIGNUP"),
            conversion("2024-01-15T10:30:00Z", "device_1", "order_5", "product_200", 2_000, "PURCHASE"),
            conversion("2024-01-15T09:30:00Z", "device_4", "order_4", "product_500", 10_000, "PURCHASE"),
        ],
        &[advertiser("advertiser_50", 1_000_000, "Asia/Seoul"), advertiser("advertiser_51", 1_000_000, "Asia/Seoul")],
    )
}

pub fn check_attribution(o: &Outputs) {
    let row = |order: &str,
               device: &str,
               product: &str,
               campaign: &str,
               ad: &str,
               adv: &str,
               click: &str,
               conv: &str,
               rev: i64,
               ty: &str| ConversionRow {
        order_id: order.into(),
        device_id: device.into(),
        product_id: product.into(),
        campaign_id: campaign.into(),
        ad_id: ad.into(),
        advertiser_id: adv.into(),
        click_timestamp: ms(click),
        conversion_timestamp: ms(conv),
        revenue_amount: rev,
        conversion_type: ty.into(),
    };
    let want = vec![
        // order_1 at 14:00 (device_1, product_200): candidate clicks c-1 10:00 and c-2 11:00 (c-3 is another
        // product, c-6 at 14:00:01 is after it): the last, c-2, wins, 3 h before. Its later report (14:00:05,
        // 99 000, SIGNUP) is a duplicate order: ignored.
        row(
            "order_1",
            "device_1",
            "product_200",
            "campaign_101",
            "ad_002",
            "advertiser_51",
            "2024-01-15T11:00:00Z",
            "2024-01-15T14:00:00Z",
            50_000,
            "PURCHASE",
        ),
        // order_2: the only click of device_2/product_300 is 25 h before → unattributed, no row.
        // order_3: click exactly 24 h before (the bound is inclusive).
        row(
            "order_3",
            "device_3",
            "product_400",
            "campaign_100",
            "ad_001",
            "advertiser_50",
            "2024-01-14T12:00:00Z",
            "2024-01-15T12:00:00Z",
            20_000,
            "ADD_TO_CART",
        ),
        // order_4: two clicks at the same 09:00; the one later in the file (c-8, ad_011) wins.
        row(
            "order_4",
            "device_4",
            "product_500",
            "campaign_111",
            "ad_011",
            "advertiser_51",
            "2024-01-15T09:00:00Z",
            "2024-01-15T09:30:00Z",
            10_000,
            "PURCHASE",
        ),
        // order_5: reported at 13:00 then (later in the file) at 10:30: the earliest timestamp counts, 10:30,
        // whose last click of device_1/product_200 is c-1 at 10:00 (c-2 at 11:00 is after it).
        row(
            "order_5",
            "device_1",
            "product_200",
            "campaign_100",
            "ad_001",
            "advertiser_50",
            "2024-01-15T10:00:00Z",
            "2024-01-15T10:30:00Z",
            2_000,
            "PURCHASE",
        ),
    ];
    assert_eq!(o.conversions, want);
    assert_unattributed(o, 1);
    // device_1/ad_001 clicks c-1 and c-6 are 4 h apart: no duplicate anywhere.
    assert!(o.compensations.is_empty(), "{:#?}", o.compensations);
    assert_eq!(o.ledger.len(), 8, "one charge per click");
}

// ---------------------------------------------------------------------------------------------------------
// Bad input.

pub fn bad_input_lines() -> (Vec<String>, Vec<String>, Vec<String>) {
    let a = ADV50.on("device_9");
    let campaign_ok = |status: &str, budget: i64| {
        campaign(
            "CAMPAIGN_CREATED",
            "2024-01-15T09:00:00Z",
            "campaign_100",
            "advertiser_50",
            "HOME",
            "electronics",
            1500,
            budget,
            status,
            "PENDING",
            None,
        )
    };
    let ads = vec![
        r#"{"event_type":"CLICK","timestamp":"2024-01-15T10:00:00Z","device_id":"device_9""#.to_string(), // 0 malformed
        a.click("2024-01-15T10:00:30Z", -5, Some("neg")), // 1 negative price
        a.click("2024-01-15T10:00:40Z", 1000, Some("swipe")).replace("\"CLICK\"", "\"SWIPE\""), // 2 unknown enum
        a.impression("2024-01-15T10:01:00Z"),             // 3 valid
        a.click("2024-01-15T10:02:00Z", 1600, Some("over")), // 4 price > bid 1500
        a.click("2999-01-01T00:00:00Z", 1000, Some("future")), // 5 far future
        a.click("2024-01-15T19:03:00+09:00", 1000, Some("kst")), // 6 not UTC
        a.click("2024-01-15T10:04:00Z", 1000, Some("nodev")).replace("\"device_id\":\"device_9\",", ""), // 7 missing field
        "[1,2,3]".to_string(), // 8 not an object
        a.click("2024-01-15T10:04:30Z", 1000, Some("str")).replace("\"bid_price\":1500", "\"bid_price\":\"1500\""), // 9 wrong type
    ];
    let campaigns = vec![
        campaign_ok("ACTIVE", 100_000),    // 0 valid
        campaign_ok("RUNNING", 100_000),   // 1 unknown status
        campaign_ok("ACTIVE", 20_000_000), // 2 budget > 10 000 000
    ];
    let conversions = vec![
        conversion("2024-01-15T11:00:00Z", "device_9", "order_a", "product_200", 5_000, "REFUND"), // 0 unknown type
        conversion("2024-01-15T11:00:00Z", "device_9", "order_b", "product_200", -100, "PURCHASE"), // 1 negative
        conversion("2024-01-15T11:00:00Z", "device_9", "order_c", "product_200", 5_000, "PURCHASE"), // 2 valid
    ];
    (campaigns, ads, conversions)
}

pub fn bad_input() -> RawInput {
    let (c, a, v) = bad_input_lines();
    raw(&c, &a, &v, &[advertiser("advertiser_50", 1_000_000, "Asia/Seoul")])
}

pub fn check_bad_input(o: &Outputs) {
    let per_topic: Vec<_> = o.dead_per_topic().into_iter().collect();
    assert_eq!(
        per_topic,
        vec![("ad-events".to_string(), 9), ("campaign-events".to_string(), 2), ("conversion-events".to_string(), 2)]
    );
    assert!(
        o.dead_letters.iter().all(|d| !d.reason.trim().is_empty()),
        "a dead letter without reason: {:#?}",
        o.dead_letters
    );
    let (c, a, v) = bad_input_lines();
    let invalid = [
        ("campaign-events", &c, vec![1, 2]),
        ("ad-events", &a, vec![0, 1, 2, 4, 5, 6, 7, 8, 9]),
        ("conversion-events", &v, vec![0, 1]),
    ];
    for (topic, lines, idx) in invalid {
        for i in idx {
            assert!(
                o.dead_letters.iter().any(|d| d.topic == topic && same_payload(&d.payload, &lines[i])),
                "{topic} line {i} not among the dead letters' payloads: {}",
                lines[i]
            );
        }
    }
    // Only the impression (line 3) is valid among the ad-events: window [10:00, 10:05), 1 impression, no click.
    let got: Vec<_> = o
        .metrics
        .iter()
        .map(|m| (m.campaign_id.as_str(), m.window_start, m.impressions, m.clicks, m.spend, m.ctr))
        .collect();
    assert_eq!(got, vec![("campaign_100", ms("2024-01-15T10:00:00Z"), 1, 0, 0, 0.0)]);
    // No valid click: no ledger; the balance stays at its opening. The valid conversion has no click.
    assert!(o.ledger.is_empty(), "{:#?}", o.ledger);
    assert_eq!(balances(o), vec![("advertiser_50", 1_000_000)]);
    assert!(o.conversions.is_empty());
    assert_unattributed(o, 1);
    // campaign_100 (approval PENDING) can not be ranked.
    assert!(o.rankings.is_empty(), "{:#?}", o.rankings);
}

// ---------------------------------------------------------------------------------------------------------
// SPEC §3 field table and issue 7 (keys): an impression without prices, a producer's byte-exact redelivery,
// a different click reusing an event_id, and a client event_id spelling the refund key of a real window.

pub fn client_ids() -> RawInput {
    let imp = ADV50.impression("2024-01-15T10:30:05Z");
    // SPEC §3: an IMPRESSION needs neither bid_price nor actual_price.
    let imp = imp.replace(",\"bid_price\":1500,\"actual_price\":0", "").replace("\"event_type\"", "\"event_id\":\"imp-1\",\"event_type\"");
    let x = ADV50.on("device_x");
    let r1 = ADV50.on("d1").click("2024-01-15T10:30:15Z", 1000, Some("r-1"));
    raw(
        &[],
        &[
            imp,
            r1.clone(),
            r1,                                                                  // redelivered as is
            // Another click (another ad of the same device), same id. Same device: the same partition as r-1,
            // so "the first" of the two is the first in the partition's order. Across partitions it would be
            // the first to arrive, as on Kafka, which no file order defines.
            Ad { ad: "ad_002", ..ADV50.on("d1") }.click("2024-01-15T10:31:00Z", 700, Some("r-1")),
            x.click("2024-01-15T10:32:00Z", 500, Some("x-1")),
            x.click("2024-01-15T10:32:10Z", 500, Some("x-2")),
            ADV50.on("device_y").click("2024-01-15T10:33:00Z", 300, Some("refund:device_x/ad_001/1705314720000")),
        ],
        &[],
        &[advertiser("advertiser_50", 1_000_000, "Asia/Seoul")],
    )
}

pub fn check_client_ids(o: &Outputs) {
    // Window [10:30, 10:35): the impression; clicks r-1 (once), x-1, x-2 and device_y's: 4 clicks,
    // spend 1000 + 500 + 500 + 300 = 2300. The redelivery and the click reusing r-1 are not counted.
    assert_eq!(o.metrics.len(), 1, "{:#?}", o.metrics);
    let w = &o.metrics[0];
    assert_eq!((w.impressions, w.clicks, w.conversions, w.spend), (1, 4, 0, 2300));
    // device_x: window [10:32:00, 10:37:00) = {x-1, x-2}: refund 500, key at 10:32:00Z = 1 705 314 720 000 ms.
    assert_eq!(
        o.compensations,
        vec![compensation("device_x", "ad_001", "campaign_100", "advertiser_50", &["2024-01-15T10:32:00Z", "2024-01-15T10:32:10Z"], 500)]
    );
    // device_y's event_id spells that refund key; it is charged under charge:id:…, and the refund still books.
    let want: BTreeSet<_> = [
        entry("charge:id:r-1", "advertiser_50", "campaign_100", "CHARGE", 1000),
        entry("charge:id:x-1", "advertiser_50", "campaign_100", "CHARGE", 500),
        entry("charge:id:x-2", "advertiser_50", "campaign_100", "CHARGE", 500),
        entry("charge:id:refund:device_x/ad_001/1705314720000", "advertiser_50", "campaign_100", "CHARGE", 300),
        entry("refund:device_x/ad_001/1705314720000", "advertiser_50", "campaign_100", "REFUND", 500),
    ]
    .into();
    assert_eq!(ledger_set(o), want);
    // 1 000 000 − 1000 − 500 − 500 − 300 + 500.
    assert_eq!(balances(o), vec![("advertiser_50", 998_200)]);
    // The click reusing r-1 is refused with its reason, not silently skipped.
    assert_eq!(o.dead_letters.len(), 1, "{:#?}", o.dead_letters);
    assert_eq!(o.dead_letters[0].topic, "ad-events");
    assert!(o.dead_letters[0].reason.starts_with("EVENT_ID_REUSED"), "{}", o.dead_letters[0].reason);
}
