//! Builders for AxonServer-style errors: gRPC statuses carrying the
//! `axoniq-errorcode` trailer, in-band `ErrorMessage`s and instruction acks.

use telamon_axon_proto::{headers, pb};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// `location` written into every `ErrorMessage` the server creates.
pub(crate) const LOCATION: &str = "AxonServer";

/// A gRPC status with message `[code] text` and trailer `axoniq-errorcode: code`, as SE sends it.
#[must_use]
pub fn axon_status(grpc: Code, error_code: &str, text: &str) -> Status {
    let mut metadata = MetadataMap::new();
    if let Ok(value) = MetadataValue::try_from(error_code) {
        metadata.insert(headers::ERROR_CODE, value);
    }
    Status::with_metadata(grpc, format!("[{error_code}] {text}"), metadata)
}

/// An in-band `ErrorMessage` with the server's location.
pub(crate) fn error_message(error_code: &str, text: impl Into<String>) -> pb::ErrorMessage {
    pb::ErrorMessage {
        message: text.into(),
        location: LOCATION.to_owned(),
        details: Vec::new(),
        error_code: error_code.to_owned(),
    }
}

/// A successful ack of `instruction_id`.
pub(crate) fn ack_ok(instruction_id: &str) -> pb::InstructionAck {
    pb::InstructionAck {
        instruction_id: instruction_id.to_owned(),
        success: true,
        error: None,
    }
}

/// A failed ack of `instruction_id` with AXONIQ-1002 (unsupported instruction).
pub(crate) fn ack_unsupported(instruction_id: &str) -> pb::InstructionAck {
    let mut error = error_message(
        telamon_axon_proto::error_code::UNSUPPORTED_INSTRUCTION,
        "Unsupported instruction",
    );
    error.details.push("Unsupported instruction".to_owned());
    pb::InstructionAck {
        instruction_id: instruction_id.to_owned(),
        success: false,
        error: Some(error),
    }
}
