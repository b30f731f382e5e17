//! Builders of fixed input lines for hand-written golden inputs (one JSON object per line, SPEC §3 fields).

/// A campaign event. `effective_from` None leaves the field out (it defaults to `timestamp`).
#[allow(clippy::too_many_arguments)]
pub fn campaign(
    event_type: &str,
    ts: &str,
    campaign_id: &str,
    advertiser_id: &str,
    placement: &str,
    category: &str,
    bid: i64,
    daily_budget: i64,
    status: &str,
    approval: &str,
    effective_from: Option<&str>,
) -> String {
    let eff = effective_from.map(|e| format!(",\"effective_from\":\"{e}\"")).unwrap_or_default();
    format!(
        "{{\"event_type\":\"{event_type}\",\"timestamp\":\"{ts}\",\"campaign_id\":\"{campaign_id}\",\
         \"advertiser_id\":\"{advertiser_id}\",\"product_id\":\"product_1\",\"placement\":\"{placement}\",\
         \"category\":\"{category}\",\"bid_price\":{bid},\"daily_budget\":{daily_budget},\"status\":\"{status}\",\
         \"approval_status\":\"{approval}\",\"rtb_impact\":\"LOW\"{eff}}}"
    )
}

/// Where an ad-event was shown and who pays for it.
#[derive(Debug, Clone, Copy)]
pub struct Ad<'a> {
    pub device: &'a str,
    pub ad: &'a str,
    pub campaign: &'a str,
    pub advertiser: &'a str,
    pub placement: &'a str,
    pub category: &'a str,
    pub product: &'a str,
    pub bid: i64,
}

impl<'a> Ad<'a> {
    fn line(&self, event_type: &str, ts: &str, price: i64, extra: &str) -> String {
        format!(
            "{{\"event_type\":\"{event_type}\",\"timestamp\":\"{ts}\",\"device_id\":\"{}\",\"session_id\":\"s\",\
             \"ad_id\":\"{}\",\"campaign_id\":\"{}\",\"advertiser_id\":\"{}\",\"product_id\":\"{}\",\
             \"placement\":\"{}\",\"bid_price\":{},\"actual_price\":{price},\"category\":\"{}\"{extra}}}",
            self.device, self.ad, self.campaign, self.advertiser, self.product, self.placement, self.bid, self.category
        )
    }

    /// An IMPRESSION at `ts` (no event_id).
    pub fn impression(&self, ts: &str) -> String {
        self.line("IMPRESSION", ts, 0, "")
    }

    /// A CLICK at `ts` priced `price`, with `event_id` when given.
    pub fn click(&self, ts: &str, price: i64, event_id: Option<&str>) -> String {
        let extra = event_id.map(|e| format!(",\"event_id\":\"{e}\"")).unwrap_or_default();
        self.line("CLICK", ts, price, &extra)
    }

    /// This ad shown to another device.
    pub fn on<'b>(&self, device: &'b str) -> Ad<'b>
    where
        'a: 'b,
    {
        Ad { device, ..*self }
    }
}

/// A conversion event.
pub fn conversion(ts: &str, device: &str, order: &str, product: &str, revenue: i64, ctype: &str) -> String {
    format!(
        "{{\"timestamp\":\"{ts}\",\"device_id\":\"{device}\",\"session_id\":\"s\",\"order_id\":\"{order}\",\
         \"product_id\":\"{product}\",\"revenue_amount\":{revenue},\"conversion_type\":\"{ctype}\",\
         \"attribution_window\":24}}"
    )
}

/// An advertisers.jsonl row.
pub fn advertiser(id: &str, balance: i64, tz: &str) -> String {
    format!("{{\"advertiser_id\":\"{id}\",\"balance\":{balance},\"time_zone\":\"{tz}\"}}")
}

/// Joins lines into a file body (each line ends with a newline).
pub fn file(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}
