//! The Kafka broker (`RTB_KAFKA`, default the local Tansu on `127.0.0.1:9092`; see [`require_broker`]) and
//! the Redis and PostgreSQL servers of the real-service tests: `RTB_TEST_REDIS` / `RTB_TEST_POSTGRES`
//! (defaults `redis://127.0.0.1:6379`, `postgres://root@127.0.0.1:5432/test`). A test takes a unique key
//! prefix and schema ([`Servers::new`]), emptied and dropped when it ends; a missing server fails the test,
//! saying how to start it (`scripts/services.sh`).
#![allow(dead_code, clippy::unwrap_used)]

use rtb_ops::sink::{PostgresDatabase, RedisCache};

pub fn redis_url() -> String {
    std::env::var("RTB_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn postgres_url() -> String {
    std::env::var("RTB_TEST_POSTGRES").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

pub fn with_setting(url: &str, setting: &str) -> String {
    format!("{url}{}{setting}", if url.contains('?') { '&' } else { '?' })
}

/// The test's key prefix and schema, emptied and dropped when it ends.
pub struct Servers {
    pub cache: RedisCache,
    pub db: PostgresDatabase,
    /// `--redis` URL with the test's prefix.
    pub redis: String,
    /// `--postgres` URL with the test's schema.
    pub postgres: String,
}

impl Servers {
    pub fn new() -> Self {
        let tag = format!(
            "e2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000
        );
        let redis = with_setting(&redis_url(), &format!("prefix={tag}:&retry_for=5s"));
        let postgres = with_setting(&postgres_url(), &format!("schema={tag}&retry_for=5s"));
        let cache = RedisCache::connect(&redis).unwrap_or_else(|e| {
            panic!("Redis is not reachable ({e}); start it (`redis-server --daemonize yes`) or set RTB_TEST_REDIS")
        });
        let db = PostgresDatabase::connect(&postgres).unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable ({e}); start it (`service postgresql start`) or set RTB_TEST_POSTGRES")
        });
        Self { cache, db, redis, postgres }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.cache.delete_all();
        let _ = self.db.drop_schema();
    }
}

/// The Kafka brokers of the real-service tests: `RTB_KAFKA`, default `127.0.0.1:9092`.
pub fn brokers() -> String {
    std::env::var("RTB_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string())
}

/// Fails (never skips) when no broker answers, naming it and how to start one.
pub fn require_broker() {
    let b = brokers();
    let ok = b.split(',').any(|addr| {
        std::net::ToSocketAddrs::to_socket_addrs(addr)
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(2)).is_ok())
    });
    assert!(ok, "no Kafka broker answers at {b}: start one with scripts/services.sh (Tansu) or set RTB_KAFKA");
}
