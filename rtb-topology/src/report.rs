//! The readable end-of-run report, built from the stores (not from the run's memory), so it is the same
//! after a restart as after an uninterrupted run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rtb_ops::sink::{Cache, Database, LedgerKind};
use rtb_ops::schema::CampaignStatus;
use unicode_width::UnicodeWidthStr;

/// `text` left-aligned in `width` terminal columns (by display width: a Hangul syllable takes two).
fn cell(text: &str, width: usize) -> String {
    let pad = width.saturating_sub(text.width());
    format!("{text}{}", " ".repeat(pad))
}
use serde::Serialize;

/// Counters of the run itself (not derivable from the stores).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunCounters {
    /// Events read or produced per topic.
    pub events: BTreeMap<String, u64>,
    /// Dead letters per topic.
    pub dead_letters: BTreeMap<String, u64>,
    /// Dead-letter reasons (reason → count), most frequent first when rendered.
    pub dead_letter_reasons: BTreeMap<String, u64>,
    /// Late records per stage: valid input that arrived too late to be applied (not dead letters).
    pub late: BTreeMap<String, u64>,
    /// Records skipped per consumer group because they were already applied (after a restart).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub duplicates_skipped: BTreeMap<String, u64>,
    /// Conversions without a click in the attribution window.
    pub unattributed_conversions: u64,
    /// The conversion-events input: how many, and how many were rejected or came too late.
    pub conversion_inputs: ConversionInputs,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Seconds from the start until every stage had committed every produced record (the rest of
    /// `elapsed_s`: the drain closing the last windows, then the report).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub committed_s: Option<f64>,
}

/// The conversion-events a run read, and those that never reached the matcher's decision (counted from the
/// log: its input topic and the dead-letter and late topics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConversionInputs {
    /// Conversion events produced (every one since the data directory was created).
    pub events: u64,
    /// Of those, distinct bad inputs (dead letters).
    pub dead_letters: u64,
    /// Of those, valid conversions that arrived too late to be matched (the late output).
    pub late: u64,
}

/// Where every conversion event went: `events = attributed + unattributed + duplicate_orders + dead_letters
/// + late + unsettled`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ConversionAccount {
    /// Conversion events read.
    pub events: u64,
    /// Orders attributed to a click (one result per order).
    pub attributed: u64,
    /// Orders without a click in the attribution window (one result per order).
    pub unattributed: u64,
    /// Later conversions of an order that already had its result: ignored for attribution (SPEC §4).
    pub duplicate_orders: u64,
    /// Bad inputs.
    pub dead_letters: u64,
    /// Too late to be matched.
    pub late: u64,
    /// The rest: conversions the matcher had not decided yet when the run stopped, their time still ahead of
    /// its watermark (in a complete run, only those within the out-of-orderness of the end of the data).
    pub unsettled: i64,
}

impl ConversionAccount {
    fn new(inputs: ConversionInputs, attributed: u64, unattributed: u64, duplicate_orders: u64) -> Self {
        let decided = attributed + unattributed + duplicate_orders + inputs.dead_letters + inputs.late;
        Self {
            events: inputs.events,
            attributed,
            unattributed,
            duplicate_orders,
            dead_letters: inputs.dead_letters,
            late: inputs.late,
            unsettled: inputs.events as i64 - decided as i64,
        }
    }
}

/// One ranked campaign.
#[derive(Debug, Clone, Serialize)]
pub struct RankLine {
    /// Placement.
    pub placement: String,
    /// Category.
    pub category: String,
    /// 1-based rank.
    pub rank: u32,
    /// Campaign.
    pub campaign_id: String,
    /// Bid, KRW.
    pub bid: i64,
    /// Smoothed CTR.
    pub pctr: f64,
    /// bid × pCTR.
    pub score: f64,
    /// GSP price, KRW.
    pub cpc: i64,
}

/// Totals of one campaign over its closed windows.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignLine {
    /// Campaign.
    pub campaign_id: String,
    /// Placement.
    pub placement: String,
    /// Category.
    pub category: String,
    /// Status (PAUSED when budget-paused).
    pub status: String,
    /// Impressions.
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// CONVERSION ad-events in its windows (not the attributed orders).
    pub conversions: i64,
    /// CTR.
    pub ctr: f64,
    /// CVR.
    pub cvr: f64,
    /// Σ actual_price of clicks.
    pub spend: i64,
    /// Revenue.
    pub revenue: i64,
}

