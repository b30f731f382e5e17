//! A plain batch implementation of REPLAY-SEMANTICS.md: every output recomputed from the whole valid input at
//! once (sorting and scanning, no streaming, no watermarks). It is the oracle the replay is compared with, so
//! it is written for obviousness, not speed.

use std::collections::{BTreeMap, BTreeSet};

use super::input::{AdEvent, AdKind, CampaignEvent, Inputs};
use super::murmur2::partition;
use super::outputs::{AlertRow, CompensationRow, ConversionRow, DeadRow, LedgerRow, MetricRow, Outputs, RankingRow};
use super::timefmt::{local_day, zone, Ms, DAY, FIVE_MIN, HOUR};

/// Pseudo-impressions of the pCTR prior.
pub const K: f64 = 100.0;
/// Category CTR used while a category has no impressions.
pub const DEFAULT_M: f64 = 0.01;
/// Reserve price, KRW.
pub const RESERVE: i64 = 100;
/// GSP increment, KRW.
pub const INCREMENT: i64 = 10;
pub use super::input::AD_PARTITIONS;

/// Spend of one campaign on one local day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaySpend {
    /// Σ charges of the day's clicks.
    pub charges: i64,
    /// Σ refunds of compensations timed on that day.
    pub refunds: i64,
    /// Every daily_budget that may be in force at one of the day's clicks (see [`Model::alert_expectation`]).
    pub budgets: BTreeSet<i64>,
}

impl DaySpend {
    /// Charges − refunds.
    pub fn spend(&self) -> i64 {
        self.charges - self.refunds
    }
}

/// What any processing order must produce for one (campaign, day, level) alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertExpect {
    /// The alert must be raised.
    Must,
    /// The alert can not be raised.
    MustNot,
    /// Depends on processing order (refunds or budget changes around the threshold).
    Either,
}

/// Everything the model computes.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// The outputs, in the order of the replay's files.
    pub out: Outputs,
    /// (campaign_id, local day) → spend.
    pub spend: BTreeMap<(String, String), DaySpend>,
    /// Max timestamp over all valid events.
    pub t_end: Option<Ms>,
    /// (campaign_id, clicks, impressions) totals over all windows.
    pub totals: BTreeMap<String, (i64, i64)>,
    /// Opening balance per advertiser of advertisers.jsonl.
    pub openings: BTreeMap<String, i64>,
}

impl Model {
    /// What must hold of the alert (campaign, day, level) whatever order the replay processed clicks and
    /// refunds in: once the last charge of the day is processed, the counter is at least the final spend, and
    /// it never exceeds the sum of charges.
    pub fn alert_expectation(&self, campaign: &str, day: &str, level: i64) -> AlertExpect {
        let Some(d) = self.spend.get(&(campaign.to_string(), day.to_string())) else {
            return AlertExpect::MustNot;
        };
        let (Some(&min_b), Some(&max_b)) = (d.budgets.first(), d.budgets.last()) else {
            return AlertExpect::MustNot;
        };
        if d.spend() * 100 >= level * max_b {
            AlertExpect::Must
        } else if d.charges * 100 < level * min_b {
            AlertExpect::MustNot
        } else {
            AlertExpect::Either
        }
    }
}

/// The ad-events that count: an event whose event_id was seen before is a redelivery (same content) or
/// a reused id (different content); neither counts again. Returns them and the reused ones.
fn first_per_event_id(ads: &[AdEvent]) -> (Vec<&AdEvent>, Vec<&AdEvent>) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let (mut once, mut reused) = (Vec::new(), Vec::new());
    for a in ads {
        match &a.event_id {
            None => once.push(a),
            Some(id) => match seen.get(id.as_str()) {
                None => {
                    seen.insert(id, &a.content);
                    once.push(a);
                }
                Some(&content) if content == a.content => {}
                Some(_) => reused.push(a),
            },
        }
    }
    (once, reused)
}

/// Issue 7: a charge (or refund) is booked only for an advertiser of advertisers.jsonl (the only way the
/// replay registers accounts), and not for a campaign whose event in force belongs to another advertiser.
fn unbillable(advertiser: &str, campaign: &str, ts: Ms, openings: &BTreeMap<String, i64>, history: &History) -> Option<String> {
    if !openings.contains_key(advertiser) {
        return Some(format!("UNKNOWN_ADVERTISER: advertiser `{advertiser}`"));
    }
    match history.get(campaign).and_then(|h| in_force(h, ts)) {
        Some(e) if e.advertiser_id != advertiser => Some(format!("CAMPAIGN_ADVERTISER_MISMATCH: campaign `{campaign}`")),
        _ => None,
    }
}

