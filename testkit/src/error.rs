//! Errors of the test server's own API (starting, stopping).
//!
//! Protocol failures seen by clients are not Rust errors: they travel as gRPC
//! statuses with an `axoniq-errorcode` trailer (see [`crate::axon_status`]) or
//! in band inside `CommandResponse` / `QueryResponse`.

/// Failure of a test-server operation.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// The listening socket could not be bound.
    #[error("cannot bind {address}: {source}")]
    Bind {
        /// Address that was requested.
        address: std::net::SocketAddr,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The bound socket's local address could not be read.
    #[error("cannot read the local address: {0}")]
    LocalAddress(std::io::Error),
    /// The gRPC server task failed.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// No control stream is registered for this client id.
    #[error("no registered client {0}")]
    UnknownClient(String),
    /// The gRPC server task panicked or was aborted.
    #[error("gRPC server task ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
}
