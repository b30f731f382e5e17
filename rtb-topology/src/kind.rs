//! Per-kind rules: which inputs, outputs, sinks and keys each operator kind takes, and its default settings.

use rtb_stream::WatermarkConfig;

use crate::model::{EventSchema, LatePolicyKind, OperatorKind, OperatorSettings, SinkKind};
use crate::units::Millis;

/// Default allowed out-of-orderness of every operator's watermark.
pub const DEFAULT_MAX_OUT_OF_ORDERNESS: Millis = Millis::secs(5);
/// Default idle timeout of every operator's watermark.
pub const DEFAULT_IDLE_TIMEOUT: Millis = Millis::secs(10);
/// Default `max_lateness` of the `correct` late policy.
pub const DEFAULT_MAX_LATENESS: Millis = Millis::hours(1);

impl OperatorKind {
    /// The event schemas of its inputs, in order. Empty for [`OperatorKind::Repartition`] (any one topic).
    pub fn input_schemas(self) -> &'static [EventSchema] {
        use EventSchema::*;
        match self {
            OperatorKind::Ranking => &[CampaignEvents],
            OperatorKind::Performance
            | OperatorKind::DuplicateDetection
            | OperatorKind::Balance
            | OperatorKind::BudgetMonitor => &[AdEvents],
            OperatorKind::ConversionMatching => &[ConversionEvents, AdEvents],
            OperatorKind::Compensation => &[CompensationEvents],
            OperatorKind::Repartition => &[],
        }
    }

    /// The event schemas of the topics it produces to, in order.
    pub fn output_schemas(self) -> &'static [EventSchema] {
        match self {
            OperatorKind::DuplicateDetection => &[EventSchema::CompensationEvents],
            OperatorKind::BudgetMonitor => &[EventSchema::CampaignEvents],
            _ => &[],
        }
    }

    /// The kinds of sink it writes, one sink of each: ranking writes rankings to the cache and campaign
    /// rows to the database; performance writes metrics to the cache; conversion matching writes results
    /// to the database; the balance worker writes the ledger and balances; the budget monitor keeps spend
    /// counters in the cache and campaign status and alerts in the database; compensation writes the
    /// ledger and lowers the day's spend in the cache. Duplicate detection only produces to a topic.
    pub fn sink_kinds(self) -> &'static [SinkKind] {
        match self {
            OperatorKind::Performance => &[SinkKind::Cache],
            OperatorKind::ConversionMatching | OperatorKind::Balance => &[SinkKind::Database],
            OperatorKind::Ranking | OperatorKind::BudgetMonitor | OperatorKind::Compensation => {
                &[SinkKind::Cache, SinkKind::Database]
            }
            OperatorKind::DuplicateDetection | OperatorKind::Repartition => &[],
        }
    }

    /// Sinks it also reads, with what it reads (for `describe`): ranking reads CTRs from the metrics in the
    /// cache; the budget monitor reads daily budgets from the campaigns in the database.
    pub fn reads(self) -> &'static [(SinkKind, &'static str)] {
        match self {
            OperatorKind::Ranking => &[(SinkKind::Cache, "CTR")],
            OperatorKind::BudgetMonitor => &[(SinkKind::Database, "daily budget")],
            _ => &[],
        }
    }

    /// The fields its key may be made of: a key must be a non-empty subset of these, so every group the
    /// operator aggregates (a campaign, a placement+category, a device+ad ...) stays in one partition.
    pub fn key_fields(self) -> &'static [&'static str] {
        match self {
            OperatorKind::Ranking => &["placement", "category"],
            OperatorKind::Performance | OperatorKind::BudgetMonitor => &["campaign_id"],
            OperatorKind::ConversionMatching => &["device_id", "product_id"],
            OperatorKind::DuplicateDetection => &["device_id", "ad_id"],
            OperatorKind::Balance | OperatorKind::Compensation => &["advertiser_id"],
            OperatorKind::Repartition => &[],
        }
    }

    /// True when the kind must be keyed (the statements); workers may run unkeyed, per event.
    pub fn requires_key(self) -> bool {
        self.is_statement()
    }

    /// True for kinds with a window, grace and late policy.
    pub fn is_windowed(self) -> bool {
        self.default_window().is_some()
    }

    /// The default window: 5 min tumbling (performance), 24 h attribution (conversion matching), 5 min
    /// dedup (duplicate detection); `None` for kinds without windows.
    pub fn default_window(self) -> Option<Millis> {
        match self {
            OperatorKind::Performance | OperatorKind::DuplicateDetection => {
                Some(Millis::minutes(5))
            }
            OperatorKind::ConversionMatching => Some(Millis::hours(24)),
            _ => None,
        }
    }

    /// The default grace: 1 min for performance windows, 0 otherwise.
    pub fn default_grace(self) -> Millis {
        match self {
            OperatorKind::Performance => Millis::minutes(1),
            _ => Millis::ZERO,
        }
    }

    /// The default late policy: performance corrects its windows; the others send late records to the
    /// late-records output (never silently dropped).
    pub fn default_late_policy(self) -> LatePolicyKind {
        match self {
            OperatorKind::Performance => LatePolicyKind::Correct,
            _ => LatePolicyKind::SideOutput,
        }
    }

    /// The settings of this kind with `settings` applied over its defaults. Settings that do not apply to
    /// the kind are ignored here (validation rejects them).
    pub fn resolve(self, settings: &OperatorSettings) -> ResolvedSettings {
        let windowed = self.is_windowed();
        let late = match settings
            .late_policy
            .filter(|_| windowed)
            .unwrap_or(self.default_late_policy())
        {
            LatePolicyKind::Drop => LatePolicy::Drop,
            LatePolicyKind::SideOutput => LatePolicy::SideOutput,
            LatePolicyKind::Correct => LatePolicy::Correct {
                max_lateness: settings.max_lateness.unwrap_or(DEFAULT_MAX_LATENESS),
            },
        };
        ResolvedSettings {
            window: if windowed {
                settings.window.or(self.default_window())
            } else {
                None
            },
            grace: if windowed {
                settings.grace.unwrap_or(self.default_grace())
            } else {
                Millis::ZERO
            },
            late_policy: late,
            max_out_of_orderness: settings
                .max_out_of_orderness
                .unwrap_or(DEFAULT_MAX_OUT_OF_ORDERNESS),
            idle_timeout: settings.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// The late policy with its parameter, after defaults (maps onto `rtb_stream::window::LatePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// Count and drop.
    Drop,
    /// Send to the late-records output.
    SideOutput,
    /// Correct emitted windows for `max_lateness` after they completed.
    Correct {
        /// How long windows stay correctable.
        max_lateness: Millis,
    },
}

/// An operator's effective settings: what was written, over its kind's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedSettings {
    /// Window size; `None` for kinds without windows.
    pub window: Option<Millis>,
    /// Grace after a window's end (0 for kinds without windows).
    pub grace: Millis,
    /// Late-record policy (meaningful for windowed kinds).
    pub late_policy: LatePolicy,
    /// Watermark: allowed out-of-orderness.
    pub max_out_of_orderness: Millis,
    /// Watermark: idle timeout.
    pub idle_timeout: Millis,
}