/// Runs the model over validated input.
pub fn run(inp: &Inputs) -> Model {
    let mut m = Model::default();
    let (ads_once, reused) = first_per_event_id(&inp.ads);
    let all_clicks: Vec<&AdEvent> = ads_once.iter().copied().filter(|a| a.kind == AdKind::Click).collect();
    m.out.dead_letters = inp
        .dead
        .iter()
        .map(|d| DeadRow { topic: d.topic.to_string(), reason: d.reason.clone(), payload: d.payload.clone() })
        .collect();
    m.openings = inp.advertisers.iter().map(|a| (a.advertiser_id.clone(), a.balance)).collect();
    let history = campaign_history(&inp.campaigns);
    let dead = |topic: &str, reason: String| DeadRow { topic: topic.to_string(), reason, payload: String::new() };
    for a in reused.iter().filter(|a| a.kind == AdKind::Click) {
        m.out.dead_letters.push(dead("ad-events", format!("EVENT_ID_REUSED: {:?}", a.event_id)));
    }
    // Clicks that may be charged (the balance worker dead-letters the others; the budget skips them).
    let mut clicks: Vec<&AdEvent> = Vec::new();
    for k in &all_clicks {
        match unbillable(&k.advertiser_id, &k.campaign_id, k.ts, &m.openings, &history) {
            Some(reason) => m.out.dead_letters.push(dead("ad-events", reason)),
            None => clicks.push(k),
        }
    }
    m.out.metrics = metrics(&ads_once);
    let (conversions, unattributed) = conversions(inp, &all_clicks);
    m.out.conversions = conversions;
    m.out.unattributed = Some(unattributed);
    // Duplicate detection sees every click once; the refund of a window is booked under the same rule.
    m.out.compensations = compensations(&all_clicks);
    let mut refunds: Vec<CompensationRow> = Vec::new();
    for c in &m.out.compensations {
        match unbillable(&c.advertiser_id, &c.campaign_id, c.timestamp, &m.openings, &history) {
            Some(reason) => m.out.dead_letters.push(dead("compensation-events", reason)),
            None => refunds.push(c.clone()),
        }
    }
    m.out.ledger = ledger(&clicks, &refunds);
    m.out.balances = balances(&m.openings, &m.out.ledger);
    let tz_of = |adv: &str| {
        zone(
            inp.advertisers
                .iter()
                .rev()
                .find(|a| a.advertiser_id == adv)
                .map_or("Asia/Seoul", |a| a.time_zone.as_str()),
        )
    };
    m.spend = spend(&clicks, &refunds, &history, &tz_of);
    m.out.alerts = alerts(&clicks, &refunds, &history, &tz_of);
    m.t_end = inp
        .campaigns
        .iter()
        .map(|c| c.ts)
        .chain(inp.ads.iter().map(|a| a.ts))
        .chain(inp.conversions.iter().map(|c| c.ts))
        .max();
    for a in &ads_once {
        let e = m.totals.entry(a.campaign_id.clone()).or_insert((0, 0));
        match a.kind {
            AdKind::Click => e.0 += 1,
            AdKind::Impression => e.1 += 1,
            AdKind::Conversion => {}
        }
    }
    if let Some(t_end) = m.t_end {
        let (rankings, paused) = rankings(inp, &history, &m.totals, &m.spend, t_end, &tz_of);
        m.out.rankings = rankings;
        m.out.paused_reason =
            history.keys().map(|c| (c.clone(), paused.contains(c).then(|| "BUDGET_EXHAUSTED".to_string()))).collect();
    }
    m
}

fn metrics(ads: &[&AdEvent]) -> Vec<MetricRow> {
    // (campaign, window start) → [impressions, clicks, conversions, spend, revenue]
    let mut acc: BTreeMap<(String, Ms), [i64; 5]> = BTreeMap::new();
    for a in ads {
        let start = a.ts.div_euclid(FIVE_MIN) * FIVE_MIN;
        let e = acc.entry((a.campaign_id.clone(), start)).or_default();
        match a.kind {
            AdKind::Impression => e[0] += 1,
            AdKind::Click => {
                e[1] += 1;
                e[3] += a.actual_price;
            }
            AdKind::Conversion => {
                e[2] += 1;
                e[4] += a.revenue;
            }
        }
    }
    acc.into_iter()
        .map(|((campaign_id, start), [imp, clk, conv, spend, rev])| MetricRow {
            campaign_id,
            window_start: start,
            window_end: start + FIVE_MIN,
            impressions: imp,
            clicks: clk,
            conversions: conv,
            spend,
            revenue: rev,
            // A window's rates are capped at 1 (README, metrics.jsonl); the counts are not.
            ctr: if imp == 0 { 0.0 } else { (clk as f64 / imp as f64).min(1.0) },
            cvr: if clk == 0 { 0.0 } else { (conv as f64 / clk as f64).min(1.0) },
        })
        .collect()
}

