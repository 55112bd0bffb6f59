//! Starting, inspecting and stopping a test server.
//!
//! `start` binds the socket, serves the four services through the access
//! token interceptor and spawns one sweeper task (pending-request timeouts).
//! `stop` cancels every stream (clients see `UNAVAILABLE`), answers what is
//! pending, shuts the gRPC server down gracefully and waits for every task it
//! spawned; a stuck connection is cut after [`STOP_GRACE`]. Dropping a running
//! server without `stop` cancels everything but does not wait.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telamon_axon_proto::pb::InstructionResult;
use telamon_axon_proto::pb::command::command_service_server::CommandServiceServer;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Outgoing;
use telamon_axon_proto::pb::control::platform_service_server::PlatformServiceServer;
use telamon_axon_proto::pb::event::Event;
use telamon_axon_proto::pb::event::event_store_server::EventStoreServer;
use telamon_axon_proto::pb::query::query_service_server::QueryServiceServer;
use telamon_axon_proto::{defaults, error_code};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::auth::{CallCheck, CallHeaders};
use crate::axon_status::error_message;
use crate::command_service::CommandServiceImpl;
use crate::error::TestServerError;
use crate::event_service::EventServiceImpl;
use crate::faults::Faults;
use crate::handler_info::{
    CommandHandlerInfo, ConnectedClient, EventTrackerInfo, QueryHandlerInfo, StreamCounts,
};
use crate::platform_service::PlatformServiceImpl;
use crate::query_service::QueryServiceImpl;
use crate::server_config::ServerConfig;
use crate::state::Shared;
use crate::support::lock;

/// Longest time `stop` waits for the gRPC server to finish before cutting it.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Granularity of the sweeper loop.
const SWEEP_TICK: Duration = Duration::from_millis(20);

/// A configured, not yet started AxonServer-compatible test server.
#[derive(Debug, Clone)]
pub struct AxonTestServer {
    config: ServerConfig,
}

