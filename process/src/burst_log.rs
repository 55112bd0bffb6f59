//! A warning that is logged once per burst, with a count of what it held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a logged warning the same warning is only counted.
pub(crate) const BURST_WINDOW: Duration = Duration::from_secs(1);

/// Logs the first event of a burst and counts the rest: a flood of hostile
/// messages costs one log line a second, not one per message.
#[derive(Debug, Default)]
pub(crate) struct BurstLog {
    state: Mutex<(Option<Instant>, u64)>,
}

impl BurstLog {
    /// `Some(n)` when this event should be logged, `n` being how many were
    /// held back since the last logged one; `None` when it is only counted.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < BURST_WINDOW => {
                state.1 += 1;
                None
            }
            _ => {
                let held = std::mem::take(&mut state.1);
                state.0 = Some(now);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_and_counts_the_rest() {
        let log = BurstLog::default();
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        log.state.lock().unwrap().0 = Some(Instant::now() - BURST_WINDOW);
        assert_eq!(log.admit(), Some(2));
    }
}
