//! Every setting of the test server, each default spelled out.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use telamon_axon_proto::defaults;

/// Every setting of the test server. [`Default`] spells each value out.
/// `Debug` shows whether a token is set, never the token.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks an ephemeral port.
    pub bind_address: SocketAddr,
    /// Access token required on every call; `None` = access control off.
    pub access_token: Option<String>,
    /// Interval of server heartbeats on control streams; `None` = off (SE default).
    pub heartbeat_interval: Option<Duration>,
    /// Silence after which a client that has sent heartbeats loses its streams
    /// (only enforced when `heartbeat_interval` is set).
    pub heartbeat_timeout: Duration,
    /// Age after which a pending command fails with AXONIQ-4002 and an active
    /// non-streaming query with AXONIQ-5006.
    pub pending_request_timeout: Duration,
    /// How often pending commands and queries are checked for timeouts.
    pub sweep_interval: Duration,
    /// Deadline for delivering a query to a handler when it has no TIMEOUT instruction.
    pub query_delivery_timeout: Duration,
    /// Time a `ListEvents` stream may sit at zero permits before it is failed.
    pub event_permit_timeout: Duration,
    /// Largest gRPC message accepted or sent.
    pub max_message_size: usize,
    /// Per-handler queue length from which messages with priority <= 0 get AXONIQ-1900.
    pub handler_queue_soft_limit: usize,
    /// Per-handler queue length from which every message gets AXONIQ-1900.
    pub handler_queue_hard_limit: usize,
    /// Contexts that exist; `None` accepts any (SE, single context). With a
    /// list, a call for another context (the header, or `default` without
    /// one) fails with `NOT_FOUND` / AXONIQ-1302.
    pub contexts: Option<Vec<String>>,
    /// Refuse calls without an `axoniq-clientid` header (`INVALID_ARGUMENT`).
    pub require_client_id: bool,
    /// Answer `GetPlatformServer` with this node and `same_connection =
    /// false`, as a cluster member that routes the client elsewhere; `None`
    /// answers with the server itself (SE).
    pub redirect_to: Option<SocketAddr>,
    /// Node name reported in `NodeInfo` and used as error location.
    pub node_name: String,
    /// HTTP port reported in `NodeInfo` (nothing listens there).
    pub http_port: u16,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind_address", &self.bind_address)
            .field("access_token", &self.access_token.as_ref().map(|_| "***"))
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("heartbeat_timeout", &self.heartbeat_timeout)
            .field("pending_request_timeout", &self.pending_request_timeout)
            .field("sweep_interval", &self.sweep_interval)
            .field("query_delivery_timeout", &self.query_delivery_timeout)
            .field("event_permit_timeout", &self.event_permit_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("handler_queue_soft_limit", &self.handler_queue_soft_limit)
            .field("handler_queue_hard_limit", &self.handler_queue_hard_limit)
            .field("contexts", &self.contexts)
            .field("require_client_id", &self.require_client_id)
            .field("redirect_to", &self.redirect_to)
            .field("node_name", &self.node_name)
            .field("http_port", &self.http_port)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            access_token: None,
            heartbeat_interval: None,
            heartbeat_timeout: defaults::HEARTBEAT_TIMEOUT,
            pending_request_timeout: defaults::PENDING_REQUEST_TIMEOUT,
            sweep_interval: Duration::from_secs(5),
            query_delivery_timeout: defaults::QUERY_DELIVERY_TIMEOUT,
            event_permit_timeout: defaults::EVENT_PERMIT_TIMEOUT,
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            handler_queue_soft_limit: defaults::HANDLER_QUEUE_SOFT_LIMIT,
            handler_queue_hard_limit: defaults::HANDLER_QUEUE_HARD_LIMIT,
            contexts: None,
            require_client_id: false,
            redirect_to: None,
            node_name: "axon-testkit".to_owned(),
            http_port: defaults::HTTP_PORT,
        }
    }
}