/// One advertiser's money.
#[derive(Debug, Clone, Serialize)]
pub struct AdvertiserLine {
    /// Advertiser.
    pub advertiser_id: String,
    /// Opening balance.
    pub opening: i64,
    /// Σ charges.
    pub charges: i64,
    /// Σ refunds.
    pub refunds: i64,
    /// Current balance.
    pub balance: i64,
    /// opening − charges + refunds == balance.
    pub reconciled: bool,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Whether every input was produced and processed to the end (every offset committed, every watermark
    /// at the end of the data).
    pub complete: bool,
    /// Why not, when not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// When this run continued an earlier one on the same data directory: the simulated events already in
    /// its log (this run produced from there on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<u64>,
    /// Run counters.
    pub run: RunCounters,
    /// Rankings, every placement+category.
    pub rankings: Vec<RankLine>,
    /// Campaigns.
    pub campaigns: Vec<CampaignLine>,
    /// Advertisers.
    pub advertisers: Vec<AdvertiserLine>,
    /// Ledger: number of charges.
    pub charges: u64,
    /// Σ charges, KRW.
    pub charged: i64,
    /// Ledger: number of refunds.
    pub refunds: u64,
    /// Σ refunds, KRW.
    pub refunded: i64,
    /// Orders (conversion-events) attributed to a click.
    pub conversions: u64,
    /// Attributed revenue, KRW.
    pub attributed_revenue: i64,
    /// Conversions of an order that already had its result (duplicate `order_id`s): not attributed again.
    pub duplicate_orders: u64,
    /// Where every conversion event went.
    pub conversion_events: ConversionAccount,
    /// Budget-paused campaigns (campaign, day).
    pub paused: Vec<(String, String)>,
    /// Paused campaigns per reason: `BUDGET_EXHAUSTED` (the budget monitor) or `ADVERTISER` (a
    /// `CAMPAIGN_STATUS_CHANGED` to PAUSED).
    pub paused_by_reason: BTreeMap<String, u64>,
    /// Alerts (campaign, day, level).
    pub alerts: Vec<(String, String, u32)>,
}

impl Report {
    /// Reads everything from the stores.
    pub fn collect(cache: &dyn Cache, db: &dyn Database, run: RunCounters) -> rtb_ops::Result<Self> {
        let campaigns_rows = db.campaigns()?;
        let bids: BTreeMap<String, i64> =
            campaigns_rows.iter().map(|c| (c.campaign_id.clone(), c.bid_price)).collect();
        let mut rankings = Vec::new();
        for (placement, category, entries) in cache.rankings()? {
            for e in entries {
                rankings.push(RankLine {
                    placement: placement.as_str().to_string(),
                    category: category.clone(),
                    rank: e.rank,
                    campaign_id: e.campaign_id.clone(),
                    bid: bids.get(&e.campaign_id).copied().unwrap_or(e.bid_price),
                    pctr: e.pctr,
                    score: e.score,
                    cpc: e.cpc,
                });
            }
        }
        rankings.sort_by(|a, b| (&a.placement, &a.category, a.rank).cmp(&(&b.placement, &b.category, b.rank)));

        let mut campaigns = Vec::new();
        let mut paused = Vec::new();
        let mut paused_by_reason = BTreeMap::<String, u64>::new();
        for c in &campaigns_rows {
            if c.budget_paused_day.is_some() {
                *paused_by_reason.entry("BUDGET_EXHAUSTED".to_string()).or_default() += 1;
            } else if c.status == CampaignStatus::Paused {
                *paused_by_reason.entry("ADVERTISER".to_string()).or_default() += 1;
            }
            let t = cache.campaign_totals(&c.campaign_id)?;
            campaigns.push(CampaignLine {
                campaign_id: c.campaign_id.clone(),
                placement: c.placement.as_str().to_string(),
                category: c.category.clone(),
                status: format!("{:?}", c.effective_status()).to_uppercase(),
                impressions: t.impressions,
                clicks: t.clicks,
                conversions: t.conversions,
                ctr: t.ctr(),
                cvr: t.cvr(),
                spend: t.spend,
                revenue: t.revenue,
            });
            if let Some(day) = c.budget_paused_day {
                paused.push((c.campaign_id.clone(), day.to_string()));
            }
        }
        campaigns.sort_by(|a, b| b.spend.cmp(&a.spend).then_with(|| a.campaign_id.cmp(&b.campaign_id)));

        let mut charges_by: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let (mut charges, mut refunds, mut refunded) = (0u64, 0u64, 0i64);
        for row in db.ledger()? {
            let e = &row.entry;
            let slot = charges_by.entry(e.advertiser_id.clone()).or_default();
            match e.kind {
                // Ledger amounts are signed balance changes: charges negative, refunds positive.
                LedgerKind::Charge => {
                    charges += 1;
                    slot.0 -= e.amount;
                }
                LedgerKind::Refund => {
                    refunds += 1;
                    refunded += e.amount;
                    slot.1 += e.amount;
                }
            }
        }
        let advertisers = db
            .advertisers()?
            .into_iter()
            .map(|a| {
                let (c, r) = charges_by.get(&a.advertiser_id).copied().unwrap_or_default();
                AdvertiserLine {
                    reconciled: a.opening_balance - c + r == a.balance,
                    advertiser_id: a.advertiser_id,
                    opening: a.opening_balance,
                    charges: c,
                    refunds: r,
                    balance: a.balance,
                }
            })
            .collect();
        let conv = db.conversions()?;
        let attributed: Vec<_> = conv.iter().filter(|c| c.is_attributed()).collect();
        // The matcher stores unattributed orders too (claiming the order id): count them from the store.
        let mut run = run;
        run.unattributed_conversions = run.unattributed_conversions.max((conv.len() - attributed.len()) as u64);
        let duplicate_orders = db.duplicate_orders()?.len() as u64;
        let conversion_events = ConversionAccount::new(
            run.conversion_inputs,
            attributed.len() as u64,
            run.unattributed_conversions,
            duplicate_orders,
        );
        let charged = charges_by.values().map(|(c, _)| *c).sum();
        let alerts = db
            .alerts()?
            .into_iter()
            .map(|a| (a.campaign_id, a.day.to_string(), a.threshold_pct))
            .collect();
        Ok(Self {
            complete: false,
            incomplete: None,
            resumed_after: None,
            run,
            rankings,
            campaigns,
            advertisers,
            charges,
            charged,
            refunds,
            refunded,
            conversions: attributed.len() as u64,
            attributed_revenue: attributed.iter().map(|c| c.revenue_amount).sum(),
            duplicate_orders,
            conversion_events,
            paused,
            paused_by_reason,
            alerts,
        })
    }

