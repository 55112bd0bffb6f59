//! Configuration of the test server and its builder.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use telamon_axon_proto::defaults;

use crate::error::TestServerError;
use crate::server::{AxonTestServer, RunningAxonServer};

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
            node_name: "axon-testkit".to_owned(),
            http_port: defaults::HTTP_PORT,
        }
    }
}

/// Builder of an [`AxonTestServer`]; start from [`AxonTestServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct AxonTestServerBuilder {
    config: ServerConfig,
}

impl AxonTestServerBuilder {
    /// Binds to `address` instead of `127.0.0.1:0`.
    #[must_use]
    pub fn bind_address(mut self, address: SocketAddr) -> Self {
        self.config.bind_address = address;
        self
    }

    /// Requires `token` on every call (`None` turns access control off).
    #[must_use]
    pub fn access_token(mut self, token: Option<&str>) -> Self {
        self.config.access_token = token.map(str::to_owned);
        self
    }

    /// Sends server heartbeats every `interval` (`None` = off).
    #[must_use]
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// Sets the heartbeat inactivity timeout.
    #[must_use]
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.config.heartbeat_timeout = timeout;
        self
    }

    /// Sets the pending command / query timeout.
    #[must_use]
    pub fn pending_request_timeout(mut self, timeout: Duration) -> Self {
        self.config.pending_request_timeout = timeout;
        self
    }

    /// Sets how often pending requests are checked for timeouts.
    #[must_use]
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.config.sweep_interval = interval;
        self
    }

    /// Sets the default query delivery deadline.
    #[must_use]
    pub fn query_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.config.query_delivery_timeout = timeout;
        self
    }

    /// Sets the zero-permit timeout of `ListEvents` streams.
    #[must_use]
    pub fn event_permit_timeout(mut self, timeout: Duration) -> Self {
        self.config.event_permit_timeout = timeout;
        self
    }

    /// Sets the largest gRPC message size.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Replaces the whole configuration.
    #[must_use]
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Finishes the builder.
    #[must_use]
    pub fn build(self) -> AxonTestServer {
        AxonTestServer::new(self.config)
    }

    /// Builds and starts the server.
    ///
    /// # Errors
    /// When the socket cannot be bound.
    pub async fn start(self) -> Result<RunningAxonServer, TestServerError> {
        self.build().start().await
    }
}
