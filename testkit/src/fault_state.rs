//! The fault settings a running server consults, changed through [`crate::Faults`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::server_config::ServerConfig;
use crate::support::lock;

/// Mutable fault settings.
#[derive(Debug)]
pub(crate) struct FaultState {
    pub(crate) withhold: AtomicBool,
    pub(crate) ack_delay: Mutex<Duration>,
    pub(crate) pending_request_timeout: Mutex<Duration>,
    pub(crate) sweep_interval: Mutex<Duration>,
}

impl FaultState {
    pub(crate) fn new(config: &ServerConfig) -> Self {
        Self {
            withhold: AtomicBool::new(false),
            ack_delay: Mutex::new(Duration::ZERO),
            pending_request_timeout: Mutex::new(config.pending_request_timeout),
            sweep_interval: Mutex::new(config.sweep_interval),
        }
    }

    /// Whether deliveries are currently withheld.
    pub(crate) fn withheld(&self) -> bool {
        self.withhold.load(Ordering::SeqCst)
    }

    pub(crate) fn ack_delay(&self) -> Duration {
        *lock(&self.ack_delay)
    }

    pub(crate) fn pending_request_timeout(&self) -> Duration {
        *lock(&self.pending_request_timeout)
    }

    pub(crate) fn sweep_interval(&self) -> Duration {
        *lock(&self.sweep_interval)
    }
}
