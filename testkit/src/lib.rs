//! An in-process, protocol-faithful AxonServer-compatible gRPC test server.
//!
//! ```
//! use telamon_axon_proto::pb::control::ClientIdentification;
//! use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
//! use telamon_testkit::AxonTestServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = AxonTestServer::builder().start().await?; // 127.0.0.1, ephemeral port
//! let mut platform = PlatformServiceClient::connect(server.url()).await?;
//! let info = platform
//!     .get_platform_server(ClientIdentification::default())
//!     .await?
//!     .into_inner();
//! assert!(info.same_connection);
//! server.stop().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The server serves `PlatformService`, `CommandService`, `QueryService`
//! (handler streams, `Query` and `Subscription`) and `EventStore` with the
//! behaviour described in the project's AxonServer semantics notes (SE
//! flavour): permits, routing, in-band error codes, transactional appends,
//! tracking streams. See `docs/axon-testkit.md` for the full list and the
//! decisions taken where the protocol is ambiguous. All state is kept in
//! memory and lost when the server stops. [`RunningAxonServer`] exposes the
//! state for assertions and a [`Faults`] handle for fault injection.

#![warn(missing_docs)]

mod auth;
mod axon_status;
mod builder;
mod command_router;
mod command_service;
mod consistent_hash;
mod error;
mod event_service;
mod event_store;
mod fault_state;
mod faults;
mod handler_info;
mod platform_service;
mod platform_state;
mod query_router;
mod query_service;
mod queue_limits;
mod server;
mod server_config;
mod state;
mod stream_registry;
mod support;
mod tag_scoring;
mod tcp_proxy;

pub use auth::CallHeaders;
pub use axon_status::axon_status;
pub use builder::AxonTestServerBuilder;
pub use error::TestServerError;
pub use faults::Faults;
pub use handler_info::{
    CommandHandlerInfo, ConnectedClient, EventTrackerInfo, QueryHandlerInfo, StreamCounts,
};
pub use server::{AxonTestServer, RunningAxonServer, STOP_GRACE};
pub use server_config::ServerConfig;
pub use stream_registry::StreamKind;
pub use tcp_proxy::TcpProxy;
