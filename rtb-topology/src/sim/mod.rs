//! Traffic simulator: plays the API server of SPEC §1.
//!
//! It is deterministic for a given [`SimConfig`] (seed included): the same configuration always yields the
//! same events in the same arrival order, which is what lets a run killed at any moment be restarted and
//! still produce exactly the ledger of an uninterrupted run.
//!
//! What it produces, on a simulated clock:
//! - campaigns created, approved (a few rejected), updated (bid and budget changes), paused and resumed by
//!   their advertisers, across the four placements and a set of categories;
//! - impressions for the top slots of an auction per placement+category, clicks with each campaign's hidden
//!   true CTR and position bias, priced by the generalized second-price ranking of the moment (see
//!   [`PriceModel`]), duplicate clicks (double taps within seconds, and repeats minutes later);
//! - conversions hours after clicks (some after the 24 h attribution window, some with no click at all,
//!   some orders reported twice), as `conversion-events` and as `CONVERSION` ad-events;
//! - out-of-order arrival (bounded jitter), late arrivals (minutes behind), and a few malformed events.

mod model;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

pub use model::{AuctionCandidate, PriceModel, Slot};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The topics the simulator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimTopic {
    /// `campaign-events`.
    Campaign,
    /// `ad-events`.
    Ad,
    /// `conversion-events`.
    Conversion,
}

impl SimTopic {
    /// The topic's name in the CPC topology.
    pub fn name(self) -> &'static str {
        match self {
            SimTopic::Campaign => "campaign-events",
            SimTopic::Ad => "ad-events",
            SimTopic::Conversion => "conversion-events",
        }
    }
}

/// One generated event, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEvent {
    /// Sequence number (0-based, dense, in arrival order).
    pub seq: u64,
    /// Destination topic.
    pub topic: SimTopic,
    /// Partitioning key.
    pub key: String,
    /// JSON payload (or deliberately malformed bytes).
    pub payload: Vec<u8>,
    /// Event time carried by the event.
    pub timestamp: Millis,
    /// Simulated arrival time.
    pub arrival: Millis,
}

/// An advertiser account with its opening balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Advertiser {
    /// `advertiser_id`.
    pub advertiser_id: String,
    /// Opening balance, KRW.
    pub balance: i64,
    /// IANA time zone of the account (its budget day).
    pub time_zone: String,
}

/// Simulator settings. All rates are probabilities in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// RNG seed.
    pub seed: u64,
    /// Size factor: 8·scale advertisers, 40·scale campaigns, 2 000·scale devices. The campaigns share
    /// [`slots`]`(scale)` placement+category slots (8 at scale 1, 8·scale up to all 24), five to a slot or
    /// more, so every auction has competitors and GSP prices are set by them, not by the reserve.
    pub scale: u32,
    /// Number of ad-events to produce (impressions, clicks and conversion ad-events).
    pub ad_events: u64,
    /// Simulated start (default 2025-03-10T00:00:00Z).
    pub start: Millis,
    /// Mean simulated milliseconds between two ad-events: the pace of the simulated clock. The timeline
    /// never depends on `ad_events`, so event *i* (its time and content) depends only on the seed, the
    /// scale, the pace and *i*, and a run with more events continues one with fewer (see [`SimConfig::spanning`]
    /// to fit a given number of events into a given span). Default: 30 h over 100 000 ad-events.
    pub pace_ms: f64,
    /// Share of clicks followed by duplicate clicks.
    pub duplicate_rate: f64,
    /// Share of events that are malformed.
    pub malformed_rate: f64,
    /// Share of events that arrive minutes late.
    pub late_rate: f64,
    /// Bound of the arrival jitter (out-of-order within this many ms).
    pub max_disorder_ms: i64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            scale: 1,
            ad_events: 200_000,
            start: 1_741_564_800_000, // 2025-03-10T00:00:00Z
            pace_ms: DEFAULT_PACE_MS,
            duplicate_rate: 0.04,
            malformed_rate: 0.001,
            late_rate: 0.002,
            max_disorder_ms: 2_000,
        }
    }
}

/// Default pace: 100 000 ad-events span 30 simulated hours (crossing a Seoul midnight).
pub const DEFAULT_PACE_MS: f64 = 30.0 * 3_600_000.0 / 100_000.0;