fn conversions(inp: &Inputs, clicks: &[&AdEvent]) -> (Vec<ConversionRow>, i64) {
    // The earliest (ts, file position) event of each order.
    let mut first: BTreeMap<&str, (Ms, usize)> = BTreeMap::new();
    for (pos, c) in inp.conversions.iter().enumerate() {
        let e = first.entry(c.order_id.as_str()).or_insert((c.ts, pos));
        if (c.ts, pos) < *e {
            *e = (c.ts, pos);
        }
    }
    let mut rows = Vec::new();
    let mut unattributed = 0;
    for (_, (_, pos)) in first {
        let c = &inp.conversions[pos];
        // Last click wins: greatest ts, ties by the later position in the file (clicks are in file order).
        let best = clicks
            .iter()
            .enumerate()
            .filter(|(_, k)| {
                k.device_id == c.device_id
                    && k.product_id.as_deref() == Some(c.product_id.as_str())
                    && k.ts >= c.ts - DAY
                    && k.ts <= c.ts
            })
            .max_by_key(|(i, k)| (k.ts, *i));
        match best {
            Some((_, k)) => rows.push(ConversionRow {
                order_id: c.order_id.clone(),
                device_id: c.device_id.clone(),
                product_id: c.product_id.clone(),
                campaign_id: k.campaign_id.clone(),
                ad_id: k.ad_id.clone(),
                advertiser_id: k.advertiser_id.clone(),
                click_timestamp: k.ts,
                conversion_timestamp: c.ts,
                revenue_amount: c.revenue,
                conversion_type: c.conversion_type.clone(),
            }),
            None => unattributed += 1,
        }
    }
    (rows, unattributed)
}

fn compensations(clicks: &[&AdEvent]) -> Vec<CompensationRow> {
    let mut groups: BTreeMap<(&str, &str), Vec<(Ms, usize)>> = BTreeMap::new();
    for (i, k) in clicks.iter().enumerate() {
        groups.entry((k.device_id.as_str(), k.ad_id.as_str())).or_default().push((k.ts, i));
    }
    let mut rows = Vec::new();
    for mut group in groups.into_values() {
        group.sort();
        let mut windows: Vec<Vec<usize>> = Vec::new();
        let mut t0 = Ms::MIN;
        for (ts, i) in group {
            match windows.last_mut() {
                Some(w) if ts < t0 + FIVE_MIN => w.push(i),
                _ => {
                    t0 = ts;
                    windows.push(vec![i]);
                }
            }
        }
        for w in windows.into_iter().filter(|w| w.len() >= 2) {
            let first = clicks[w[0]];
            rows.push(CompensationRow {
                timestamp: first.ts + FIVE_MIN,
                advertiser_id: first.advertiser_id.clone(),
                campaign_id: first.campaign_id.clone(),
                ad_id: first.ad_id.clone(),
                device_id: first.device_id.clone(),
                duplicate_click_count: w.len() as i64,
                refund_amount: w[1..].iter().map(|&i| clicks[i].actual_price).sum(),
                original_click_timestamps: w.iter().map(|&i| clicks[i].ts).collect(),
                detection_window: "5_MINUTES".into(),
                reason: "DUPLICATE_CLICK_DETECTED".into(),
                compensation_type: "BALANCE_REFUND".into(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.device_id, &a.ad_id, a.timestamp).cmp(&(&b.device_id, &b.ad_id, b.timestamp)));
    rows
}

/// The ledger key of a click: `charge:id:` + its event_id, else `charge:src:` + its source coordinates
/// in the log, `ad-events/{partition}/{offset}` (issue 7: system keys live in namespaces no client id can
/// reach).
pub fn charge_key(click: &AdEvent) -> String {
    match &click.event_id {
        Some(id) => format!("charge:id:{id}"),
        None => format!("charge:src:ad-events/{}/{}", partition(&click.device_id, AD_PARTITIONS), click.offset),
    }
}

/// The refund key of a duplicate-click window: `refund:{device}/{ad}/{window start ms}`, `%` and `/` in
/// the ids escaped as `%25` and `%2F`.
pub fn refund_key(device_id: &str, ad_id: &str, t0: Ms) -> String {
    let esc = |s: &str| s.replace('%', "%25").replace('/', "%2F");
    format!("refund:{}/{}/{t0}", esc(device_id), esc(ad_id))
}

fn ledger(clicks: &[&AdEvent], comps: &[CompensationRow]) -> Vec<LedgerRow> {
    let mut rows: BTreeMap<String, LedgerRow> = BTreeMap::new();
    for k in clicks {
        let key = charge_key(k);
        // Idempotent: a key seen before is not charged again.
        rows.entry(key.clone()).or_insert(LedgerRow {
            idempotency_key: key,
            advertiser_id: k.advertiser_id.clone(),
            campaign_id: k.campaign_id.clone(),
            entry_type: "CHARGE".into(),
            amount: k.actual_price,
        });
    }
    for c in comps {
        let t0 = c.original_click_timestamps[0];
        let key = refund_key(&c.device_id, &c.ad_id, t0);
        rows.entry(key.clone()).or_insert(LedgerRow {
            idempotency_key: key,
            advertiser_id: c.advertiser_id.clone(),
            campaign_id: c.campaign_id.clone(),
            entry_type: "REFUND".into(),
            amount: c.refund_amount,
        });
    }
    rows.into_values().collect()
}

fn balances(openings: &BTreeMap<String, i64>, ledger: &[LedgerRow]) -> BTreeMap<String, i64> {
    let mut b = openings.clone();
    for l in ledger {
        let e = b.entry(l.advertiser_id.clone()).or_insert(0);
        match l.entry_type.as_str() {
            "CHARGE" => *e -= l.amount,
            _ => *e += l.amount,
        }
    }
    b
}

/// Each campaign's events sorted by (timestamp, file line).
fn campaign_history(events: &[CampaignEvent]) -> BTreeMap<String, Vec<&CampaignEvent>> {
    let mut h: BTreeMap<String, Vec<&CampaignEvent>> = BTreeMap::new();
    for e in events {
        h.entry(e.campaign_id.clone()).or_default().push(e);
    }
    for v in h.values_mut() {
        v.sort_by_key(|e| (e.ts, e.line));
    }
    h
}

/// The campaign's latest event at or before `ts`.
fn in_force<'a>(history: &[&'a CampaignEvent], ts: Ms) -> Option<&'a CampaignEvent> {
    history.iter().rev().find(|e| e.ts <= ts).copied()
}

