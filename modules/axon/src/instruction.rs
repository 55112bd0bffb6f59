//! Instruction ids and the acknowledgements that answer them (SEMANTICS §3):
//! a message sent with a non-empty `instruction_id` is answered with an
//! `InstructionAck` on the same stream; [`Acks`] pairs the two.

use std::collections::HashMap;
use std::sync::Mutex;

use telamon_axon_proto::pb::{ErrorMessage, InstructionAck, InstructionResult};
use tokio::sync::oneshot;

use crate::error::BridgeError;

/// Acks awaited on one stream.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    waiting: Mutex<HashMap<String, oneshot::Sender<InstructionAck>>>,
}

impl Acks {
    /// A fresh instruction id and the receiver its ack arrives on.
    pub(crate) fn expect(&self) -> (String, oneshot::Receiver<InstructionAck>) {
        let id = crate::ids::uuid();
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        (id, rx)
    }

    /// Hands an arrived ack to its waiter; false when nobody waits for it.
    pub(crate) fn resolve(&self, ack: InstructionAck) -> bool {
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ack.instruction_id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(ack);
                true
            }
            None => false,
        }
    }

    /// Acks still awaited.
    pub(crate) fn pending(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// An unsuccessful ack as an error.
pub(crate) fn ack_error(ack: &InstructionAck) -> BridgeError {
    BridgeError::in_band(
        ack.error
            .as_ref()
            .map_or("AXONIQ-0001", |e| e.error_code.as_str()),
        ack.error.as_ref(),
    )
}

/// An ack of a server instruction.
pub(crate) fn ack(instruction_id: &str, error: Option<ErrorMessage>) -> InstructionAck {
    InstructionAck {
        instruction_id: instruction_id.to_owned(),
        success: error.is_none(),
        error,
    }
}

/// The result of a server instruction.
pub(crate) fn result(instruction_id: &str, error: Option<ErrorMessage>) -> InstructionResult {
    InstructionResult {
        instruction_id: instruction_id.to_owned(),
        success: error.is_none(),
        error,
    }
}

/// An error message located at this client.
pub(crate) fn client_error(code: &str, message: impl Into<String>) -> ErrorMessage {
    ErrorMessage {
        message: message.into(),
        location: "telamon-axon-bridge".to_owned(),
        details: Vec::new(),
        error_code: code.to_owned(),
    }
}
