//! What can go wrong in the bridge, and how it reaches a bus requester.

use std::time::Duration;

use telamon_axon_proto::{error_code, headers};
use telamon_sdk::{HandlerError, RequestError};

use crate::payload::PayloadError;
use crate::selector::SelectorError;
use crate::template::TemplateError;

/// A failed outbound call or mapping.
///
/// A bus requester receives it as a [`HandlerError`] whose code is the
/// `AXONIQ-nnnn` code when AxonServer gave one (in-band or in the
/// `axoniq-errorcode` trailer), otherwise one of the bridge's own codes:
/// `unavailable`, `timeout`, `circuit-open`, `too-large`, `not-connected`,
/// `payload-encode`, `payload-decode`, `payload-type`, `mapping`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// AxonServer (or a handler behind it) answered with an error code.
    #[error("[{code}] {message}")]
    Axon {
        /// `AXONIQ-nnnn`.
        code: String,
        /// The server's message.
        message: String,
        /// Whether it came as a failed gRPC call (not in-band).
        status: Option<tonic::Code>,
    },
    /// The call failed at the gRPC level without an Axon code.
    #[error("gRPC {code:?}: {message}")]
    Grpc {
        /// The status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// No answer within the deadline.
    #[error("no answer from AxonServer within {0:?}")]
    Timeout(Duration),
    /// No connection to AxonServer came up within the deadline.
    #[error("not connected to AxonServer (waited {0:?})")]
    NotConnected(Duration),
    /// The circuit breaker is open after repeated failures.
    #[error("circuit breaker open after repeated failures; next try in {0:?}")]
    CircuitOpen(Duration),
    /// The message is larger than AxonServer accepts; it was not sent.
    #[error(
        "message of {size} bytes exceeds max-message-size of {limit} bytes; not sent (AxonServer would fail the stream)"
    )]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The payload could not be written or read.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The message lacks what the mapping needs (a selector or template found nothing).
    #[error("mapping: {0}")]
    Mapping(String),
    /// The bridge is stopping.
    #[error("the AxonServer bridge is stopping")]
    Stopping,
}

impl From<SelectorError> for BridgeError {
    fn from(e: SelectorError) -> Self {
        BridgeError::Mapping(e.to_string())
    }
}

impl From<TemplateError> for BridgeError {
    fn from(e: TemplateError) -> Self {
        BridgeError::Mapping(e.to_string())
    }
}

impl From<tonic::Status> for BridgeError {
    fn from(status: tonic::Status) -> Self {
        let code = status
            .metadata()
            .get(headers::ERROR_CODE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match code {
            Some(code) => {
                // AxonServer writes `[AXONIQ-nnnn] text`; keep the text.
                let message = status.message();
                let message = message
                    .strip_prefix(&format!("[{code}] "))
                    .unwrap_or(message)
                    .to_owned();
                BridgeError::Axon {
                    code,
                    message,
                    status: Some(status.code()),
                }
            }
            None => BridgeError::Grpc {
                code: status.code(),
                message: status.message().to_owned(),
            },
        }
    }
}

impl BridgeError {
    /// An in-band error (`CommandResponse.error_code` and its `ErrorMessage`).
    pub(crate) fn in_band(
        code: &str,
        error: Option<&telamon_axon_proto::pb::ErrorMessage>,
    ) -> Self {
        let message = match error {
            Some(e) if e.details.is_empty() => e.message.clone(),
            Some(e) => format!("{} ({})", e.message, e.details.join("; ")),
            None => String::new(),
        };
        BridgeError::Axon {
            code: code.to_owned(),
            message,
            status: None,
        }
    }

    /// The code a requester sees.
    pub fn code(&self) -> &str {
        match self {
            BridgeError::Axon { code, .. } => code,
            BridgeError::Grpc { code, .. } => match code {
                tonic::Code::Unavailable => "unavailable",
                tonic::Code::DeadlineExceeded => "timeout",
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                    error_code::AUTHENTICATION_INVALID_TOKEN
                }
                _ => "grpc",
            },
            BridgeError::Timeout(_) => "timeout",
            BridgeError::NotConnected(_) => "not-connected",
            BridgeError::CircuitOpen(_) => "circuit-open",
            BridgeError::TooLarge { .. } => "too-large",
            BridgeError::Payload(p) => p.code(),
            BridgeError::Mapping(_) => "mapping",
            BridgeError::Stopping => "stopping",
        }
    }

