//! Golden ranking and budget inputs and their hand-computed answers (see `replay_golden.rs`).

use super::*;

fn raw(campaigns: &[String], ads: &[String], advertisers: &[String]) -> RawInput {
    RawInput { campaign: file(campaigns), ad: file(ads), conversion: String::new(), advertisers: file(advertisers) }
}

/// An ad of `campaign` (HOME unless changed) paid by `advertiser`.
fn ad(campaign: &'static str, advertiser: &'static str, category: &'static str, bid: i64) -> Ad<'static> {
    Ad { device: "", ad: "ad_x", campaign, advertiser, placement: "HOME", category, product: "product_1", bid }
}

/// An approved, active campaign event.
fn approved(ts: &str, id: &str, adv: &str, placement: &str, category: &str, bid: i64, budget: i64) -> String {
    campaign("CAMPAIGN_APPROVED", ts, id, adv, placement, category, bid, budget, "ACTIVE", "APPROVED", None)
}

// ---------------------------------------------------------------------------------------------------------
// Ranking: pCTR, score, GSP cpc, eligibility.

pub fn ranking() -> RawInput {
    let a1 = "advertiser_1";
    let e = "electronics";
    let st = |ts: &str, id: &str, placement: &str, category: &str, bid: i64, status: &str| {
        campaign("CAMPAIGN_STATUS_CHANGED", ts, id, a1, placement, category, bid, 1_000_000, status, "APPROVED", None)
    };
    let campaigns = vec![
        campaign(
            "CAMPAIGN_CREATED",
            "2024-01-15T00:00:00Z",
            "campaign_A",
            a1,
            "HOME",
            e,
            1000,
            1_000_000,
            "ACTIVE",
            "PENDING",
            None,
        ),
        approved("2024-01-15T00:00:10Z", "campaign_A", a1, "HOME", e, 1000, 1_000_000),
        campaign(
            "CAMPAIGN_CREATED",
            "2024-01-15T00:00:20Z",
            "campaign_B",
            a1,
            "HOME",
            e,
            800,
            1_000_000,
            "ACTIVE",
            "APPROVED",
            None,
        ),
        campaign(
            "CAMPAIGN_APPROVED",
            "2024-01-15T00:00:30Z",
            "campaign_C",
            a1,
            "HOME",
            e,
            5000,
            1_000_000,
            "ACTIVE",
            "REJECTED",
            None,
        ),
        approved("2024-01-15T00:00:40Z", "campaign_D", a1, "HOME", e, 3000, 1_000_000),
        st("2024-01-15T00:01:00Z", "campaign_D", "HOME", e, 3000, "PAUSED"),
        campaign(
            "CAMPAIGN_APPROVED",
            "2024-01-15T00:01:10Z",
            "campaign_E",
            a1,
            "HOME",
            e,
            4000,
            1_000_000,
            "ACTIVE",
            "APPROVED",
            Some("2024-01-16T00:00:00Z"),
        ),
        approved("2024-01-15T00:01:20Z", "campaign_F", a1, "SEARCH", e, 90, 1_000_000),
        approved("2024-01-15T00:01:30Z", "campaign_G", a1, "HOME", "sports", 500, 1_000_000),
        approved("2024-01-15T00:01:40Z", "campaign_H", a1, "CATEGORY", e, 700, 1_000_000),
        approved("2024-01-15T00:01:50Z", "campaign_I", a1, "CATEGORY", e, 700, 1_000_000),
        approved("2024-01-15T00:03:00Z", "campaign_K", a1, "PRODUCT_DETAIL", "sports", 600, 1_000_000),
        st("2024-01-15T00:02:00Z", "campaign_K", "PRODUCT_DETAIL", "sports", 600, "PAUSED"), // earlier ts, later line
        approved("2024-01-15T00:04:00Z", "campaign_J", a1, "HOME", e, 9000, 1_000_000),
        st("2024-01-15T00:04:00Z", "campaign_J", "HOME", e, 9000, "PAUSED"), // same ts, later line
    ];
    let (a, b) = (ad("campaign_A", a1, e, 1000), ad("campaign_B", a1, e, 800));
    let mut ads = Vec::new();
    for i in 0..10 {
        ads.push(a.on(&format!("device_a{i}")).impression(&format!("2024-01-15T01:00:{i:02}Z")));
    }
    ads.push(a.on("device_a0").click("2024-01-15T01:01:00Z", 900, Some("a-click")));
    for i in 0..10 {
        ads.push(b.on(&format!("device_b{i}")).impression(&format!("2024-01-15T01:02:{i:02}Z")));
    }
    for i in 0..4 {
        ads.push(b.on(&format!("device_b{i}")).click(
            &format!("2024-01-15T01:03:{i:02}Z"),
            700,
            Some(&format!("b-click-{i}")),
        ));
    }
    raw(&campaigns, &ads, &[advertiser(a1, 10_000_000, "Asia/Seoul")])
}

pub fn check_ranking(o: &Outputs) {
    // T_end = 01:03:03 (last click). Eligible: A, B (HOME/electronics), F (SEARCH/electronics), G (HOME/sports),
    // H, I (CATEGORY/electronics), K (PRODUCT_DETAIL/sports: its latest event BY TIMESTAMP, 00:03, is ACTIVE).
    // Not: C rejected, D paused, E effective 2024-01-16 > T_end, J paused by the later line of the same instant.
    //
    // electronics ad-events come from A (10 impressions, 1 click) and B (10, 4): m = 5/20 = 0.25, K·m = 25.
    //   A: pCTR = (1 + 25)/(10 + 100) = 26/110 = 0.23636..; score = 1000 · 26/110 = 236.3636..
    //   B: pCTR = (4 + 25)/110 = 29/110 = 0.26363..;        score = 800 · 29/110 = 210.9090..
    //   A first; cpc_A = min(1000, max(100, ceil(210.909../0.23636..) + 10)) = ceil(23200/26 = 892.3) + 10 = 903;
    //   B last: min(800, 100) = 100.
    //   H, I: no ad-events, pCTR = (0 + 25)/(0 + 100) = 0.25, score = 700 · 0.25 = 175 each; tie on score and
    //   bid → campaign_id: H, I. cpc_H = min(700, max(100, ceil(175/0.25) + 10 = 710)) = 700; cpc_I = 100.
    //   F: pCTR 0.25, score = 90 · 0.25 = 22.5, alone: cpc = min(90, 100) = 90 (never above its bid).
    // sports has no ad-events: m = 0.01, pCTR = (0 + 1)/100 = 0.01.
    //   G: score = 500 · 0.01 = 5, cpc 100. K: score = 600 · 0.01 = 6, cpc 100.
    assert_rankings(
        o,
        &[
            ("CATEGORY", "electronics", 1, "campaign_H", 175.0, 700),
            ("CATEGORY", "electronics", 2, "campaign_I", 175.0, 100),
            ("HOME", "electronics", 1, "campaign_A", 26_000.0 / 110.0, 903),
            ("HOME", "electronics", 2, "campaign_B", 23_200.0 / 110.0, 100),
            ("HOME", "sports", 1, "campaign_G", 5.0, 100),
            ("PRODUCT_DETAIL", "sports", 1, "campaign_K", 6.0, 100),
            ("SEARCH", "electronics", 1, "campaign_F", 22.5, 90),
        ],
    );
    // Spend is far below the 1 000 000 budgets: no alert.
    assert!(o.alerts.is_empty(), "{:#?}", o.alerts);
}

// ---------------------------------------------------------------------------------------------------------
// Budget: 80 % and 100 % alerts, pause, next local day, time zones, refunds.

/// X (budget 5000) gets five 1000-KRW clicks 10 min apart on Seoul day 2024-01-15; Y (budget 1 000 000) only
/// impressions; `extra` ad-events are appended.
fn budget_input(extra: &[String]) -> RawInput {
    let a = "advertiser_60";
    let campaigns = vec![
        approved("2024-01-15T00:00:00Z", "campaign_X", a, "HOME", "식품", 1000, 5000),
        approved("2024-01-15T00:00:00Z", "campaign_Y", a, "HOME", "식품", 950, 1_000_000),
    ];
    let (x, y) = (ad("campaign_X", a, "식품", 1000), ad("campaign_Y", a, "식품", 950));
    let mut ads = Vec::new();
    for i in 0..10 {
        ads.push(x.on(&format!("device_x{i}")).impression(&format!("2024-01-15T00:50:{i:02}Z")));
    }
    for (i, t) in ["01:00", "01:10", "01:20", "01:30", "01:40"].iter().enumerate() {
        ads.push(x.on(&format!("device_b{i}")).click(&format!("2024-01-15T{t}:00Z"), 1000, Some(&format!("x-{i}"))));
    }
    for i in 0..10 {
        ads.push(y.on(&format!("device_y{i}")).impression(&format!("2024-01-15T02:00:{i:02}Z")));
    }
    ads.extend_from_slice(extra);
    raw(&campaigns, &ads, &[advertiser(a, 1_000_000, "Asia/Seoul")])
}

pub fn budget_exhausted() -> RawInput {
    budget_input(&[])
}

/// Seoul day 2024-01-15 of X: spend 1000, 2000, 3000, 4000 (= 80 % of 5000: alert), 5000 (= 100 %: alert, pause).
const X_ALERTS: [(&str, &str, &str, i64, i64, i64); 2] = [
    ("campaign_X", "advertiser_60", "2024-01-15", 80, 4000, 5000),
    ("campaign_X", "advertiser_60", "2024-01-15", 100, 5000, 5000),
];

pub fn check_budget_exhausted(o: &Outputs) {
    assert_alerts(o, &X_ALERTS);
    // T_end = 02:00:09Z = 11:00 in Seoul, same day: X spent 5000 ≥ 5000 → paused, not ranked.
    // m(식품) = 5 clicks / 20 impressions = 0.25; Y: pCTR = (0 + 25)/(10 + 100) = 25/110, score = 950 · 25/110
    // = 215.9090.., alone: cpc = min(950, 100) = 100.
    assert_rankings(o, &[("HOME", "식품", 1, "campaign_Y", 23_750.0 / 110.0, 100)]);
    assert_eq!(o.paused_reason.get("campaign_X"), Some(&Some("BUDGET_EXHAUSTED".to_string())), "{:?}", o.paused_reason);
    assert!(matches!(o.paused_reason.get("campaign_Y"), None | Some(None)), "{:?}", o.paused_reason);
    // 1 000 000 − 5 · 1000.
    assert_eq!(balances(o), vec![("advertiser_60", 995_000)]);
}

pub fn budget_next_day() -> RawInput {
    let x = ad("campaign_X", "advertiser_60", "식품", 1000);
    // 15:00Z = 00:00 of 2024-01-16 in Seoul: a new budget day.
    budget_input(&[x.on("device_b6").click("2024-01-15T15:00:00Z", 1000, Some("x-6"))])
}

pub fn check_budget_next_day(o: &Outputs) {
    // Seoul 2024-01-16: spend 1000 = 20 % of 5000: no new alert.
    assert_alerts(o, &X_ALERTS);
    // T_end = 15:00Z, Seoul day 2024-01-16: X (1000 < 5000) is ranked again.
    // m = 6 clicks / 20 impressions = 0.3, K·m = 30.
    //   X: pCTR = (6 + 30)/(10 + 100) = 36/110, score = 1000 · 36/110 = 327.27..
    //   Y: pCTR = (0 + 30)/110 = 30/110,       score = 950 · 30/110 = 259.09..
    //   cpc_X = min(1000, ceil(259.09../(36/110) = 28500/36 = 791.67) + 10) = 792 + 10 = 802; Y last: 100.
    assert_rankings(
        o,
        &[
            ("HOME", "식품", 1, "campaign_X", 36_000.0 / 110.0, 802),
            ("HOME", "식품", 2, "campaign_Y", 28_500.0 / 110.0, 100),
        ],
    );
    assert_eq!(balances(o), vec![("advertiser_60", 994_000)]);
}

pub fn budget_raised() -> RawInput {
    let mut raw = budget_exhausted();
    // 01:50Z, after the 100 % click at 01:40: the advertiser raises X's budget to 100 000.
    raw.campaign.push_str(&campaign(
        "CAMPAIGN_UPDATED",
        "2024-01-15T01:50:00Z",
        "campaign_X",
        "advertiser_60",
        "HOME",
        "식품",
        1000,
        100_000,
        "ACTIVE",
        "APPROVED",
        None,
    ));
    raw.campaign.push('\n');
    raw
}

pub fn check_budget_raised(o: &Outputs) {
    // The alerts were raised with the budget in force at their clicks (5000).
    assert_alerts(o, &X_ALERTS);
    // At T_end (02:00:09Z) the day's spend 5000 < the final budget 100 000: X is ranked again.
    // m = 0.25 as in `budget_exhausted`: X: pCTR = (5 + 25)/(10 + 100) = 30/110, score = 1000 · 30/110 = 272.72..;
    // Y: 25/110, score 950 · 25/110 = 215.90..; cpc_X = ceil(215.90../(30/110) = 23750/30 = 791.67) + 10 = 802.
    assert_rankings(
        o,
        &[("HOME", "식품", 1, "campaign_X", 30_000.0 / 110.0, 802), ("HOME", "식품", 2, "campaign_Y", 23_750.0 / 110.0, 100)],
    );
}

pub fn budget_time_zones() -> RawInput {
    let (u, s) = ("advertiser_61", "advertiser_62");
    let campaigns = vec![
        approved("2024-01-15T00:00:00Z", "campaign_Z", u, "HOME", "뷰티", 1000, 2000),
        approved("2024-01-15T00:00:00Z", "campaign_W", s, "HOME", "뷰티", 1000, 2000),
    ];
    let (z, w) = (ad("campaign_Z", u, "뷰티", 1000), ad("campaign_W", s, "뷰티", 1000));
    let ads = vec![
        z.on("device_z1").click("2024-01-15T23:30:00Z", 1000, Some("z-1")),
        w.on("device_w1").click("2024-01-15T23:30:00Z", 1000, Some("w-1")),
        z.on("device_z2").click("2024-01-16T00:30:00Z", 1000, Some("z-2")),
        w.on("device_w2").click("2024-01-16T00:30:00Z", 1000, Some("w-2")),
    ];
    raw(&campaigns, &ads, &[advertiser(u, 100_000, "UTC"), advertiser(s, 100_000, "Asia/Seoul")])
}

pub fn check_budget_time_zones(o: &Outputs) {
    // Z (UTC): days 2024-01-15 and 2024-01-16 get 1000 each = 50 %: no alert.
    // W (Seoul): 08:30 and 09:30 of 2024-01-16: 1000 then 2000 = 100 % → both alerts on the second click.
    assert_alerts(
        o,
        &[
            ("campaign_W", "advertiser_62", "2024-01-16", 80, 2000, 2000),
            ("campaign_W", "advertiser_62", "2024-01-16", 100, 2000, 2000),
        ],
    );
    // T_end = 2024-01-16T00:30Z: W paused on its Seoul day; Z (1000 on UTC 2024-01-16) ranked.
    // 뷰티 has no impressions: m = 0.01; Z: pCTR = (2 + 1)/(0 + 100) = 0.03, score 30, alone: cpc 100.
    assert_rankings(o, &[("HOME", "뷰티", 1, "campaign_Z", 30.0, 100)]);
    assert_eq!(balances(o), vec![("advertiser_61", 98_000), ("advertiser_62", 98_000)]);
}

pub fn refund_below_budget() -> RawInput {
    let a = "advertiser_63";
    let v = Ad { ad: "ad_v", ..ad("campaign_V", a, "sports", 1000) };
    let ads = vec![
        v.on("device_v1").click("2024-01-15T01:00:00Z", 1000, Some("v-1")),
        v.on("device_v1").click("2024-01-15T01:00:10Z", 1000, Some("v-2")), // duplicate of v-1
        v.on("device_v2").click("2024-01-15T01:20:00Z", 1000, Some("v-3")),
    ];
    raw(
        &[approved("2024-01-15T00:00:00Z", "campaign_V", a, "HOME", "sports", 1000, 3000)],
        &ads,
        &[advertiser(a, 1_000_000, "Asia/Seoul")],
    )
}

pub fn check_refund_below_budget(o: &Outputs) {
    // v-2 duplicates v-1: compensation at 01:05:00, refund 1000.
    assert_eq!(
        o.compensations,
        vec![compensation(
            "device_v1",
            "ad_v",
            "campaign_V",
            "advertiser_63",
            &["2024-01-15T01:00:00Z", "2024-01-15T01:00:10Z"],
            1000
        )]
    );
    // Day spend = 3 · 1000 − 1000 = 2000 < 3000: not budget-paused at T_end (01:20Z) per the contract's
    // definition, whatever alerts a processing order raised on the way (those are order-dependent: not checked).
    // sports: no impressions, m = 0.01; V: pCTR = (3 + 1)/100 = 0.04, score = 1000 · 0.04 = 40, cpc 100.
    assert_rankings(o, &[("HOME", "sports", 1, "campaign_V", 40.0, 100)]);
    // 1 000 000 − 3000 + 1000.
    assert_eq!(balances(o), vec![("advertiser_63", 998_000)]);
}

pub fn unknown_advertiser() -> RawInput {
    // No advertisers.jsonl at all: advertiser_99 is not registered, so its click is not charged (issue 7).
    let u = ad("campaign_U", "advertiser_99", "식품", 1000);
    raw(
        &[approved("2024-01-15T00:00:00Z", "campaign_U", "advertiser_99", "SEARCH", "식품", 1000, 1000)],
        &[u.on("device_u1").click("2024-01-15T15:30:00Z", 1000, Some("u-1"))],
        &[],
    )
}

pub fn check_unknown_advertiser(o: &Outputs) {
    // Issue 7 changes this case: a click for an advertiser the database does not know is NOT charged (it used
    // to open the account at 0 and charge −1000). It is a dead letter of ad-events with UNKNOWN_ADVERTISER, no
    // ledger row, no balance, and it counts for no budget: no alert, no pause.
    assert!(o.ledger.is_empty(), "{:#?}", o.ledger);
    assert!(balances(o).is_empty(), "{:?}", balances(o));
    assert!(o.alerts.is_empty(), "{:#?}", o.alerts);
    assert_eq!(o.dead_letters.len(), 1, "{:#?}", o.dead_letters);
    assert_eq!(o.dead_letters[0].topic, "ad-events");
    assert!(o.dead_letters[0].reason.starts_with("UNKNOWN_ADVERTISER"), "{}", o.dead_letters[0].reason);
    // The click still happened (performance counts it): 식품 has no impressions, m = 0.01; U: pCTR =
    // (1 + 100 · 0.01) / (0 + 100) = 0.02, score = 1000 · 0.02 = 20; alone, it pays the reserve, 100.
    assert_rankings(o, &[("SEARCH", "식품", 1, "campaign_U", 20.0, 100)]);
}

// ---------------------------------------------------------------------------------------------------------
// A window's CTR above 1: the click of an impression at 10:04:59 lands in the next window.

pub fn cross_window_click() -> RawInput {
    let a = "advertiser_70";
    let campaigns = vec![
        approved("2024-01-15T09:00:00Z", "campaign_P", a, "HOME", "books", 1000, 1_000_000),
        approved("2024-01-15T09:00:00Z", "campaign_Q", a, "CATEGORY", "books", 500, 1_000_000),
    ];
    let p = ad("campaign_P", a, "books", 1000);
    let q = Ad { placement: "CATEGORY", ..ad("campaign_Q", a, "books", 500) };
    let mut ads = vec![
        p.on("device_p0").impression("2024-01-15T10:04:59Z"),
        p.on("device_p0").click("2024-01-15T10:05:01Z", 900, Some("p-click-0")),
        p.on("device_p1").impression("2024-01-15T10:06:00Z"),
        p.on("device_p1").click("2024-01-15T10:06:30Z", 900, Some("p-click-1")),
    ];
    for i in 0..10 {
        ads.push(q.on(&format!("device_q{i}")).impression(&format!("2024-01-15T10:01:{i:02}Z")));
    }
    raw(&campaigns, &ads, &[advertiser(a, 1_000_000, "Asia/Seoul")])
}

pub fn check_cross_window_click(o: &Outputs) {
    // P's windows: [10:00, 10:05) 1 impression, 0 clicks; [10:05, 10:10) 1 impression, 2 clicks (its own and
    // the one of 10:04:59): clicks/impressions = 2, shown as a rate capped at 1; the counts stay 1 and 2.
    let p: Vec<_> = o.metrics.iter().filter(|m| m.campaign_id == "campaign_P").collect();
    let w = |start: &str| {
        p.iter().find(|m| m.window_start == ms(start)).unwrap_or_else(|| panic!("window {start} of P: {p:#?}"))
    };
    let (first, second) = (w("2024-01-15T10:00:00Z"), w("2024-01-15T10:05:00Z"));
    assert_eq!((first.impressions, first.clicks, first.ctr), (1, 0, 0.0), "{first:?}");
    assert_eq!((second.impressions, second.clicks, second.ctr), (1, 2, 1.0), "{second:?}");
    // The ranking's pCTR sums the counts of every closed window, not the capped rates:
    // books: 2 clicks / 12 impressions, m = 1/6, K·m = 100/6.
    //   P: pCTR = (2 + 100/6)/(2 + 100) = 112/612; score = 1000 · 112/612 = 183.006..; alone: cpc 100.
    //   Q: pCTR = (0 + 100/6)/(10 + 100) = 100/660; score = 500 · 100/660 = 75.757..; alone: cpc 100.
    // (From capped windows P would have 1 click: m = 1/12, pCTR = (1 + 100/12)/102, score 91.5..)
    assert_rankings(
        o,
        &[
            ("CATEGORY", "books", 1, "campaign_Q", 50_000.0 / 660.0, 100),
            ("HOME", "books", 1, "campaign_P", 112_000.0 / 612.0, 100),
        ],
    );
}