type History<'a> = BTreeMap<String, Vec<&'a CampaignEvent>>;

fn spend(
    clicks: &[&AdEvent],
    comps: &[CompensationRow],
    history: &History,
    tz_of: &dyn Fn(&str) -> chrono_tz::Tz,
) -> BTreeMap<(String, String), DaySpend> {
    let mut s: BTreeMap<(String, String), DaySpend> = BTreeMap::new();
    for k in clicks {
        let day = local_day(k.ts, tz_of(&k.advertiser_id));
        let d = s.entry((k.campaign_id.clone(), day)).or_default();
        d.charges += k.actual_price;
        if let Some(h) = history.get(&k.campaign_id) {
            // The budget in force by event time, and any other one the replay may see while the click is
            // in flight (arrival disorder is bounded by the out-of-orderness, 1 h).
            d.budgets.extend(in_force(h, k.ts).map(|e| e.daily_budget));
            d.budgets.extend(h.iter().filter(|e| e.ts >= k.ts - HOUR && e.ts <= k.ts + HOUR).map(|e| e.daily_budget));
        }
    }
    for c in comps {
        let day = local_day(c.timestamp, tz_of(&c.advertiser_id));
        s.entry((c.campaign_id.clone(), day)).or_default().refunds += c.refund_amount;
    }
    s
}

