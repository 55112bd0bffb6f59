//! What tests can see of registered handlers and connected clients.

use std::collections::{BTreeMap, HashMap};

use telamon_axon_proto::pb;

/// A command handler registration as seen by tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandHandlerInfo {
    /// Client id of the handler stream.
    pub client_id: String,
    /// Component name of the handler.
    pub component_name: String,
    /// Load factor (0 on the wire is stored as 100).
    pub load_factor: i32,
    /// Permits granted and not yet consumed.
    pub permits: i64,
    /// Commands queued for this stream, waiting for permits.
    pub queued: usize,
}

/// A query handler registration as seen by tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryHandlerInfo {
    /// Client id of the handler stream.
    pub client_id: String,
    /// Component name of the handler.
    pub component_name: String,
    /// Permits granted and not yet consumed.
    pub permits: i64,
    /// Messages queued for this stream, waiting for permits.
    pub queued: usize,
}

/// A client that registered on a control stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectedClient {
    /// The identification sent in `register`.
    pub identification: pb::control::ClientIdentification,
    /// Heartbeats received from the client.
    pub heartbeats_received: u64,
    /// Latest event processor info per processor name.
    pub processors: BTreeMap<String, pb::control::EventProcessorInfo>,
    /// Acks received for server instructions.
    pub acks_received: Vec<pb::InstructionAck>,
}

/// A `ListEvents` stream as seen by tests: where it is and what it may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTrackerInfo {
    /// Client id from the first request.
    pub client_id: String,
    /// Token of the next event it would send.
    pub next_token: i64,
    /// Permits granted and not yet used.
    pub permits: i64,
    /// Events in the store when it last decided what to send: with
    /// `next_token` below this it held an existing event back.
    pub events_seen: i64,
}

/// Open stream counts by kind.
pub type StreamCounts = HashMap<crate::stream_registry::StreamKind, usize>;
