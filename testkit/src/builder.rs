//! The builder of the test server.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::TestServerError;
use crate::server::{AxonTestServer, RunningAxonServer};
use crate::server_config::ServerConfig;

impl AxonTestServer {
    /// A builder with [`ServerConfig::default`].
    #[must_use]
    pub fn builder() -> AxonTestServerBuilder {
        AxonTestServerBuilder::default()
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

    /// Accepts only these contexts (see [`ServerConfig::contexts`]).
    #[must_use]
    pub fn contexts(mut self, contexts: &[&str]) -> Self {
        self.config.contexts = Some(contexts.iter().map(|c| (*c).to_owned()).collect());
        self
    }

    /// Refuses calls without an `axoniq-clientid` header.
    #[must_use]
    pub fn require_client_id(mut self, required: bool) -> Self {
        self.config.require_client_id = required;
        self
    }

    /// Routes clients to `node` from `GetPlatformServer` (`same_connection = false`).
    #[must_use]
    pub fn redirect_to(mut self, node: Option<SocketAddr>) -> Self {
        self.config.redirect_to = node;
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