fn alerts(
    clicks: &[&AdEvent],
    comps: &[CompensationRow],
    history: &History,
    tz_of: &dyn Fn(&str) -> chrono_tz::Tz,
) -> Vec<AlertRow> {
    // Event-time order: (ts, 0 = refund / 1 = charge, position); refunds at the same instant go first.
    let mut ops: Vec<(Ms, u8, usize)> = comps.iter().enumerate().map(|(i, c)| (c.timestamp, 0, i)).collect();
    ops.extend(clicks.iter().enumerate().map(|(i, k)| (k.ts, 1, i)));
    ops.sort();
    let mut running: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut fired: BTreeSet<(String, String, i64)> = BTreeSet::new();
    let mut rows = Vec::new();
    for (ts, kind, i) in ops {
        if kind == 0 {
            let c = &comps[i];
            let day = local_day(ts, tz_of(&c.advertiser_id));
            *running.entry((c.campaign_id.clone(), day)).or_insert(0) -= c.refund_amount;
            continue;
        }
        let k = clicks[i];
        let day = local_day(ts, tz_of(&k.advertiser_id));
        let spend = running.entry((k.campaign_id.clone(), day.clone())).or_insert(0);
        *spend += k.actual_price;
        let Some(budget) = history.get(&k.campaign_id).and_then(|h| in_force(h, ts)).map(|e| e.daily_budget) else {
            continue;
        };
        for level in [80, 100] {
            if *spend * 100 >= level * budget && fired.insert((k.campaign_id.clone(), day.clone(), level)) {
                rows.push(AlertRow {
                    campaign_id: k.campaign_id.clone(),
                    advertiser_id: k.advertiser_id.clone(),
                    day: day.clone(),
                    level,
                    spend: *spend,
                    daily_budget: budget,
                    timestamp: Some(ts),
                });
            }
        }
    }
    rows.sort_by(|a, b| (&a.campaign_id, &a.day, a.level).cmp(&(&b.campaign_id, &b.day, b.level)));
    rows
}

/// pCTR of a campaign with `clicks`/`impressions` in a category of mean CTR `m`.
pub fn pctr(clicks: i64, impressions: i64, m: f64) -> f64 {
    (clicks as f64 + K * m) / (impressions as f64 + K)
}

/// GSP cost per click of a slot of `bid`/`pctr` followed by a slot of score `next_score` (None: last).
pub fn gsp_cpc(bid: i64, pctr: f64, next_score: Option<f64>) -> i64 {
    match next_score {
        Some(next) => bid.min(RESERVE.max((next / pctr).ceil() as i64 + INCREMENT)),
        None => bid.min(RESERVE),
    }
}

/// A campaign competing in one placement+category.
struct Candidate {
    score: f64,
    bid: i64,
    id: String,
    pctr: f64,
}

fn rankings(
    inp: &Inputs,
    history: &History,
    totals: &BTreeMap<String, (i64, i64)>,
    spend: &BTreeMap<(String, String), DaySpend>,
    t_end: Ms,
    tz_of: &dyn Fn(&str) -> chrono_tz::Tz,
) -> (Vec<RankingRow>, BTreeSet<String>) {
    // m per category: over the campaigns whose ad-events carry that category.
    let mut cat_campaigns: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in &inp.ads {
        cat_campaigns.entry(a.category.as_str()).or_default().insert(a.campaign_id.as_str());
    }
    let category_m = |cat: &str| -> f64 {
        let (mut clk, mut imp) = (0i64, 0i64);
        for c in cat_campaigns.get(cat).into_iter().flatten() {
            let (cl, im) = totals.get(*c).copied().unwrap_or((0, 0));
            clk += cl;
            imp += im;
        }
        if imp == 0 {
            DEFAULT_M
        } else {
            clk as f64 / imp as f64
        }
    };
    let mut paused = BTreeSet::new();
    let mut groups: BTreeMap<(String, String), Vec<Candidate>> = BTreeMap::new();
    for (id, h) in history {
        let Some(last) = h.last() else { continue };
        let day = local_day(t_end, tz_of(&last.advertiser_id));
        let day_spend = spend.get(&(id.clone(), day)).map_or(0, DaySpend::spend);
        if day_spend >= last.daily_budget {
            paused.insert(id.clone());
        }
        let eligible = last.approval == "APPROVED"
            && last.status == "ACTIVE"
            && last.effective_from <= t_end
            && !paused.contains(id);
        if !eligible {
            continue;
        }
        let (clk, imp) = totals.get(id).copied().unwrap_or((0, 0));
        let p = pctr(clk, imp, category_m(&last.category));
        let score = last.bid as f64 * p;
        groups.entry((last.placement.clone(), last.category.clone())).or_default().push(Candidate {
            score,
            bid: last.bid,
            id: id.clone(),
            pctr: p,
        });
    }
    let mut rows = Vec::new();
    for ((placement, category), mut g) in groups {
        g.sort_by(|a, b| b.score.total_cmp(&a.score).then(b.bid.cmp(&a.bid)).then(a.id.cmp(&b.id)));
        for (i, c) in g.iter().enumerate() {
            rows.push(RankingRow {
                placement: placement.clone(),
                category: category.clone(),
                rank: i as i64 + 1,
                campaign_id: c.id.clone(),
                score: c.score,
                cpc: gsp_cpc(c.bid, c.pctr, g.get(i + 1).map(|n| n.score)),
            });
        }
    }
    (rows, paused)
}
