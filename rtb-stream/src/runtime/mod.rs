//! Runtime (being written: the output type is fixed, the runtime lands next).

use crate::log::ProduceRecord;

/// A record an operator sends to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Destination topic.
    pub topic: String,
    /// The record.
    pub record: ProduceRecord,
}
