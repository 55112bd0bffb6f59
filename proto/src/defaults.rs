//! Server defaults and limits that behave like part of the wire contract.

use std::time::Duration;

/// Default client gRPC port of AxonServer.
pub const GRPC_PORT: u16 = 8124;

/// Default HTTP port of AxonServer.
pub const HTTP_PORT: u16 = 8024;

/// Default cluster-internal gRPC port of AxonServer.
pub const INTERNAL_GRPC_PORT: u16 = 8224;

/// Default maximum size of one gRPC message (4 MiB); both sides must raise it together.
pub const MAX_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Interval of the server's HTTP/2 keep-alive pings.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(2_500);

/// How long the server waits for a keep-alive ping to be answered.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest interval between client pings that the server accepts.
pub const MIN_CLIENT_PING_INTERVAL: Duration = Duration::from_secs(1);

/// Interval of server heartbeats (when heartbeats are enabled).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Silence after which the server drops a heartbeating client's streams.
pub const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(5_000);

/// Oldest client version the server sends heartbeats to.
pub const HEARTBEAT_MIN_CLIENT_VERSION: &str = "4.2.1";

/// Time after which a pending command or query fails (AXONIQ-4002 / AXONIQ-5006).
pub const PENDING_REQUEST_TIMEOUT: Duration = Duration::from_millis(300_000);

/// Deadline for delivering a query to a handler when it has no TIMEOUT instruction.
pub const QUERY_DELIVERY_TIMEOUT: Duration = Duration::from_millis(5_000);

/// Soft per-handler queue limit (messages with priority <= 0), then AXONIQ-1900.
pub const HANDLER_QUEUE_SOFT_LIMIT: usize = 10_000;

/// Hard per-handler queue limit (all messages), then AXONIQ-1900.
pub const HANDLER_QUEUE_HARD_LIMIT: usize = 11_000;

/// Time a `ListEvents` stream may have zero permits before the server fails it.
pub const EVENT_PERMIT_TIMEOUT: Duration = Duration::from_millis(120_000);

/// Consecutive skips after which a blacklisted event is sent anyway.
pub const BLACKLIST_SEND_AFTER: u32 = 1_000;

/// Most events a tracker sends per scheduling round.
pub const TRACKING_BATCH_SIZE: usize = 500;

/// Re-scheduling interval of an idle tracker.
pub const TRACKING_IDLE_INTERVAL: Duration = Duration::from_millis(100);

/// Time the server waits for an `InstructionResult` of a processor instruction (then AXONIQ-1004).
pub const INSTRUCTION_RESULT_TIMEOUT: Duration = Duration::from_secs(10);