    /// Renders the report as text for a terminal.
    pub fn render(&self, top_per_slot: usize, top_campaigns: usize) -> String {
        let mut s = String::new();
        let r = &self.run;
        let _ = writeln!(s, "\n=== rtb report ===");
        if let Some(n) = self.resumed_after {
            let _ = writeln!(s, "resumed: this run continued after the {n} events already in the data directory's log");
        }
        let total: u64 = r.events.values().sum();
        let _ = writeln!(
            s,
            "events: {total} ({}) in {:.1} s{}",
            r.events.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
            r.elapsed_s,
            r.committed_s.map_or_else(String::new, |c| format!(
                "; every record committed after {c:.1} s"
            ))
        );
        let _ = writeln!(s, "\n-- rankings (top {top_per_slot} per placement/category) --");
        let _ = writeln!(s, "{:<16} {:<18} {:>4} {:<14} {:>6} {:>7} {:>9} {:>6}", "placement", "category", "rank", "campaign", "bid", "pCTR", "score", "CPC");
        let mut slot_sizes: BTreeMap<(&str, &str), u32> = BTreeMap::new();
        for l in &self.rankings {
            let n = slot_sizes.entry((l.placement.as_str(), l.category.as_str())).or_default();
            *n = (*n).max(l.rank);
        }
        let mut reserve_shown = false;
        for l in self.rankings.iter().filter(|l| l.rank as usize <= top_per_slot) {
            // The last campaign of a slot has no competitor below it: it pays the reserve price.
            let last = slot_sizes.get(&(l.placement.as_str(), l.category.as_str())) == Some(&l.rank);
            reserve_shown |= last;
            let _ = writeln!(
                s,
                "{} {} {:>4} {} {:>6} {:>7.4} {:>9.2} {:>6}{}",
                cell(&l.placement, 16), cell(&l.category, 18), l.rank, cell(&l.campaign_id, 14), l.bid, l.pctr, l.score, l.cpc,
                if last { " (last: reserve)" } else { "" }
            );
        }
        if reserve_shown {
            let _ = writeln!(s, "(last: reserve) = no competitor ranks below it, so it pays the reserve price (never above its bid)");
        }
        let _ = writeln!(s, "\n-- campaigns (top {top_campaigns} by spend, of {}) --", self.campaigns.len());
        // `conv`: CONVERSION ad-events counted in the performance windows (not the attributed orders below).
        let _ = writeln!(s, "{:<14} {:<16} {:<8} {:>8} {:>6} {:>7} {:>8} {:>7} {:>10} {:>10}", "campaign", "placement", "status", "impr", "clicks", "CTR", "conv-ads", "CVR", "spend", "revenue");
        for c in self.campaigns.iter().take(top_campaigns) {
            let _ = writeln!(
                s,
                "{} {} {} {:>8} {:>6} {:>6.2}% {:>8} {:>6.2}% {:>10} {:>10}",
                cell(&c.campaign_id, 14), cell(&c.placement, 16), cell(&c.status, 8), c.impressions, c.clicks, c.ctr * 100.0, c.conversions, c.cvr * 100.0, c.spend, c.revenue
            );
        }
        let _ = writeln!(
            s,
            "(impr, clicks, conv-ads, spend, revenue: closed 5-minute windows; the charges below also count clicks of \
             windows still open at the end)"
        );
        let _ = writeln!(s, "\n-- advertisers --");
        let _ = writeln!(s, "{:<16} {:>12} {:>10} {:>9} {:>12} check", "advertiser", "opening", "charges", "refunds", "balance");
        for a in &self.advertisers {
            let _ = writeln!(
                s,
                "{} {:>12} {:>10} {:>9} {:>12} {}",
                cell(&a.advertiser_id, 16), a.opening, a.charges, a.refunds, a.balance, if a.reconciled { "ok" } else { "MISMATCH" }
            );
        }
        let _ = writeln!(s, "\n-- money --");
        let _ = writeln!(
            s,
            "charges: {} ({} KRW)   refunds: {} ({} KRW)   net: {} KRW",
            self.charges,
            self.charged,
            self.refunds,
            self.refunded,
            self.charged - self.refunded
        );
        let _ = writeln!(
            s,
            "orders (conversion-events) attributed to a click: {} (revenue {} KRW); without a click in the \
             attribution window: {}",
            self.conversions, self.attributed_revenue, r.unattributed_conversions
        );
        let a = &self.conversion_events;
        let _ = writeln!(
            s,
            "conversion-events: {} = {} attributed + {} unattributed + {} duplicate order ids (not attributed \
             twice) + {} dead letters + {} late{}",
            a.events,
            a.attributed,
            a.unattributed,
            a.duplicate_orders,
            a.dead_letters,
            a.late,
            if a.unsettled == 0 {
                String::new()
            } else {
                format!(
                    " + {} not matched yet (their time is past the matcher's watermark: the end of the data less \
                     its out-of-orderness, or where an incomplete run stopped)",
                    a.unsettled
                )
            }
        );
        let _ = writeln!(s, "\n-- budget --");
        let paused: u64 = self.paused_by_reason.values().sum();
        let _ = writeln!(
            s,
            "paused campaigns: {paused}{}",
            if self.paused_by_reason.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    self.paused_by_reason.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
                )
            }
        );
        for (c, d) in self.paused.iter().take(10) {
            let _ = writeln!(s, "  {c} (BUDGET_EXHAUSTED on {d})");
        }
        let a80 = self.alerts.iter().filter(|a| a.2 == 80).count();
        let a100 = self.alerts.iter().filter(|a| a.2 == 100).count();
        let _ = writeln!(s, "alerts: {a80} at 80%, {a100} at 100%");
        for (c, d, level) in self.alerts.iter().take(10) {
            let _ = writeln!(s, "  {c} on {d}: {level}% of its daily budget");
        }
        if self.alerts.len() > 10 {
            let _ = writeln!(s, "  ... and {} more (rtb export writes them all to alerts.jsonl)", self.alerts.len() - 10);
        }
        let _ = writeln!(s, "\n-- dead letters and late records --");
        let dl: u64 = r.dead_letters.values().sum();
        let _ = writeln!(
            s,
            "dead letters: {dl} ({})",
            r.dead_letters.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        );
        let mut reasons: Vec<_> = r.dead_letter_reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (reason, n) in reasons.into_iter().take(6) {
            let _ = writeln!(s, "  {n:>6}  {reason}");
        }
        let late: u64 = r.late.values().sum();
        let _ = writeln!(
            s,
            "late records (valid, too late to apply; not dead letters): {late}{}",
            if r.late.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.late.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
            }
        );
        if !r.duplicates_skipped.is_empty() {
            let _ = writeln!(
                s,
                "already applied, skipped after a restart: {}",
                r.duplicates_skipped.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_by_display_width_not_by_chars() {
        let ko = cell("전자제품/컴퓨터", 18);
        assert_eq!(ko.width(), 18, "{ko:?}");
        assert_eq!(cell("sports", 18).width(), 18);
        assert_eq!(cell("a-very-long-campaign-id", 4), "a-very-long-campaign-id", "never cut");
    }

    fn rank(rank: u32, campaign: &str, cpc: i64) -> RankLine {
        RankLine {
            placement: "HOME".into(),
            category: "식품".into(),
            rank,
            campaign_id: campaign.into(),
            bid: 2_000,
            pctr: 0.05,
            score: 100.0,
            cpc,
        }
    }

    #[test]
    fn money_has_its_krw_totals_alerts_name_their_campaign_and_the_reserve_is_explained() {
        let report = Report {
            charges: 3,
            charged: 4_500,
            refunds: 1,
            refunded: 500,
            alerts: vec![("campaign_7".into(), "2025-03-10".into(), 80)],
            rankings: vec![rank(1, "campaign_1", 1_210), rank(2, "campaign_2", 100)],
            ..Report::default()
        };
        let text = report.render(3, 15);
        assert!(text.contains("charges: 3 (4500 KRW)   refunds: 1 (500 KRW)   net: 4000 KRW"), "{text}");
        assert!(text.contains("campaign_7 on 2025-03-10: 80% of its daily budget"), "{text}");
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("campaign_1 ") || l.contains("campaign_2 ")).collect();
        assert!(!lines[0].contains("reserve") && lines[1].ends_with("100 (last: reserve)"), "{lines:?}");
        assert!(text.contains("so it pays the reserve price"), "{text}");
        assert!(text.contains("clicks of windows still open"), "the campaign columns say what they cover: {text}");
    }

    #[test]
    fn conversion_events_add_up_with_duplicate_order_ids_and_say_what_is_not_matched_yet() {
        let inputs = ConversionInputs { events: 711, dead_letters: 1, late: 3 };
        let done = ConversionAccount::new(inputs, 485, 207, 15);
        assert_eq!(done.unsettled, 0);
        let report = Report { conversion_events: done, ..Report::default() };
        let text = report.render(3, 15);
        assert!(
            text.contains("conversion-events: 711 = 485 attributed + 207 unattributed + 15 duplicate order ids (not attributed twice) + 1 dead letters + 3 late\n"),
            "{text}"
        );
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["duplicate_orders"], 0);
        assert_eq!(json["conversion_events"]["duplicate_orders"], 15);
        assert_eq!(json["conversion_events"]["unsettled"], 0);

        let stopped = ConversionAccount::new(inputs, 400, 200, 15);
        assert_eq!(stopped.unsettled, 92);
        let text = Report { conversion_events: stopped, ..Report::default() }.render(3, 15);
        assert!(text.contains("+ 3 late + 92 not matched yet"), "{text}");
    }
}