    /// The condition names the retry policy matches: the gRPC status name
    /// (`UNAVAILABLE`) and the Axon code, where there are ones.
    pub(crate) fn conditions(&self) -> (Option<&'static str>, Option<&str>) {
        match self {
            BridgeError::Axon { code, status, .. } => (status.map(status_name), Some(code)),
            BridgeError::Grpc { code, .. } => (Some(status_name(*code)), None),
            BridgeError::NotConnected(_) => (Some("UNAVAILABLE"), None),
            BridgeError::Timeout(_) => (Some("DEADLINE_EXCEEDED"), None),
            _ => (None, None),
        }
    }

    /// True when the failure says nothing about the payload: the transport,
    /// a deadline, or the server's capacity. These count against the circuit
    /// breaker; a handler's or the event store's verdict does not.
    pub(crate) fn is_transport(&self) -> bool {
        match self {
            BridgeError::Grpc { .. } | BridgeError::Timeout(_) | BridgeError::NotConnected(_) => {
                true
            }
            // AXONIQ-4001 is the *handler's* connection failing, not ours.
            BridgeError::Axon { code, .. } => {
                code == error_code::TOO_MANY_REQUESTS
                    || code == error_code::NO_AXONSERVER_FOR_CONTEXT
                    || code == error_code::AXONSERVER_NODE_NOT_CONNECTED
            }
            _ => false,
        }
    }
}

impl BridgeError {
    /// The error a bus requester receives: the server's message with the
    /// `AXONIQ-nnnn` code, or this error's text with the bridge's own code.
    pub fn into_handler_error(self) -> HandlerError {
        let code = self.code().to_owned();
        let message = match &self {
            BridgeError::Axon { message, .. } => message.clone(),
            other => other.to_string(),
        };
        HandlerError::new(message).with_code(code)
    }
}

/// The code an incoming command or query is answered with when the bus
/// could not run its request: nobody on the bus takes the topic →
/// `no_handler` (as a handler answers a name it does not know), the handler
/// went away or the bus closed while it was in work → AXONIQ-4001 (as
/// AxonServer answers when a handler's connection goes), anything else (a
/// timeout, a broker error) → `failed`.
pub(crate) fn bus_failure_code(
    e: &RequestError,
    no_handler: &'static str,
    failed: &'static str,
) -> &'static str {
    if e.is_no_responder() {
        no_handler
    } else if e.is_dropped() || e.is_closed() {
        error_code::CONNECTION_TO_HANDLER_LOST
    } else {
        failed
    }
}

/// The canonical upper-case name of a gRPC status code.
pub(crate) fn status_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Every gRPC status name.
pub(crate) const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    #[test]
    fn a_trailer_code_is_kept_with_the_servers_text() {
        let mut md = MetadataMap::new();
        md.insert(headers::ERROR_CODE, "AXONIQ-2000".parse().unwrap());
        let status = tonic::Status::with_metadata(
            tonic::Code::OutOfRange,
            "[AXONIQ-2000] Invalid sequence number 3 for aggregate a, expected 2",
            md,
        );
        let e = BridgeError::from(status);
        assert_eq!(e.code(), "AXONIQ-2000");
        assert_eq!(e.conditions(), (Some("OUT_OF_RANGE"), Some("AXONIQ-2000")));
        assert!(!e.is_transport());
        let h = e.into_handler_error();
        assert_eq!(h.code(), Some("AXONIQ-2000"));
        assert_eq!(
            h.message(),
            "Invalid sequence number 3 for aggregate a, expected 2"
        );
        let plain = BridgeError::from(tonic::Status::unavailable("gone"));
        assert_eq!(plain.code(), "unavailable");
        assert!(plain.is_transport());
    }
}