impl SimConfig {
    /// The pace at which `ad_events` ad-events span about `span_ms` of simulated time (for a one-off
    /// generation of a fixed size, such as `rtb generate --hours`).
    pub fn spanning(mut self, span_ms: i64) -> Self {
        self.pace_ms = span_ms.max(1) as f64 / self.ad_events.max(1) as f64;
        self
    }
}

/// The placements of SPEC §3.
pub const PLACEMENTS: [&str; 4] = ["HOME", "CATEGORY", "PRODUCT_DETAIL", "SEARCH"];
/// Categories used by the simulator.
pub const CATEGORIES: [&str; 6] =
    ["전자제품/컴퓨터", "패션/의류", "식품", "뷰티", "electronics", "sports"];

/// Campaigns per placement+category slot, at least (a slot keeps more than two eligible competitors even
/// when one campaign is rejected and another paused).
pub const CAMPAIGNS_PER_SLOT: usize = 5;

/// The placement+category slots the simulator's campaigns use at `scale`: `8·scale` of the 24, at most
/// 24, so that each holds [`CAMPAIGNS_PER_SLOT`] campaigns or more (`40·scale` campaigns in all). Slot `k`
/// is (`PLACEMENTS[k % 4]`, `CATEGORIES[k % 6]`) for `k < 12` and (`PLACEMENTS[k % 4]`,
/// `CATEGORIES[(k + 1) % 6]`) after: 24 distinct slots, and the first eight already cover every
/// placement and every category.
pub fn slots(scale: u32) -> Vec<(&'static str, &'static str)> {
    let n = (campaign_count(scale) / CAMPAIGNS_PER_SLOT).clamp(1, PLACEMENTS.len() * CATEGORIES.len());
    (0..n)
        .map(|k| {
            let shift = k / 12;
            (PLACEMENTS[k % PLACEMENTS.len()], CATEGORIES[(k + shift) % CATEGORIES.len()])
        })
        .collect()
}

fn campaign_count(scale: u32) -> usize {
    40 * scale.max(1) as usize
}
const ZONES: [(&str, i64); 3] = [("Asia/Seoul", 9), ("Asia/Tokyo", 9), ("UTC", 0)];
const SEARCH_TERMS: [&str; 5] = ["노트북", "운동화", "커피", "립스틱", "tent"];

#[derive(Debug, Clone)]
struct SimCampaign {
    id: String,
    advertiser: usize,
    product: String,
    ads: Vec<String>,
    placement: &'static str,
    category: &'static str,
    bid: i64,
    daily_budget: i64,
    true_ctr: f64,
    true_cvr: f64,
    approved: bool,
    rejected: bool,
    active: bool,
    effective_from: Millis,
    // Model of the system's view, for pricing.
    impressions: u64,
    clicks: u64,
    window_impressions: u64,
    window_clicks: u64,
    spend_day: i64,
    spend: i64,
}

/// Pending emission ordered by (arrival, tie-breaker).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Pending {
    arrival: Millis,
    tie: u64,
    timestamp: Millis,
    topic: SimTopic,
    key: String,
    payload: Vec<u8>,
}

/// The deterministic traffic generator; an iterator of [`SimEvent`]s in arrival order.
#[derive(Debug)]
pub struct Simulator<P: PriceModel> {
    cfg: SimConfig,
    rng: SmallRng,
    pricer: P,
    advertisers: Vec<Advertiser>,
    adv_offset_h: Vec<i64>,
    campaigns: Vec<SimCampaign>,
    /// The placement+category slots the campaigns use (see [`slots`]); auctions are held only there.
    slots: Vec<(&'static str, &'static str)>,
    devices: u64,
    clock: Millis,
    ms_per_ad_event: f64,
    ad_pushed: u64,
    queue: BinaryHeap<Reverse<Pending>>,
    tie: u64,
    seq: u64,
    ad_emitted: u64,
    next_window_close: Millis,
    next_campaign_change: Millis,
    order_seq: u64,
}

