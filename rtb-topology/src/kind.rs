//! Settings every stage has whatever its kind: the watermark. A kind's own rules (inputs, outputs, sinks,
//! keys) and typed settings come from the [`rtb_stream::registry::Registry`] it is registered in.

use rtb_stream::WatermarkConfig;

use crate::model::WatermarkSettings;
use crate::units::Millis;

/// Default allowed out-of-orderness of every operator's watermark.
pub const DEFAULT_MAX_OUT_OF_ORDERNESS: Millis = Millis::secs(5);
/// Default idle timeout of every operator's watermark.
pub const DEFAULT_IDLE_TIMEOUT: Millis = Millis::secs(10);

/// A stage's watermark settings: what was written, over the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedSettings {
    /// Watermark: allowed out-of-orderness.
    pub max_out_of_orderness: Millis,
    /// Watermark: idle timeout.
    pub idle_timeout: Millis,
}

impl ResolvedSettings {
    /// `written` over the defaults.
    pub fn resolve(written: &WatermarkSettings) -> Self {
        Self {
            max_out_of_orderness: written.max_out_of_orderness.unwrap_or(DEFAULT_MAX_OUT_OF_ORDERNESS),
            idle_timeout: written.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT),
        }
    }

    /// The runtime's watermark configuration.
    pub fn watermark_config(&self) -> WatermarkConfig {
        WatermarkConfig {
            max_out_of_orderness: self.max_out_of_orderness.to_std(),
            idle_timeout: Some(self.idle_timeout.to_std()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_defaults_and_overrides() {
        let r = ResolvedSettings::resolve(&WatermarkSettings::default());
        assert_eq!(
            r.watermark_config(),
            WatermarkConfig { max_out_of_orderness: std::time::Duration::from_secs(5), idle_timeout: Some(std::time::Duration::from_secs(10)) }
        );
        let written = WatermarkSettings { idle_timeout: Some(Millis::secs(2)), ..WatermarkSettings::default() };
        let r = ResolvedSettings::resolve(&written);
        assert_eq!((r.max_out_of_orderness, r.idle_timeout), (Millis::secs(5), Millis::secs(2)));
    }
}
