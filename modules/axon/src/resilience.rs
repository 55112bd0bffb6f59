//! Back-off, the retry policy and the circuit breaker for outbound calls.
//!
//! # Under stress
//!
//! - **AxonServer away**: calls fail with `not-connected` after waiting up to
//!   their deadline for a connection; after `circuit-breaker.failures` such
//!   failures in a row the breaker opens and calls fail at once with
//!   `circuit-open` (no pile-up of waiting requests); after
//!   `circuit-breaker.open-for` one trial call goes through, and its outcome
//!   closes or re-opens the breaker.
//! - **Transient errors** (`retry.on`: `UNAVAILABLE`, AXONIQ-4000/5000 while
//!   handlers re-register after a reconnect, AXONIQ-1900 when a handler's
//!   queue is full) are retried up to `retry.attempts` with growing,
//!   jittered delays, within the call's deadline: nothing waits forever.
//! - Business errors (a handler's AXONIQ-4002, a sequence conflict) are
//!   answers, not failures: never retried, never counted by the breaker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use telamon_sdk::Gauge;

use crate::config::{BackoffConfig, BreakerConfig, RetryConfig};
use crate::error::{BridgeError, STATUS_NAMES};

/// Exponential back-off with jitter and a cap.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Backoff {
    pub(crate) fn new(config: &BackoffConfig) -> Self {
        Backoff {
            initial: config.initial,
            max: config.max,
            multiplier: config.multiplier,
            jitter: config.jitter,
        }
    }

    /// The delay before attempt `attempt` (0 = the first retry).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let grown = self.initial.as_secs_f64() * self.multiplier.powi(attempt.min(64) as i32);
        let capped = grown.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * crate::ids::unit());
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

/// Whether `condition` is a name the retry policy understands.
pub(crate) fn is_known_condition(condition: &str) -> bool {
    STATUS_NAMES.contains(&condition)
        || condition
            .strip_prefix("AXONIQ-")
            .is_some_and(|n| n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Which failures are retried, how often and how far apart.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    attempts: u32,
    backoff: Backoff,
    on: Vec<String>,
}

impl RetryPolicy {
    pub(crate) fn new(config: &RetryConfig) -> Self {
        RetryPolicy {
            attempts: config.attempts,
            backoff: Backoff::new(&BackoffConfig {
                initial: config.initial,
                max: config.max,
                multiplier: 2.0,
                jitter: 0.5,
            }),
            on: config.on.clone(),
        }
    }

    /// The delay before another try after `error` on try `attempt`
    /// (1-based), or `None` when it should not be retried.
    pub(crate) fn next(&self, attempt: u32, error: &BridgeError) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        let (status, code) = error.conditions();
        let listed = |c: Option<&str>| c.is_some_and(|c| self.on.iter().any(|o| o == c));
        (listed(status) || listed(code)).then(|| self.backoff.delay(attempt - 1))
    }
}

/// Closed, open or half-open, as the `…_circuit_state` gauge shows it (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

#[derive(Debug)]
struct BreakerInner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    trial_out: bool,
}

/// Opens after `failures` consecutive transport failures; half-open after `open_for`.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<BreakerInner>,
    gauge: Gauge,
}

/// Permission to make one call; report how it went with [`CircuitBreaker::record`].
#[derive(Debug)]
pub(crate) struct Permit {
    trial: bool,
}

impl CircuitBreaker {
    pub(crate) fn new(config: &BreakerConfig, gauge: Gauge) -> Self {
        gauge.set(BreakerState::Closed as i64);
        CircuitBreaker {
            threshold: config.failures,
            open_for: config.open_for,
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                trial_out: false,
            }),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, inner: &mut BreakerInner, state: BreakerState) {
        if inner.state != state {
            match state {
                BreakerState::Open => tracing::warn!(
                    failures = inner.failures,
                    open_for = ?self.open_for,
                    "AxonServer circuit breaker opened: outbound calls fail at once"
                ),
                BreakerState::HalfOpen => {
                    tracing::info!("AxonServer circuit breaker half-open: one trial call")
                }
                BreakerState::Closed => tracing::info!("AxonServer circuit breaker closed"),
            }
        }
        inner.state = state;
        self.gauge.set(state as i64);
    }

    /// A permit, or how long until the next trial when open.
    pub(crate) fn acquire(&self) -> Result<Permit, BridgeError> {
        if self.threshold == 0 {
            return Ok(Permit { trial: false });
        }
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Ok(Permit { trial: false }),
            BreakerState::Open | BreakerState::HalfOpen => {
                let waited = inner.opened_at.elapsed();
                if waited >= self.open_for && !inner.trial_out {
                    inner.trial_out = true;
                    self.set(&mut inner, BreakerState::HalfOpen);
                    Ok(Permit { trial: true })
                } else {
                    Err(BridgeError::CircuitOpen(
                        self.open_for.saturating_sub(waited),
                    ))
                }
            }
        }
    }

    /// Records the outcome of a call made with `permit`.
    pub(crate) fn record(&self, permit: Permit, outcome: Result<(), &BridgeError>) {
        if self.threshold == 0 {
            return;
        }
        let failed = matches!(outcome, Err(e) if e.is_transport());
        let mut inner = self.lock();
        if permit.trial {
            inner.trial_out = false;
        }
        if failed {
            inner.failures = inner.failures.saturating_add(1);
            if permit.trial || inner.failures >= self.threshold {
                inner.opened_at = Instant::now();
                self.set(&mut inner, BreakerState::Open);
            }
        } else {
            inner.failures = 0;
            if inner.state != BreakerState::Closed
                && (permit.trial || inner.state == BreakerState::HalfOpen)
            {
                self.set(&mut inner, BreakerState::Closed);
            }
        }
    }

    /// The current state.
    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        self.lock().state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> BridgeError {
        BridgeError::from(tonic::Status::unavailable("x"))
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let b = Backoff::new(&BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            multiplier: 2.0,
            jitter: 0.5,
        });
        for _ in 0..100 {
            let d0 = b.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d9 = b.delay(9);
            assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1));
        }
    }

    #[test]
    fn only_listed_conditions_are_retried_within_the_attempts() {
        let p = RetryPolicy::new(&RetryConfig::default());
        assert!(p.next(1, &unavailable()).is_some());
        assert!(p.next(3, &unavailable()).is_none());
        let no_handler = BridgeError::in_band("AXONIQ-4000", None);
        assert!(p.next(1, &no_handler).is_some());
        let handler_failed = BridgeError::in_band("AXONIQ-4002", None);
        assert!(p.next(1, &handler_failed).is_none());
        assert!(is_known_condition("AXONIQ-1900") && is_known_condition("UNAVAILABLE"));
        assert!(!is_known_condition("AXONIQ-19") && !is_known_condition("unavailable"));
    }

    #[test]
    fn the_breaker_opens_half_opens_and_closes() {
        let b = CircuitBreaker::new(
            &BreakerConfig {
                failures: 2,
                open_for: Duration::from_millis(30),
            },
            Gauge::default(),
        );
        let business = BridgeError::in_band("AXONIQ-4002", None);
        for _ in 0..5 {
            let p = b.acquire().unwrap();
            b.record(p, Err(&business));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..2 {
            let p = b.acquire().unwrap();
            b.record(p, Err(&unavailable()));
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.acquire(), Err(BridgeError::CircuitOpen(_))));
        std::thread::sleep(Duration::from_millis(40));
        let trial = b.acquire().unwrap();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.acquire().is_err(), "one trial at a time");
        b.record(trial, Err(&unavailable()));
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        let trial = b.acquire().unwrap();
        b.record(trial, Ok(()));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