impl<P: PriceModel> Simulator<P> {
    /// A simulator with the given settings and pricing.
    pub fn new(cfg: SimConfig, pricer: P) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let scale = cfg.scale.max(1) as usize;
        let mut advertisers = Vec::new();
        let mut adv_offset_h = Vec::new();
        for a in 0..8 * scale {
            let (zone, off) = ZONES[if a % 7 == 6 { 2 } else if a % 5 == 4 { 1 } else { 0 }];
            advertisers.push(Advertiser {
                advertiser_id: format!("advertiser_{a}"),
                balance: rng.gen_range(20..200) * 100_000,
                time_zone: zone.to_string(),
            });
            adv_offset_h.push(off);
        }
        let mut campaigns = Vec::new();
        let slots = slots(cfg.scale);
        for c in 0..campaign_count(cfg.scale) {
            let (placement, category) = slots[c % slots.len()];
            let ads = (0..rng.gen_range(1..=2)).map(|a| format!("ad_{c}_{a}")).collect();
            campaigns.push(SimCampaign {
                id: format!("campaign_{c}"),
                advertiser: rng.gen_range(0..advertisers.len()),
                product: format!("product_{}", rng.gen_range(0..20 * scale)),
                ads,
                placement,
                category,
                bid: rng.gen_range(3..=30) * 100,
                daily_budget: rng.gen_range(5..=60) * 10_000,
                true_ctr: rng.gen_range(0.01..0.12),
                true_cvr: rng.gen_range(0.02..0.2),
                approved: false,
                rejected: false,
                active: true,
                effective_from: cfg.start,
                impressions: 0,
                clicks: 0,
                window_impressions: 0,
                window_clicks: 0,
                spend_day: -1,
                spend: 0,
            });
        }
        // The pace is not derived from `ad_events`: a longer run is a continuation of a shorter one.
        let ms_per_ad_event = if cfg.pace_ms.is_finite() && cfg.pace_ms > 0.0 { cfg.pace_ms } else { DEFAULT_PACE_MS };
        let start = cfg.start;
        let mut sim = Self {
            devices: 2_000 * scale as u64,
            rng,
            pricer,
            advertisers,
            adv_offset_h,
            campaigns,
            slots,
            clock: start,
            ms_per_ad_event,
            ad_pushed: 0,
            queue: BinaryHeap::new(),
            tie: 0,
            seq: 0,
            ad_emitted: 0,
            next_window_close: start - start.rem_euclid(300_000) + 300_000,
            next_campaign_change: start + 3_600_000,
            order_seq: 0,
            cfg,
        };
        sim.schedule_launch();
        sim
    }

    /// The advertiser accounts (opening balances and time zones).
    pub fn advertisers(&self) -> &[Advertiser] {
        &self.advertisers
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    fn push(&mut self, topic: SimTopic, key: String, ts: Millis, payload: Vec<u8>) {
        let r: f64 = self.rng.gen();
        let arrival = if r < self.cfg.late_rate {
            ts + self.rng.gen_range(60_000..900_000)
        } else {
            ts + self.rng.gen_range(0..=self.cfg.max_disorder_ms.max(0))
        }
        .max(self.clock);
        let payload = if self.rng.gen::<f64>() < self.cfg.malformed_rate {
            malform(&mut self.rng, payload)
        } else {
            payload
        };
        self.tie += 1;
        self.queue.push(Reverse(Pending {
            arrival,
            tie: self.tie,
            timestamp: ts,
            topic,
            key,
            payload,
        }));
    }

    fn campaign_event(&mut self, idx: usize, event_type: &str, ts: Millis, status: &str) {
        let c = &self.campaigns[idx];
        let approval = if c.rejected {
            "REJECTED"
        } else if c.approved {
            "APPROVED"
        } else {
            "PENDING"
        };
        let ev = CampaignJson {
            event_type,
            timestamp: fmt_ts(ts),
            campaign_id: &c.id,
            advertiser_id: &self.advertisers[c.advertiser].advertiser_id,
            product_id: &c.product,
            placement: c.placement,
            category: c.category,
            bid_price: c.bid,
            daily_budget: c.daily_budget,
            status,
            approval_status: approval,
            effective_from: fmt_ts(c.effective_from),
            rtb_impact: if c.bid >= 2_000 { "HIGH" } else if c.bid >= 1_000 { "MEDIUM" } else { "LOW" },
            event_id: format!("cmp-{}-{}", self.cfg.seed, self.tie),
        };
        let key = format!("{}:{}", c.placement, c.category);
        let payload = serde_json::to_vec(&ev).unwrap_or_default();
        // Campaign events come from the admin console: in order, never late.
        self.tie += 1;
        self.queue.push(Reverse(Pending {
            arrival: ts.max(self.clock),
            tie: self.tie,
            timestamp: ts,
            topic: SimTopic::Campaign,
            key,
            payload,
        }));
    }

    fn schedule_launch(&mut self) {
        let start = self.cfg.start;
        // Rejections per slot: a slot keeps at least three approved campaigns, so it always has competitors.
        let mut rejected = vec![0usize; self.slots.len()];
        for i in 0..self.campaigns.len() {
            let created = start + i as i64 * 50;
            self.campaigns[i].effective_from = created;
            self.campaign_event(i, "CAMPAIGN_CREATED", created, "ACTIVE");
            let approve_at = created + self.rng.gen_range(1_000..30_000);
            let slot = i % self.slots.len();
            if self.rng.gen::<f64>() < 0.05 && rejected[slot] + 3 < CAMPAIGNS_PER_SLOT {
                rejected[slot] += 1;
                self.campaigns[i].rejected = true;
                self.campaign_event(i, "CAMPAIGN_APPROVED", approve_at, "ACTIVE");
            } else {
                self.campaigns[i].approved = true;
                if self.rng.gen::<f64>() < 0.1 {
                    self.campaigns[i].effective_from = approve_at + 3_600_000;
                }
                self.campaign_event(i, "CAMPAIGN_APPROVED", approve_at, "ACTIVE");
            }
        }
    }

    fn local_day(&self, advertiser: usize, ts: Millis) -> i64 {
        (ts + self.adv_offset_h[advertiser] * 3_600_000).div_euclid(86_400_000)
    }

    fn eligible(&self, i: usize, now: Millis) -> bool {
        let c = &self.campaigns[i];
        c.approved
            && c.active
            && c.effective_from <= now
            && !(c.spend_day == self.local_day(c.advertiser, now) && c.spend >= c.daily_budget)
    }

    fn close_windows(&mut self) {
        while self.clock >= self.next_window_close {
            for c in &mut self.campaigns {
                c.impressions += c.window_impressions;
                c.clicks += c.window_clicks;
                c.window_impressions = 0;
                c.window_clicks = 0;
            }
            self.next_window_close += 300_000;
        }
    }

    fn campaign_changes(&mut self) {
        while self.clock >= self.next_campaign_change {
            let at = self.clock;
            let n = self.campaigns.len();
            for _ in 0..(n / 20).max(1) {
                let i = self.rng.gen_range(0..n);
                if self.campaigns[i].rejected {
                    continue;
                }
                match self.rng.gen_range(0..4) {
                    0 | 1 => {
                        let c = &mut self.campaigns[i];
                        c.bid = (c.bid * self.rng.gen_range(80..=125) / 100).clamp(100, 5_000) / 10 * 10;
                        self.campaign_event(i, "CAMPAIGN_UPDATED", at, "ACTIVE");
                    }
                    2 => {
                        let c = &mut self.campaigns[i];
                        c.daily_budget += 100_000;
                        self.campaign_event(i, "CAMPAIGN_UPDATED", at, "ACTIVE");
                    }
                    _ => {
                        let active = !self.campaigns[i].active;
                        self.campaigns[i].active = active;
                        let status = if active { "ACTIVE" } else { "PAUSED" };
                        self.campaign_event(i, "CAMPAIGN_STATUS_CHANGED", at, status);
                    }
                }
            }
            self.next_campaign_change += 3_600_000;
        }
    }

    fn auction(&mut self) {
        let (placement, category) = self.slots[self.rng.gen_range(0..self.slots.len())];
        let now = self.clock;
        let mut cat_imp = 0;
        let mut cat_clk = 0;
        let mut cands = Vec::new();
        for (i, c) in self.campaigns.iter().enumerate() {
            if c.category == category {
                cat_imp += c.impressions;
                cat_clk += c.clicks;
            }
            if c.placement == placement && c.category == category && self.eligible(i, now) {
                cands.push(AuctionCandidate {
                    index: i,
                    campaign_id: c.id.clone(),
                    bid: c.bid,
                    impressions: c.impressions,
                    clicks: c.clicks,
                });
            }
        }
        if cands.is_empty() {
            return;
        }
        let ranked = self.pricer.rank(&cands, cat_imp, cat_clk);
        let device = format!("device_{}", self.rng.gen_range(0..self.devices));
        let session = format!("session_{}", self.rng.gen_range(0..self.devices * 4));
        let term = SEARCH_TERMS[self.rng.gen_range(0..SEARCH_TERMS.len())];
        for (pos, slot) in ranked.iter().take(3).enumerate() {
            let i = slot.index;
            let t_imp = now + pos as i64;
            self.campaigns[i].window_impressions += 1;
            let ad = self.campaigns[i].ads[self.rng.gen_range(0..self.campaigns[i].ads.len())].clone();
            self.ad_event("IMPRESSION", t_imp, &device, &session, i, &ad, slot.cpc, term, None);
            let bias = [1.0, 0.6, 0.4][pos];
            if self.rng.gen::<f64>() >= self.campaigns[i].true_ctr * bias {
                continue;
            }
            let t_click = t_imp + self.rng.gen_range(500..20_000);
            self.click(i, t_click, &device, &session, &ad, slot.cpc, term, true);
            let r: f64 = self.rng.gen();
            if r < self.cfg.duplicate_rate {
                for _ in 0..self.rng.gen_range(1..=3) {
                    // A double tap within the dedup window: charged, then refunded, so it does not count
                    // toward the spend that the budget monitor ends up with.
                    let t = t_click + self.rng.gen_range(200..90_000);
                    self.click(i, t, &device, &session, &ad, slot.cpc, term, false);
                }
            } else if r < self.cfg.duplicate_rate * 1.5 {
                // The same shopper comes back to the same ad later: a fresh, billable click.
                let t = t_click + self.rng.gen_range(300_001..900_000);
                self.click(i, t, &device, &session, &ad, slot.cpc, term, true);
            }
            if self.rng.gen::<f64>() < self.campaigns[i].true_cvr {
                let delay = (self.rng.gen::<f64>().powi(2) * 26.0 * 3_600_000.0) as i64 + 60_000;
                self.conversion(i, t_click + delay, &device, &session, &ad);
            }
        }
        if self.rng.gen::<f64>() < 0.003 {
            // An order with no ad click behind it: unattributed.
            let i = self.rng.gen_range(0..self.campaigns.len());
            let other = format!("device_x{}", self.rng.gen_range(0..self.devices));
            self.conversion(i, now + 1_000, &other, "session_x", "ad_none");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn click(&mut self, i: usize, t: Millis, device: &str, session: &str, ad: &str, cpc: i64, term: &str, billable: bool) {
        let day = self.local_day(self.campaigns[i].advertiser, t);
        let c = &mut self.campaigns[i];
        if c.spend_day != day {
            c.spend_day = day;
            c.spend = 0;
        }
        if billable {
            c.spend += cpc;
        }
        c.window_clicks += 1;
        self.ad_event("CLICK", t, device, session, i, ad, cpc, term, None);
    }

    fn conversion(&mut self, i: usize, t: Millis, device: &str, session: &str, ad: &str) {
        self.order_seq += 1;
        let order = format!("order_{}_{}", self.cfg.seed, self.order_seq);
        let revenue = self.rng.gen_range(1..=40) * 5_000;
        let ctype = ["PURCHASE", "PURCHASE", "ADD_TO_CART", "SIGNUP"][self.rng.gen_range(0..4)];
        let c = &self.campaigns[i];
        let ev = ConversionJson {
            timestamp: fmt_ts(t),
            device_id: device,
            session_id: session,
            order_id: &order,
            product_id: &c.product,
            revenue_amount: revenue,
            conversion_type: ctype,
            attribution_window: 24,
            referrer_url: format!("https://shop.example/product/{}", c.product),
            event_id: format!("conv-{}-{}", self.cfg.seed, self.order_seq),
        };
        let payload = serde_json::to_vec(&ev).unwrap_or_default();
        self.push(SimTopic::Conversion, device.to_string(), t, payload.clone());
        if self.rng.gen::<f64>() < 0.02 {
            // The order system reports the same order twice.
            self.push(SimTopic::Conversion, device.to_string(), t + 5_000, payload);
        }
        if ad != "ad_none" {
            let price = 0;
            let ad = ad.to_string();
            self.ad_event("CONVERSION", t, device, session, i, &ad, price, "", Some((revenue, order)));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ad_event(
        &mut self,
        event_type: &str,
        t: Millis,
        device: &str,
        session: &str,
        i: usize,
        ad: &str,
        price: i64,
        term: &str,
        conversion: Option<(i64, String)>,
    ) {
        let c = &self.campaigns[i];
        let ev = AdJson {
            event_type,
            timestamp: fmt_ts(t),
            device_id: device,
            session_id: session,
            ad_id: ad,
            campaign_id: &c.id,
            advertiser_id: &self.advertisers[c.advertiser].advertiser_id,
            product_id: &c.product,
            placement: c.placement,
            bid_price: c.bid,
            // SPEC §3: a producer sends only what it knows; only a click has a price.
            actual_price: (event_type == "CLICK").then(|| price.min(c.bid)),
            search_term: term,
            category: c.category,
            revenue_amount: conversion.as_ref().map(|(r, _)| *r),
            order_id: conversion.as_ref().map(|(_, o)| o.as_str()),
            event_id: format!("ad-{}-{}", self.cfg.seed, self.tie + 1),
        };
        let payload = serde_json::to_vec(&ev).unwrap_or_default();
        self.ad_pushed += 1;
        self.push(SimTopic::Ad, device.to_string(), t, payload);
    }

    /// One auction at the current simulated time, then the clock moves on in proportion to the ad-events
    /// it produced (`pace_ms` per ad-event on average).
    fn step(&mut self) {
        self.close_windows();
        self.campaign_changes();
        let before = self.ad_pushed;
        self.auction();
        let produced = (self.ad_pushed - before).max(1) as f64;
        let gap = -self.ms_per_ad_event * produced * (1.0 - self.rng.gen::<f64>()).ln();
        self.clock += gap.max(1.0) as i64;
    }
}

impl<P: PriceModel> Iterator for Simulator<P> {
    type Item = SimEvent;

    /// The next event in arrival order; `None` once `ad_events` ad-events have been produced.
    fn next(&mut self) -> Option<SimEvent> {
        loop {
            if self.ad_emitted >= self.cfg.ad_events {
                return None;
            }
            if self.queue.peek().is_some_and(|Reverse(p)| p.arrival <= self.clock) {
                let Reverse(p) = self.queue.pop()?;
                if p.topic == SimTopic::Ad {
                    self.ad_emitted += 1;
                }
                let ev = SimEvent {
                    seq: self.seq,
                    topic: p.topic,
                    key: p.key,
                    payload: p.payload,
                    timestamp: p.timestamp,
                    arrival: p.arrival,
                };
                self.seq += 1;
                return Some(ev);
            }
            self.step();
        }
    }
}

fn malform(rng: &mut SmallRng, payload: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&payload).into_owned();
    match rng.gen_range(0..6) {
        0 => payload[..payload.len() / 2].to_vec(),
        1 => text.replacen("\"device_id\"", "\"device\"", 1).replacen("\"campaign_id\"", "\"campaign\"", 1).into_bytes(),
        2 => text.replacen("\"bid_price\":", "\"bid_price\":-", 1).replacen("\"revenue_amount\":", "\"revenue_amount\":-", 1).into_bytes(),
        3 => text.replacen("\"event_type\":\"", "\"event_type\":\"SWIPE_", 1).replacen("\"conversion_type\":\"", "\"conversion_type\":\"REFUND_", 1).into_bytes(),
        4 => text.replacen("\"timestamp\":\"20", "\"timestamp\":\"29", 1).into_bytes(),
        _ => b"not json at all".to_vec(),
    }
}

/// Formats ms since epoch as RFC 3339 UTC with milliseconds.
pub fn fmt_ts(ms: Millis) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

#[derive(Serialize)]
struct CampaignJson<'a> {
    event_type: &'a str,
    timestamp: String,
    campaign_id: &'a str,
    advertiser_id: &'a str,
    product_id: &'a str,
    placement: &'a str,
    category: &'a str,
    bid_price: i64,
    daily_budget: i64,
    status: &'a str,
    approval_status: &'a str,
    effective_from: String,
    rtb_impact: &'a str,
    event_id: String,
}

#[derive(Serialize)]
struct AdJson<'a> {
    event_type: &'a str,
    timestamp: String,
    device_id: &'a str,
    session_id: &'a str,
    ad_id: &'a str,
    campaign_id: &'a str,
    advertiser_id: &'a str,
    product_id: &'a str,
    placement: &'a str,
    bid_price: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual_price: Option<i64>,
    search_term: &'a str,
    category: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    revenue_amount: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<&'a str>,
    event_id: String,
}

#[derive(Serialize)]
struct ConversionJson<'a> {
    timestamp: String,
    device_id: &'a str,
    session_id: &'a str,
    order_id: &'a str,
    product_id: &'a str,
    revenue_amount: i64,
    conversion_type: &'a str,
    attribution_window: u32,
    referrer_url: String,
    event_id: String,
}

#[cfg(test)]
mod tests;
