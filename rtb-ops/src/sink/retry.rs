//! What the server-backed sinks (Redis, PostgreSQL) share: a small connection pool and a bounded retry
//! loop around every call.
//!
//! A call that fails because the server is unreachable (refused, dropped, timed out, shutting down, a
//! transient SQLSTATE) drops its connection, waits with exponential backoff and tries again on a fresh
//! one; the first failure logs a `warn` (the sink *pauses*), the first success after failures logs that
//! it *resumes*. After [`RetryPolicy::give_up_after`] without success the call returns
//! [`Error::Sink`](crate::Error::Sink) naming the sink, the operation and the last failure: the caller
//! (the runtime) then stops, with its state and offsets still consistent, instead of looping. Any other
//! failure (a constraint, a script error, bad data) is returned at once.
//!
//! Every sink call is idempotent (idempotency keys, set semantics), so repeating one whose effect was
//! applied but whose answer was lost never applies it twice; only the *answer* of such a repeat can say
//! "already there" (`Duplicate`, `false`) for what this very call applied.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// How long and how often a server-backed sink retries a call while its server is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time a call keeps retrying before it fails with an error (default 60 s).
    pub give_up_after: Duration,
    /// Wait before the first retry; doubled after each failure (default 50 ms).
    pub first_backoff: Duration,
    /// Longest wait between two tries (default 2 s).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            give_up_after: Duration::from_secs(60),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Idle connections of one server, reused by every call of a sink handle (connections are made on
/// demand: as many as calls run at once; at most `max_idle` are kept).
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    max_idle: usize,
}

impl<C> std::fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("idle", &self.idle.lock().len()).field("max_idle", &self.max_idle).finish()
    }
}

impl<C> Pool<C> {
    pub(crate) fn new(max_idle: usize) -> Self {
        Self { idle: Mutex::new(Vec::new()), max_idle }
    }

    fn take(&self) -> Option<C> {
        self.idle.lock().pop()
    }

    fn give(&self, c: C) {
        let mut idle = self.idle.lock();
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    /// Drops every idle connection (after the server was seen down, they are all stale).
    pub(crate) fn clear(&self) {
        self.idle.lock().clear();
    }
}

/// A failure of one try: transient (retry on a new connection) or final.
pub(crate) enum Try<E> {
    /// The server is unreachable or asked to try again.
    Transient(E),
    /// Anything else: returned at once.
    Final(E),
}

/// Runs `f` on a pooled connection (made by `connect` when none is idle), retrying transient failures
/// under `policy`, logging the pause and the resume. `sink` and `op` name the call in logs and errors.
pub(crate) fn call<C, T, E: std::fmt::Display>(
    sink: &'static str,
    op: &'static str,
    policy: &RetryPolicy,
    pool: &Pool<C>,
    connect: impl Fn() -> std::result::Result<C, Try<E>>,
    mut f: impl FnMut(&mut C) -> std::result::Result<T, Try<E>>,
) -> Result<T> {
    let started = Instant::now();
    let mut backoff = policy.first_backoff;
    let mut failures = 0u32;
    loop {
        let attempt = match pool.take() {
            Some(c) => Ok(c),
            None => connect(),
        }
        .and_then(|mut c| match f(&mut c) {
            Ok(v) => {
                pool.give(c);
                Ok(v)
            }
            Err(Try::Final(e)) => {
                // The connection is fine (a constraint, a script error): keep it.
                pool.give(c);
                Err(Try::Final(e))
            }
            Err(t) => Err(t),
        });
        match attempt {
            Ok(v) => {
                if failures > 0 {
                    tracing::warn!(
                        sink,
                        operation = op,
                        failures,
                        paused_ms = started.elapsed().as_millis() as u64,
                        "sink `{sink}` is reachable again: resuming"
                    );
                }
                return Ok(v);
            }
            Err(Try::Final(e)) => return Err(Error::sink(sink, op, e)),
            Err(Try::Transient(e)) => {
                pool.clear();
                failures += 1;
                let waited = started.elapsed();
                if waited >= policy.give_up_after {
                    tracing::error!(sink, operation = op, failures, "sink `{sink}` unreachable for {waited:?}: giving up: {e}");
                    return Err(Error::sink(
                        sink,
                        op,
                        format!("unreachable for {waited:?} ({failures} tries, giving up after {:?}): {e}", policy.give_up_after),
                    ));
                }
                if failures == 1 {
                    tracing::warn!(
                        sink,
                        operation = op,
                        "sink `{sink}` unreachable: pausing, retrying with backoff for up to {:?}: {e}",
                        policy.give_up_after
                    );
                } else {
                    tracing::warn!(sink, operation = op, failures, waited_ms = waited.as_millis() as u64, "sink `{sink}` still unreachable: {e}");
                }
                std::thread::sleep(backoff.min(policy.give_up_after.saturating_sub(waited)));
                backoff = (backoff * 2).min(policy.max_backoff);
            }
        }
    }
}

/// Splits `name=value` settings off a server URL's query string: the ones in `ours` are returned (and
/// removed), the rest stay in the URL passed to the driver. A setting in `ours` given twice is an error.
pub(crate) fn take_settings(url: &str, ours: &[&str]) -> Result<(String, Vec<(String, String)>)> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_owned(), Vec::new())) };
    let mut kept = Vec::new();
    let mut taken: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if ours.contains(&k) {
            if taken.iter().any(|(t, _)| t == k) {
                return Err(Error::Config(format!("`{k}` given twice in the sink URL")));
            }
            taken.push((k.to_owned(), v.to_owned()));
        } else {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, taken))
}