impl AxonTestServer {
    /// A server with `config`.
    #[must_use]
    pub fn new(config: ServerConfig) -> Self {
        Self { config }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds and starts serving; returns once the socket is listening.
    ///
    /// # Errors
    /// When the socket cannot be bound or its address read.
    pub async fn start(self) -> Result<RunningAxonServer, TestServerError> {
        let address = self.config.bind_address;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| TestServerError::Bind { address, source })?;
        let local = listener
            .local_addr()
            .map_err(TestServerError::LocalAddress)?;
        let max = self.config.max_message_size;
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let check = CallCheck::new(&self.config, Arc::clone(&calls));
        let shared = Shared::new(self.config, local.ip().to_string(), local.port());

        let platform = PlatformServiceServer::new(PlatformServiceImpl {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let commands = CommandServiceServer::new(CommandServiceImpl {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let queries = QueryServiceServer::new(QueryServiceImpl {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let events = EventStoreServer::new(EventServiceImpl {
            shared: Arc::clone(&shared),
        })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

        let shutdown = shared.shutdown.clone();
        let router = Server::builder()
            .http2_keepalive_interval(Some(defaults::KEEP_ALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(defaults::KEEP_ALIVE_TIMEOUT))
            .tcp_nodelay(true)
            .add_service(InterceptedService::new(platform, check.clone()))
            .add_service(InterceptedService::new(commands, check.clone()))
            .add_service(InterceptedService::new(queries, check.clone()))
            .add_service(InterceptedService::new(events, check));
        let serve = tokio::spawn(
            router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                shutdown.cancelled().await
            }),
        );
        shared.tasks.spawn(run_sweeper(Arc::clone(&shared)));
        Ok(RunningAxonServer {
            shared,
            address: local,
            serve: Some(serve),
            calls,
        })
    }
}

async fn run_sweeper(shared: Arc<Shared>) {
    let mut last = Instant::now();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            () = tokio::time::sleep(SWEEP_TICK) => {}
        }
        if last.elapsed() < shared.faults.sweep_interval() {
            continue;
        }
        last = Instant::now();
        let timeout = shared.pending_timeout();
        let withheld = shared.faults.withheld();
        lock(&shared.commands).sweep(timeout);
        lock(&shared.queries).sweep(timeout, withheld);
    }
}

/// A running test server. Call [`stop`](Self::stop) to shut it down.
#[derive(Debug)]
pub struct RunningAxonServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    serve: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    calls: Arc<std::sync::Mutex<Vec<CallHeaders>>>,
}

impl RunningAxonServer {
    /// The bound socket address.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://<ip>:<port>`, ready for `Endpoint::from_shared` / `connect`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The configuration the server runs with.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// Fault injection handle.
    #[must_use]
    pub fn faults(&self) -> Faults {
        Faults::new(Arc::clone(&self.shared))
    }

    /// Registered command handlers by command name.
    #[must_use]
    pub fn command_handlers(&self) -> BTreeMap<String, Vec<CommandHandlerInfo>> {
        lock(&self.shared.commands).handlers()
    }

    /// Commands in flight (queued or delivered, not answered).
    #[must_use]
    pub fn pending_commands(&self) -> usize {
        lock(&self.shared.commands).pending_count()
    }

    /// Queries dispatched and not yet completed by every handler they went to.
    #[must_use]
    pub fn active_queries(&self) -> usize {
        lock(&self.shared.queries).active_count()
    }

    /// Every open `ListEvents` stream, as of the moment it last waited for
    /// permits or new events (so a test can see that it holds back).
    #[must_use]
    pub fn event_trackers(&self) -> Vec<EventTrackerInfo> {
        lock(&self.shared.trackers).values().cloned().collect()
    }

    /// Registered query handlers by query name.
    #[must_use]
    pub fn query_handlers(&self) -> BTreeMap<String, Vec<QueryHandlerInfo>> {
        lock(&self.shared.queries).handlers()
    }

    /// Sends a processor instruction (`pause_event_processor`, `split_event_processor_segment`, …)
    /// on the control stream of `client_id` and waits for its `InstructionResult`.
    ///
    /// A failed ack completes it at once; no result within `timeout` gives an
    /// unsuccessful result with AXONIQ-1004, as SE reports it (SE waits 10 s).
    ///
    /// # Errors
    /// When `client_id` has no registered control stream.
    pub async fn processor_instruction(
        &self,
        client_id: &str,
        instruction: Outgoing,
        timeout: Duration,
    ) -> Result<InstructionResult, TestServerError> {
        let (id, receiver) = lock(&self.shared.platform)
            .send_instruction(client_id, instruction)
            .ok_or_else(|| TestServerError::UnknownClient(client_id.to_owned()))?;
        if let Ok(Ok(result)) = tokio::time::timeout(timeout, receiver).await {
            return Ok(result);
        }
        lock(&self.shared.platform).forget_instruction(&id);
        Ok(InstructionResult {
            instruction_id: id,
            success: false,
            error: Some(error_message(
                error_code::INSTRUCTION_RESULT_TIMEOUT,
                format!(
                    "No result from {client_id} within {} ms",
                    timeout.as_millis()
                ),
            )),
        })
    }

    /// Live subscription queries.
    #[must_use]
    pub fn subscription_queries(&self) -> usize {
        lock(&self.shared.queries).live_subscriptions()
    }

    /// Every stored event with its global token, in token order.
    #[must_use]
    pub fn events(&self) -> Vec<(i64, Event)> {
        self.shared.events.all()
    }

    /// Clients registered on control streams.
    #[must_use]
    pub fn clients(&self) -> Vec<ConnectedClient> {
        lock(&self.shared.platform).clients()
    }

    /// The headers of every call so far, in arrival order (the most recent
    /// 100 000), including calls that were refused.
    #[must_use]
    pub fn calls(&self) -> Vec<CallHeaders> {
        lock(&self.calls).clone()
    }

    /// Open streams by kind.
    #[must_use]
    pub fn open_streams(&self) -> StreamCounts {
        self.shared.streams.counts()
    }

    /// Stops the server: ends every stream, shuts down gracefully and waits for all tasks.
    ///
    /// # Errors
    /// When the gRPC server task failed.
    pub async fn stop(mut self) -> Result<(), TestServerError> {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        let result = match self.serve.take() {
            Some(mut serve) => match tokio::time::timeout(STOP_GRACE, &mut serve).await {
                Ok(joined) => joined?.map_err(TestServerError::from),
                Err(_) => {
                    serve.abort();
                    let _ = serve.await;
                    Ok(())
                }
            },
            None => Ok(()),
        };
        self.shared.tasks.wait().await;
        result
    }
}

impl Drop for RunningAxonServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        if let Some(serve) = self.serve.take() {
            serve.abort();
        }
    }
}
