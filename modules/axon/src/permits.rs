//! The permit window of one stream: granted up front, refilled in batches
//! as handlers *finish* (not as messages arrive), so the server never has
//! more messages out than the bridge has room to work on.
//!
//! # Under stress
//!
//! - **Slow handlers**: every message in work holds its permit; once the
//!   window is used up, AxonServer queues further messages on its side (and
//!   answers AXONIQ-1900 past its own limit), the bridge's memory stays flat.
//! - **Every inbound kind that costs a permit is counted** (commands;
//!   queries, query cancels and query flow-control messages), so the window
//!   never drifts and a stream is never starved by a leaked permit
//!   (CONNECTOR §D.4).

use std::sync::Mutex;

use telamon_sdk::Gauge;

/// One stream's window.
#[derive(Debug)]
pub(crate) struct Permits {
    window: u32,
    refill: u32,
    finished: Mutex<u32>,
    /// Permits the server may still use.
    available: Gauge,
}

impl Permits {
    pub(crate) fn new(window: u32, refill: u32, available: Gauge) -> Self {
        available.set(0);
        Permits {
            window,
            refill: refill.clamp(1, window.max(1)),
            finished: Mutex::new(0),
            available,
        }
    }

    /// The grant a new stream starts with.
    pub(crate) fn open(&self) -> i64 {
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = 0;
        self.available.set(i64::from(self.window));
        i64::from(self.window)
    }

    /// A message that costs a permit arrived.
    pub(crate) fn consumed(&self) {
        self.available.add(-1);
    }

    /// Its work finished; `Some(n)` when `n` permits should be granted now.
    pub(crate) fn finished(&self) -> Option<i64> {
        let mut done = self.finished.lock().unwrap_or_else(|e| e.into_inner());
        *done += 1;
        if *done >= self.refill {
            *done -= self.refill;
            self.available.add(i64::from(self.refill));
            Some(i64::from(self.refill))
        } else {
            None
        }
    }

    /// The stream ended: nothing is outstanding any more.
    pub(crate) fn closed(&self) {
        self.available.set(0);
    }

    /// Permits the server may use now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> i64 {
        self.available.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_come_in_batches_after_work_finishes() {
        let p = Permits::new(16, 4, Gauge::default());
        assert_eq!(p.open(), 16);
        for _ in 0..16 {
            p.consumed();
        }
        assert_eq!(p.available(), 0);
        let grants: Vec<Option<i64>> = (0..9).map(|_| p.finished()).collect();
        assert_eq!(grants.iter().flatten().sum::<i64>(), 8);
        assert_eq!(grants[3], Some(4));
        assert_eq!(p.available(), 8);
        assert_eq!(p.open(), 16, "a new stream starts with the full window");
    }
}