/// A `retry_for` setting (`30s`, `500ms`, `2m`, or plain seconds).
pub(crate) fn parse_duration(name: &str, v: &str) -> Result<Duration> {
    let bad = || Error::Config(format!("`{name}={v}`: expected a duration such as 30s, 500ms or 2m"));
    let (num, unit) = v.find(|c: char| !c.is_ascii_digit()).map_or((v, "s"), |i| v.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    })
}

/// A name usable as a key prefix or PostgreSQL schema: letters, digits, `_`, `-`, `.`, `:` (prefix) —
/// checked by the caller's `allowed`.
pub(crate) fn check_name(what: &str, v: &str, allowed: impl Fn(char) -> bool) -> Result<()> {
    if v.is_empty() || !v.chars().all(allowed) {
        return Err(Error::Config(format!("invalid {what} `{v}`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn settings_come_off_the_url() {
        let (u, s) = take_settings("redis://h:1/0?prefix=t1&x=2&retry_for=5s", &["prefix", "retry_for"]).unwrap();
        assert_eq!(u, "redis://h:1/0?x=2");
        assert_eq!(s, vec![("prefix".into(), "t1".into()), ("retry_for".into(), "5s".into())]);
        assert_eq!(take_settings("redis://h", &["prefix"]).unwrap(), ("redis://h".into(), vec![]));
        assert!(take_settings("redis://h?prefix=a&prefix=b", &["prefix"]).is_err());
        assert_eq!(parse_duration("d", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("d", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("d", "7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("d", "7h").is_err());
    }

    #[test]
    fn a_transient_failure_is_retried_then_gives_up_with_an_error() {
        let policy = RetryPolicy {
            give_up_after: Duration::from_millis(200),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
        };
        let pool: Pool<u32> = Pool::new(2);
        let mut n = 0;
        let v = call("t", "op", &policy, &pool, || Ok(1), |_| {
            n += 1;
            if n < 3 { Err(Try::Transient("down")) } else { Ok(n) }
        })
        .unwrap();
        assert_eq!(v, 3);
        let started = Instant::now();
        let empty: Pool<u32> = Pool::new(2);
        let e = call::<u32, (), _>("t", "op", &policy, &empty, || Err(Try::Transient("refused")), |_| Ok(())).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(e.to_string().contains("unreachable") && e.to_string().contains("refused"), "{e}");
        let e = call::<u32, (), _>("t", "op", &policy, &pool, || Ok(1), |_| Err(Try::Final("constraint"))).unwrap_err();
        assert!(e.to_string().contains("constraint"), "{e}");
    }
}
