//! Typed configuration of every operator, with defaults (each field documented where it is defined).
//! The topology file deserialises into [`OpsConfig`]; missing sections and fields take their defaults.

use std::time::Duration;

use rtb_stream::span;
use serde::{Deserialize, Serialize};

use crate::ops::budget::BudgetConfig;
use crate::ops::dedup::DedupConfig;
use crate::ops::performance::PerformanceConfig;
use crate::ranking::RankingConfig;
use crate::schema::ValidationConfig;

/// Settings of the conversion matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConversionConfig {
    /// Attribution window (default 24 h): clicks in `[t − window, t]` qualify.
    #[serde(with = "rtb_stream::span::serde_ms")]
    pub attribution_window: Duration,
}

impl Default for ConversionConfig {
    fn default() -> Self {
        Self { attribution_window: Duration::from_secs(24 * 3_600) }
    }
}

/// Names of the four topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicNames {
    /// Campaign changes (default `campaign-events`).
    pub campaign_events: String,
    /// Impressions, clicks, conversions (default `ad-events`).
    pub ad_events: String,
    /// Orders (default `conversion-events`).
    pub conversion_events: String,
    /// Duplicate-click refunds (default `compensation-events`).
    pub compensation_events: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            campaign_events: "campaign-events".to_string(),
            ad_events: "ad-events".to_string(),
            conversion_events: "conversion-events".to_string(),
            compensation_events: "compensation-events".to_string(),
        }
    }
}

/// Configuration of all CPC operators.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct OpsConfig {
    /// Topic names.
    pub topics: TopicNames,
    /// Input validation limits.
    pub validation: ValidationConfig,
    /// Ranking parameters.
    pub ranking: RankingConfig,
    /// Performance windows.
    pub performance: PerformanceConfig,
    /// Conversion matching.
    pub conversion: ConversionConfig,
    /// Duplicate-click detection.
    pub dedup: DedupConfig,
    /// Budget monitor.
    pub budget: BudgetConfig,
}

impl OpsConfig {
    /// Checks the values that would make an operator misbehave; names the field on error.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |f: &str, why: &str| Err(crate::Error::Config(format!("{f}: {why}")));
        // Spans cannot be negative (`Duration`); a window must be at least 1 ms of event time.
        if span::ms(self.performance.window) <= 0 {
            return bad("performance.window", "must be at least 1 ms");
        }
        if span::ms(self.dedup.window) <= 0 {
            return bad("dedup.window", "must be at least 1 ms");
        }
        if self.ranking.reserve_price < 0 || self.ranking.increment < 0 {
            return bad("ranking.reserve_price/increment", "must not be negative");
        }
        if !(0.0..=1.0).contains(&self.ranking.default_prior_ctr) {
            return bad("ranking.default_prior_ctr", "must be within 0..=1");
        }
        if self.budget.pause_at_pct == 0 {
            return bad("budget.pause_at_pct", "must be positive");
        }
        crate::calendar::parse_time_zone(&self.budget.default_time_zone)?;
        if self.validation.max_price <= 0 || self.validation.max_amount <= 0 {
            return bad("validation", "limits must be positive");
        }
        if self.validation.max_id_bytes == 0 {
            return bad("validation.max_id_bytes", "must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec_and_partial_json_fills_in() {
        let c = OpsConfig::default();
        assert_eq!((c.ranking.prior_strength, c.ranking.reserve_price, c.ranking.increment), (100, 100, 10));
        assert_eq!(c.validation.max_price, 10_000_000);
        assert_eq!(c.budget.alert_thresholds_pct, vec![80, 100]);
        assert!(c.validate().is_ok());
        let partial: OpsConfig = serde_json::from_str(r#"{"ranking":{"reserve_price":70},"budget":{"default_time_zone":"UTC"}}"#)
            .expect("partial config");
        assert_eq!((partial.ranking.reserve_price, partial.ranking.increment), (70, 10));
        assert_eq!(partial.dedup.window, Duration::from_secs(300));
        let zero: OpsConfig = serde_json::from_str(r#"{"dedup":{"window":0}}"#).expect("spans as milliseconds");
        assert!(zero.validate().is_err(), "a zero dedup window is refused");
        let bad = OpsConfig { budget: BudgetConfig { default_time_zone: "Nowhere/Else".into(), ..BudgetConfig::default() }, ..c };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn the_id_limit_is_configured_and_checked() {
        let c: OpsConfig = serde_json::from_str(r#"{"validation":{"max_id_bytes":64}}"#).expect("config");
        assert_eq!((c.validation.max_id_bytes, c.validation.max_price), (64, 10_000_000));
        assert_eq!(OpsConfig::default().validation.max_id_bytes, 128);
        let zero = OpsConfig { validation: ValidationConfig { max_id_bytes: 0, ..ValidationConfig::default() }, ..OpsConfig::default() };
        let e = zero.validate().expect_err("zero");
        assert!(e.to_string().contains("validation.max_id_bytes"), "{e}");
    }
}
