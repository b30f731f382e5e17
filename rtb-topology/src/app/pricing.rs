//! The simulator's auction priced by the system's own GSP ranking ([`rtb_ops::ranking::rank`]).

use rtb_ops::ranking::{rank, Candidate, RankingConfig};
use rtb_ops::sink::Metrics;

use crate::sim::{AuctionCandidate, PriceModel, Slot};

/// Ranks with smoothed pCTR and prices with generalized second price, exactly as the ranking statement does.
#[derive(Debug, Clone, Default)]
pub struct GspPricer {
    /// Ranking parameters (K, default m, reserve, increment).
    pub config: RankingConfig,
}

impl PriceModel for GspPricer {
    fn rank(&mut self, candidates: &[AuctionCandidate], category_impressions: u64, category_clicks: u64) -> Vec<Slot> {
        let cands = candidates
            .iter()
            .map(|c| Candidate {
                campaign_id: c.campaign_id.clone(),
                bid_price: c.bid,
                clicks: i64::try_from(c.clicks).unwrap_or(i64::MAX),
                impressions: i64::try_from(c.impressions).unwrap_or(i64::MAX),
            })
            .collect();
        let category = Metrics {
            impressions: i64::try_from(category_impressions).unwrap_or(i64::MAX),
            clicks: i64::try_from(category_clicks).unwrap_or(i64::MAX),
            ..Metrics::default()
        };
        rank(cands, &category, &self.config)
            .into_iter()
            .filter_map(|e| {
                candidates
                    .iter()
                    .find(|c| c.campaign_id == e.campaign_id)
                    .map(|c| Slot { index: c.index, cpc: e.cpc })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_price_below_own_bid_and_last_pays_reserve() {
        let c = |i: usize, bid: i64| AuctionCandidate { index: i, campaign_id: format!("c{i}"), bid, impressions: 0, clicks: 0 };
        // Equal pCTR (no data): ranked by bid; the winner pays the runner-up's bid + 10.
        let slots = GspPricer::default().rank(&[c(0, 1_000), c(1, 2_000)], 0, 0);
        assert_eq!(slots, vec![Slot { index: 1, cpc: 1_010 }, Slot { index: 0, cpc: 100 }]);
    }
}
