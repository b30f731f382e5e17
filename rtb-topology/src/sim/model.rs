//! How the simulator prices its auctions.

/// A campaign taking part in one auction, with the performance the system has seen of it so far (its closed
/// 5-minute windows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuctionCandidate {
    /// Index of the campaign inside the simulator.
    pub index: usize,
    /// `campaign_id`.
    pub campaign_id: String,
    /// Bid, KRW.
    pub bid: i64,
    /// Impressions over closed windows.
    pub impressions: u64,
    /// Clicks over closed windows.
    pub clicks: u64,
}

/// One ranked slot: which candidate, at what cost per click.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index of the campaign inside the simulator (as in [`AuctionCandidate::index`]).
    pub index: usize,
    /// Cost per click, KRW.
    pub cpc: i64,
}

/// Ranks the eligible campaigns of one placement+category and prices each slot. The binary plugs in the
/// system's own GSP ranking (`rtb_ops`), so simulated clicks carry the price the live ranking computes from
/// the same campaigns and closed windows.
pub trait PriceModel: Send {
    /// Ranks `candidates` (best first). `category_impressions`/`category_clicks` are the totals of every
    /// campaign of the category (the prior's mean CTR).
    fn rank(
        &mut self,
        candidates: &[AuctionCandidate],
        category_impressions: u64,
        category_clicks: u64,
    ) -> Vec<Slot>;
}
