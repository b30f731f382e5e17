//! Ranking as pure functions: smoothed pCTR, eligibility, score order and generalized-second-price CPC.
//!
//! - `m` (the prior CTR) = category clicks / category impressions over all closed windows of all the
//!   category's campaigns, or [`RankingConfig::default_prior_ctr`] while the category has no impressions.
//! - `pCTR = (clicks + K·m) / (impressions + K)` with `K` = [`RankingConfig::prior_strength`] (a Beta
//!   prior worth `K` pseudo-impressions).
//! - `score = bid × pCTR`; order by score descending, then higher bid, then campaign id.
//! - Rank `i` pays `min(bid_i, max(reserve, ceil(score_{i+1} / pCTR_i) + increment))`; the last pays
//!   `min(bid, reserve)`.
//!
//! **Arithmetic is exact.** pCTRs are kept as fractions of integers, scores are compared by
//! cross-multiplication and `ceil(score_{i+1} / pCTR_i)` is an integer ceiling division, so
//! `50 × 0.06 / 0.02` is exactly 150 (floating point gives 150.00000000000003 and would charge one won
//! more). Only if a product overflows `u128` (counts beyond ~10¹³) does it fall back to `f64`.
//! `ceil(0 / 0)` (a zero pCTR, possible only when the category has impressions but no clicks) is taken as
//! 0, so such a campaign pays `min(bid, max(reserve, increment))`.

use std::cmp::Ordering;

use rtb_stream::Timestamp;
use serde::{Deserialize, Serialize};

use crate::schema::{ApprovalStatus, CampaignStatus};
use crate::sink::{CampaignRow, Metrics, RankedEntry};

/// Ranking parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RankingConfig {
    /// `K`: pseudo-impressions of the Beta prior (default 100).
    pub prior_strength: u64,
    /// `m` while the category has no impressions (default 0.01; used with 6 decimal places).
    pub default_prior_ctr: f64,
    /// Reserve (floor) price in KRW (default 100).
    pub reserve_price: i64,
    /// GSP increment in KRW (default 10).
    pub increment: i64,
}

impl Default for RankingConfig {
    fn default() -> Self {
        Self { prior_strength: 100, default_prior_ctr: 0.01, reserve_price: 100, increment: 10 }
    }
}

/// An exact non-negative fraction (a CTR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctr {
    num: u128,
    den: u128,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn non_negative(v: i64) -> u128 {
    u128::try_from(v.max(0)).unwrap_or(0)
}

