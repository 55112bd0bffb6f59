//! The clients registered on control streams, shared by the platform service
//! and the other services (which send them instructions).

use std::collections::HashMap;
use std::time::Instant;

use telamon_axon_proto::pb::InstructionResult;
use telamon_axon_proto::pb::control::PlatformOutboundInstruction;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Outgoing;
use tokio::sync::oneshot;

use crate::handler_info::ConnectedClient;
use crate::support::{Outbound, next_message_id};

#[derive(Debug)]
pub(crate) struct ClientEntry {
    pub(crate) info: ConnectedClient,
    pub(crate) stream_id: u64,
    pub(crate) tx: Outbound<PlatformOutboundInstruction>,
    pub(crate) last_heartbeat: Option<Instant>,
}

/// Clients registered on control streams, by client id.
#[derive(Debug, Default)]
pub(crate) struct PlatformState {
    pub(crate) clients: HashMap<String, ClientEntry>,
    /// Processor instructions waiting for their `InstructionResult`, by instruction id.
    pub(crate) awaiting_result: HashMap<String, oneshot::Sender<InstructionResult>>,
}

impl PlatformState {
    /// Sends `instruction` on the control stream of `client_id`.
    pub(crate) fn send_to(
        &self,
        client_id: &str,
        instruction: PlatformOutboundInstruction,
    ) -> bool {
        self.clients
            .get(client_id)
            .is_some_and(|entry| entry.tx.send(Ok(instruction)).is_ok())
    }

    /// Sends a processor instruction with a fresh id; the receiver yields its result.
    pub(crate) fn send_instruction(
        &mut self,
        client_id: &str,
        request: Outgoing,
    ) -> Option<(String, oneshot::Receiver<InstructionResult>)> {
        let id = next_message_id();
        let entry = self.clients.get(client_id)?;
        entry.tx.send(Ok(outbound(request, &id))).ok()?;
        let (tx, rx) = oneshot::channel();
        self.awaiting_result.insert(id.clone(), tx);
        Some((id, rx))
    }

    /// Forgets an instruction whose result never came.
    pub(crate) fn forget_instruction(&mut self, instruction_id: &str) {
        self.awaiting_result.remove(instruction_id);
    }

    pub(crate) fn complete_instruction(&mut self, result: InstructionResult) {
        if let Some(waiter) = self.awaiting_result.remove(&result.instruction_id) {
            let _ = waiter.send(result);
        }
    }

    /// Tags of a registered client.
    pub(crate) fn tags(&self, client_id: &str) -> Option<HashMap<String, String>> {
        self.clients
            .get(client_id)
            .map(|e| e.info.identification.tags.clone())
    }

    /// Snapshot of the registered clients.
    pub(crate) fn clients(&self) -> Vec<ConnectedClient> {
        let mut clients: Vec<_> = self.clients.values().map(|e| e.info.clone()).collect();
        clients.sort_by(|a, b| a.identification.client_id.cmp(&b.identification.client_id));
        clients
    }
}

pub(crate) fn outbound(request: Outgoing, instruction_id: &str) -> PlatformOutboundInstruction {
    PlatformOutboundInstruction {
        request: Some(request),
        instruction_id: instruction_id.to_owned(),
    }
}
