//! Shared by the Kafka tests: the broker (a running one is required; the tests fail, never skip, without
//! it) and unique topic prefixes so tests run in parallel and again.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use rtb_stream::kafka::{KafkaConfig, KafkaLog};

/// The broker the tests use: `RTB_KAFKA`, else the local Tansu of `scripts/services.sh`.
pub fn brokers() -> String {
    std::env::var("RTB_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// A topic prefix no other test (or earlier run) uses.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("t-{test}-{}-{nanos}-{}-", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A configuration for the test broker with a fresh prefix, retrying little (a missing broker fails fast).
pub fn config(test: &str) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(brokers()).with_prefix(unique_prefix(test));
    cfg.attempts = 3;
    cfg.request_timeout = std::time::Duration::from_secs(5);
    cfg
}

/// Connects, or panics naming the broker and how to start it.
pub fn connect(cfg: KafkaConfig) -> KafkaLog {
    let brokers = cfg.brokers.clone();
    KafkaLog::connect(cfg).unwrap_or_else(|e| {
        panic!("no Kafka broker at {brokers} ({e}); start one with scripts/services.sh (Tansu) or set RTB_KAFKA")
    })
}
