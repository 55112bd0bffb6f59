//! Fault injection, reached through [`crate::RunningAxonServer::faults`].
//!
//! Every fault acts on live streams the way a real server or network failure
//! would, so the client's recovery path can be tested: dropped streams end
//! with `UNAVAILABLE` (their registrations are removed and pending commands
//! answered with AXONIQ-4001), withheld permits stop every delivery (queues
//! keep filling up to their limits), delayed acks arrive late, and a
//! reconnect request is a real `RequestReconnect` on the control stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use telamon_axon_proto::pb;
use tonic::Status;

use crate::state::{Shared, lock};

/// Handle for injecting faults into a running server.
#[derive(Debug, Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

impl Faults {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Ends every stream of `client_id` with `UNAVAILABLE`; returns how many were ended.
    pub fn drop_client(&self, client_id: &str) -> usize {
        let status =
            Status::unavailable(format!("streams of {client_id} dropped by fault injection"));
        self.shared.streams.close_client(client_id, &status)
    }

    /// Ends every open stream with `UNAVAILABLE`; returns how many were ended.
    pub fn close_all_streams(&self) -> usize {
        let status = Status::unavailable("all streams closed by fault injection");
        self.shared.streams.close_all(&status)
    }

    /// Stops every delivery (commands, queries, events) even when permits exist.
    pub fn withhold_permits(&self) {
        self.shared.faults.withhold.store(true, Ordering::SeqCst);
    }

    /// Resumes deliveries and flushes everything the permits allow.
    pub fn release_permits(&self) {
        self.shared.faults.withhold.store(false, Ordering::SeqCst);
        lock(&self.shared.commands).drain_all(false);
        lock(&self.shared.queries).drain_all(false);
        self.shared.events.wake();
    }

    /// Delays every instruction ack by `delay` (zero turns the fault off).
    pub fn delay_acks(&self, delay: Duration) {
        *lock(&self.shared.faults.ack_delay) = delay;
    }

    /// Sends `RequestReconnect` on the control stream of `client_id`; false when it has none.
    pub fn request_reconnect(&self, client_id: &str) -> bool {
        let instruction = pb::control::PlatformOutboundInstruction {
            instruction_id: String::new(),
            request: Some(
                pb::control::platform_outbound_instruction::Request::RequestReconnect(
                    pb::control::RequestReconnect {},
                ),
            ),
        };
        lock(&self.shared.platform).send_to(client_id, instruction)
    }

    /// Changes the pending-request timeout (AXONIQ-4002 / AXONIQ-5006) of the running server.
    pub fn set_pending_request_timeout(&self, timeout: Duration) {
        *lock(&self.shared.faults.pending_request_timeout) = timeout;
    }

    /// Changes how often pending requests are checked; takes effect after the current wait.
    pub fn set_sweep_interval(&self, interval: Duration) {
        *lock(&self.shared.faults.sweep_interval) = interval;
    }
}