impl Ctr {
    /// `num / den` in lowest terms (`den` = 0 is treated as 1).
    pub fn new(num: u128, den: u128) -> Self {
        let den = den.max(1);
        let g = gcd(num, den).max(1);
        Ctr { num: num / g, den: den / g }
    }
    /// The numerator in lowest terms.
    pub fn numerator(&self) -> u128 {
        self.num
    }
    /// The denominator in lowest terms.
    pub fn denominator(&self) -> u128 {
        self.den
    }
    /// As a float (for display and the cache's score).
    pub fn as_f64(&self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

/// The category prior `m`.
pub fn prior_ctr(category: &Metrics, cfg: &RankingConfig) -> Ctr {
    if category.impressions > 0 {
        Ctr::new(non_negative(category.clicks), non_negative(category.impressions))
    } else {
        let ppm = (cfg.default_prior_ctr.clamp(0.0, 1.0) * 1_000_000.0).round() as u128;
        Ctr::new(ppm, 1_000_000)
    }
}

/// `pCTR = (clicks + K·m) / (impressions + K)`, exactly.
pub fn smoothed_ctr(clicks: i64, impressions: i64, prior: Ctr, cfg: &RankingConfig) -> Ctr {
    let k = u128::from(cfg.prior_strength);
    let num = non_negative(clicks).checked_mul(prior.den).and_then(|a| k.checked_mul(prior.num).and_then(|b| a.checked_add(b)));
    let den = (non_negative(impressions) + k).checked_mul(prior.den);
    match (num, den) {
        (Some(n), Some(d)) => Ctr::new(n, d),
        // Beyond u128: keep 6 significant decimals (never reached at realistic counts).
        _ => {
            let f = (clicks.max(0) as f64 + k as f64 * prior.as_f64()) / (impressions.max(0) as f64 + k as f64);
            Ctr::new((f * 1e12).round() as u128, 1_000_000_000_000)
        }
    }
}

/// Whether a campaign may be ranked at event time `at`: APPROVED, ACTIVE, `effective_from <= at`
/// (absent = from its event's time), and its budget for the day of `at` not exhausted (`budget_exhausted`:
/// the budget monitor's pause rule, evaluated by the caller from the spend counter).
pub fn is_eligible(row: &CampaignRow, at: Timestamp, budget_exhausted: bool) -> bool {
    row.approval_status == ApprovalStatus::Approved
        && row.status == CampaignStatus::Active
        && row.effective_from.unwrap_or(row.updated_at) <= at
        && !budget_exhausted
}

/// The budget monitor's pause rule: the day's spend has reached `pause_at_pct` % of the daily budget
/// (so a budget of 0 is always exhausted).
pub fn budget_exhausted(spend: i64, daily_budget: i64, pause_at_pct: u32) -> bool {
    i128::from(spend) * 100 >= i128::from(daily_budget) * i128::from(pause_at_pct)
}

/// One eligible campaign with its cumulative counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Campaign.
    pub campaign_id: String,
    /// Bid (KRW).
    pub bid_price: i64,
    /// Clicks over its closed windows.
    pub clicks: i64,
    /// Impressions over its closed windows.
    pub impressions: i64,
}

struct Scored {
    c: Candidate,
    pctr: Ctr,
}

/// `bid_a·pctr_a` vs `bid_b·pctr_b`, exactly where it fits in u128.
fn cmp_score(a: &Scored, b: &Scored) -> Ordering {
    let (ba, bb) = (non_negative(a.c.bid_price), non_negative(b.c.bid_price));
    let lhs = ba.checked_mul(a.pctr.num).and_then(|x| x.checked_mul(b.pctr.den));
    let rhs = bb.checked_mul(b.pctr.num).and_then(|x| x.checked_mul(a.pctr.den));
    match (lhs, rhs) {
        (Some(l), Some(r)) => l.cmp(&r),
        _ => (ba as f64 * a.pctr.as_f64()).total_cmp(&(bb as f64 * b.pctr.as_f64())),
    }
}

/// `ceil(score_next / pctr_self)` = `ceil(bid_next · pctr_next / pctr_self)`.
fn price_to_beat(next: &Scored, me: &Scored) -> i64 {
    if me.pctr.num == 0 {
        return 0;
    }
    let bid = non_negative(next.c.bid_price);
    let num = bid.checked_mul(next.pctr.num).and_then(|x| x.checked_mul(me.pctr.den));
    let den = next.pctr.den.checked_mul(me.pctr.num);
    match (num, den) {
        (Some(n), Some(d)) => i64::try_from(n.div_ceil(d)).unwrap_or(i64::MAX),
        _ => (bid as f64 * next.pctr.as_f64() / me.pctr.as_f64()).ceil() as i64,
    }
}

/// Ranks eligible candidates of one placement+category and prices them (see the module docs).
pub fn rank(candidates: Vec<Candidate>, category: &Metrics, cfg: &RankingConfig) -> Vec<RankedEntry> {
    let prior = prior_ctr(category, cfg);
    let mut scored: Vec<Scored> = candidates
        .into_iter()
        .map(|c| {
            let pctr = smoothed_ctr(c.clicks, c.impressions, prior, cfg);
            Scored { c, pctr }
        })
        .collect();
    scored.sort_by(|a, b| {
        cmp_score(b, a).then_with(|| b.c.bid_price.cmp(&a.c.bid_price)).then_with(|| a.c.campaign_id.cmp(&b.c.campaign_id))
    });
    let mut out = Vec::with_capacity(scored.len());
    for (i, s) in scored.iter().enumerate() {
        let bid = s.c.bid_price;
        let cpc = match scored.get(i + 1) {
            Some(next) => {
                let beat = price_to_beat(next, s).saturating_add(cfg.increment);
                bid.min(cfg.reserve_price.max(beat))
            }
            None => bid.min(cfg.reserve_price),
        };
        let pctr = s.pctr.as_f64();
        out.push(RankedEntry {
            rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
            campaign_id: s.c.campaign_id.clone(),
            bid_price: bid,
            pctr,
            score: bid as f64 * pctr,
            cpc,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Placement;

    fn cand(id: &str, bid: i64, clicks: i64, impressions: i64) -> Candidate {
        Candidate { campaign_id: id.into(), bid_price: bid, clicks, impressions }
    }

    fn category(impressions: i64, clicks: i64) -> Metrics {
        Metrics { impressions, clicks, ..Metrics::default() }
    }

    #[test]
    fn smoothed_ctr_matches_hand_computation() {
        let cfg = RankingConfig::default();
        let m = prior_ctr(&category(10_000, 200), &cfg); // 0.02
        assert_eq!((m.numerator(), m.denominator()), (1, 50));
        // (30 + 100·0.02) / (900 + 100) = 32/1000
        assert_eq!(smoothed_ctr(30, 900, m, &cfg), Ctr::new(32, 1000));
        // A new campaign gets exactly the prior.
        assert_eq!(smoothed_ctr(0, 0, m, &cfg), m);
        // Empty category: m = 0.01, so a new campaign has pCTR 0.01.
        let m0 = prior_ctr(&Metrics::default(), &cfg);
        assert_eq!(smoothed_ctr(0, 0, m0, &cfg), Ctr::new(1, 100));
        // 4 impressions, 0 clicks is shrunk towards m, not to 0: (0 + 1) / 104.
        assert_eq!(smoothed_ctr(0, 4, m0, &cfg), Ctr::new(1, 104));
    }

    #[test]
    fn gsp_prices_for_four_campaigns_hand_computed() {
        // m = 0.02. pCTRs: a 32/1000, b (5+2)/500 = 0.014, c 2/100 = 0.02, d (10+2)/200 = 0.06.
        // Scores: a 1000·0.032 = 32, b 1500·0.014 = 21, c 800·0.02 = 16, d 50·0.06 = 3.
        let ranked = rank(
            vec![cand("c", 800, 0, 0), cand("d", 50, 10, 100), cand("a", 1000, 30, 900), cand("b", 1500, 5, 400)],
            &category(10_000, 200),
            &RankingConfig::default(),
        );
        let got: Vec<(u32, &str, i64)> = ranked.iter().map(|e| (e.rank, e.campaign_id.as_str(), e.cpc)).collect();
        // a: ceil(21/0.032) = ceil(656.25) = 657, +10 = 667.
        // b: ceil(16/0.014) = ceil(1142.857…) = 1143, +10 = 1153.
        // c: 3/0.02 = 150 exactly, +10 = 160 (floating point would say 161).
        // d: last, pays min(bid 50, reserve 100) = 50.
        assert_eq!(got, vec![(1, "a", 667), (2, "b", 1153), (3, "c", 160), (4, "d", 50)]);
        assert!((ranked[0].score - 32.0).abs() < 1e-9);
        assert!((ranked[1].pctr - 0.014).abs() < 1e-12);
    }

    #[test]
    fn cpc_never_exceeds_bid_and_never_goes_below_reserve() {
        let cfg = RankingConfig::default();
        // Equal pCTR (new campaigns, m = 0.01): a bids 1000, b bids 995 → a would pay 995 + 10 = 1005 > bid.
        let r = rank(vec![cand("a", 1000, 0, 0), cand("b", 995, 0, 0)], &Metrics::default(), &cfg);
        assert_eq!((r[0].cpc, r[1].cpc), (1000, 100));
        // Far below: b bids 20 → a pays max(reserve 100, 20 + 10) = 100.
        let r = rank(vec![cand("a", 1000, 0, 0), cand("b", 20, 0, 0)], &Metrics::default(), &cfg);
        assert_eq!((r[0].cpc, r[1].cpc), (100, 20), "the last pays the reserve, never above its bid");
        // Daangn's example: bid 300, next 250 with equal quality → 260.
        let r = rank(vec![cand("a", 300, 0, 0), cand("b", 250, 0, 0)], &Metrics::default(), &cfg);
        assert_eq!(r[0].cpc, 260);
    }

    #[test]
    fn ties_break_by_higher_bid_then_campaign_id() {
        // e: 1000 × 0.02 = 20; f: 2000 × 0.01 = 20 (pCTRs built from counts with m = 0.01).
        // e: (clicks + 1)/(impr + 100) = 0.02 with clicks 3, impr 100: 4/200. f: new campaign 0.01.
        let cfg = RankingConfig::default();
        let r = rank(
            vec![cand("g", 2000, 0, 0), cand("e", 1000, 3, 100), cand("f", 2000, 0, 0)],
            &Metrics::default(),
            &cfg,
        );
        let ids: Vec<&str> = r.iter().map(|e| e.campaign_id.as_str()).collect();
        assert_eq!(ids, vec!["f", "g", "e"]);
        // f pays ceil(20 / 0.01) + 10 = 2010 → capped at its bid 2000; g pays ceil(20/0.01)+10 = 2010 → 2000.
        assert_eq!(r.iter().map(|e| e.cpc).collect::<Vec<_>>(), vec![2000, 2000, 100]);
    }

    #[test]
    fn zero_ctr_category_does_not_divide_by_zero() {
        // The category has impressions but no clicks: m = 0, every new campaign has pCTR 0.
        let cfg = RankingConfig::default();
        let r = rank(vec![cand("a", 500, 0, 10), cand("b", 400, 0, 0)], &category(1_000, 0), &cfg);
        assert_eq!(r.iter().map(|e| (e.campaign_id.as_str(), e.cpc)).collect::<Vec<_>>(), vec![("a", 100), ("b", 100)]);
        assert_eq!(r[0].score, 0.0);
    }

    #[test]
    fn single_and_empty_rankings() {
        let cfg = RankingConfig { reserve_price: 70, ..RankingConfig::default() };
        assert!(rank(Vec::new(), &Metrics::default(), &cfg).is_empty());
        let r = rank(vec![cand("only", 1500, 0, 0)], &Metrics::default(), &cfg);
        assert_eq!((r[0].rank, r[0].cpc), (1, 70));
    }

    #[test]
    fn gsp_property_holds_against_a_float_model() {
        // For many generated rankings: cpc ≤ bid, cpc ≥ min(bid, reserve), scores non-increasing, and the
        // winner's price times its pCTR is at least the next score (it would still win at its price).
        let cfg = RankingConfig::default();
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        for _ in 0..300 {
            let n = 1 + next(6) as usize;
            let cands: Vec<Candidate> = (0..n)
                .map(|i| cand(&format!("c{i}"), 50 + next(3000) as i64, next(50) as i64, next(3000) as i64))
                .collect();
            let r = rank(cands, &category(50_000, next(2000) as i64 + 1), &cfg);
            for (i, e) in r.iter().enumerate() {
                assert!(e.cpc <= e.bid_price && e.cpc >= e.bid_price.min(cfg.reserve_price), "{e:?}");
                if let Some(nx) = r.get(i + 1) {
                    assert!(e.score + 1e-9 >= nx.score);
                    if e.cpc < e.bid_price {
                        assert!(e.cpc as f64 * e.pctr + 1e-9 >= nx.score, "{e:?} vs {nx:?}");
                    }
                }
            }
        }
    }

    fn row(f: impl FnOnce(&mut CampaignRow)) -> CampaignRow {
        let mut r = CampaignRow {
            campaign_id: "c".into(),
            advertiser_id: "a".into(),
            product_id: None,
            placement: Placement::Home,
            category: "x".into(),
            bid_price: 100,
            daily_budget: 1000,
            status: CampaignStatus::Active,
            approval_status: ApprovalStatus::Approved,
            effective_from: Some(1_000),
            rtb_impact: None,
            budget_paused_day: None,
            updated_at: 0,
        };
        f(&mut r);
        r
    }

    #[test]
    fn eligibility_requires_every_condition() {
        assert!(is_eligible(&row(|_| {}), 1_000, false), "effective_from == event time is eligible");
        assert!(!is_eligible(&row(|_| {}), 999, false));
        assert!(!is_eligible(&row(|r| r.approval_status = ApprovalStatus::Pending), 5_000, false));
        assert!(!is_eligible(&row(|r| r.approval_status = ApprovalStatus::Rejected), 5_000, false));
        assert!(!is_eligible(&row(|r| r.status = CampaignStatus::Paused), 5_000, false));
        assert!(!is_eligible(&row(|r| r.status = CampaignStatus::Deleted), 5_000, false));
        assert!(!is_eligible(&row(|_| {}), 5_000, true), "budget exhausted");
        // No effective_from: eligible from the time of its event.
        assert!(is_eligible(&row(|r| (r.effective_from, r.updated_at) = (None, 70)), 70, false));
        assert!(!is_eligible(&row(|r| (r.effective_from, r.updated_at) = (None, 70)), 69, false));
    }

    #[test]
    fn budget_rule_is_spend_at_or_above_the_threshold() {
        assert!(!budget_exhausted(9_999, 10_000, 100));
        assert!(budget_exhausted(10_000, 10_000, 100));
        assert!(budget_exhausted(8_000, 10_000, 80));
        assert!(budget_exhausted(0, 0, 100), "a zero budget is always exhausted");
    }
}
