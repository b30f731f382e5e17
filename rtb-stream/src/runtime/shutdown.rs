//! Cooperative stop signals for tasks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Asks every task of a runtime to stop: each task finishes the batch it is processing, commits its state
/// and offsets, and returns. Clones share the same signal.
#[derive(Clone, Debug, Default)]
pub struct ShutdownToken {
    flag: Arc<AtomicBool>,
}

impl ShutdownToken {
    /// A token not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Triggers the shutdown (idempotent).
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether the shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Stops every task of a runtime **as a crash would**: at the next record boundary, without draining,
/// emitting buffered outputs or committing. Meant for recovery tests: after an abort, the state backend
/// and the log hold exactly what a killed process would have left, and a restart must resume consistently.
#[derive(Clone, Debug, Default)]
pub struct AbortHandle {
    token: ShutdownToken,
}

impl AbortHandle {
    /// Aborts every task (idempotent).
    pub fn abort(&self) {
        self.token.trigger();
    }

    /// Whether an abort was requested.
    pub fn is_aborted(&self) -> bool {
        self.token.is_triggered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_signal() {
        let a = ShutdownToken::new();
        let b = a.clone();
        assert!(!b.is_triggered());
        a.trigger();
        assert!(b.is_triggered());
        let h = AbortHandle::default();
        let h2 = h.clone();
        h2.abort();
        assert!(h.is_aborted());
    }
}