impl ResolvedSettings {
    /// The runtime's watermark configuration.
    pub fn watermark_config(&self) -> WatermarkConfig {
        WatermarkConfig {
            max_out_of_orderness: self.max_out_of_orderness.as_ms(),
            idle_timeout: Some(self.idle_timeout.as_ms()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn performance_defaults_are_five_minute_windows_with_corrections() {
        let r = OperatorKind::Performance.resolve(&OperatorSettings::default());
        assert_eq!(r.window, Some(Millis::minutes(5)));
        assert_eq!(r.grace, Millis::minutes(1));
        assert_eq!(
            r.late_policy,
            LatePolicy::Correct {
                max_lateness: Millis::hours(1)
            }
        );
        assert_eq!(
            r.watermark_config(),
            WatermarkConfig {
                max_out_of_orderness: 5_000,
                idle_timeout: Some(10_000)
            }
        );
    }

    #[test]
    fn written_settings_override_defaults() {
        let s = OperatorSettings {
            window: Some(Millis::minutes(10)),
            late_policy: Some(LatePolicyKind::Correct),
            max_lateness: Some(Millis::minutes(30)),
            idle_timeout: Some(Millis::secs(2)),
            ..OperatorSettings::default()
        };
        let r = OperatorKind::DuplicateDetection.resolve(&s);
        assert_eq!(r.window, Some(Millis::minutes(10)));
        assert_eq!(
            r.late_policy,
            LatePolicy::Correct {
                max_lateness: Millis::minutes(30)
            }
        );
        assert_eq!(r.idle_timeout, Millis::secs(2));
        assert_eq!(r.grace, Millis::ZERO);
    }

    #[test]
    fn workers_have_no_window_even_if_one_is_written() {
        let s = OperatorSettings {
            window: Some(Millis::minutes(1)),
            ..OperatorSettings::default()
        };
        assert_eq!(OperatorKind::Balance.resolve(&s).window, None);
        assert!(!OperatorKind::Balance.is_windowed());
        assert!(OperatorKind::ConversionMatching.is_windowed());
    }
}
