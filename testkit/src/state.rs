//! State shared by every service of one running server, and the snapshot
//! types that tests read through [`crate::RunningAxonServer`].
//!
//! Locks are plain `std::sync::Mutex`es held only for short, non-async
//! sections; a poisoned lock is recovered (the data stays consistent because
//! no section panics on client input).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Streaming};

use crate::command_router::CommandRouter;
use crate::event_store::EventStore;
use crate::fault_state::FaultState;
use crate::handler_info::EventTrackerInfo;
use crate::platform_state::PlatformState;
use crate::query_router::QueryRouter;
use crate::server_config::ServerConfig;
use crate::stream_registry::{StreamGuard, StreamKind, StreamRegistry};
pub(crate) use crate::support::{Outbound, ResponseStream, lock, next_message_id};

/// Everything one running server shares between its services.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) streams: Arc<StreamRegistry>,
    pub(crate) faults: FaultState,
    pub(crate) platform: Mutex<PlatformState>,
    pub(crate) commands: Mutex<CommandRouter>,
    pub(crate) queries: Mutex<QueryRouter>,
    pub(crate) events: EventStore,
    /// Each open `ListEvents` stream, by stream id, as of its last pause.
    pub(crate) trackers: Mutex<std::collections::BTreeMap<u64, EventTrackerInfo>>,
}

impl Shared {
    /// Serves one bidirectional stream: registers it under `kind` for the
    /// client named in its headers, lets `register` keep its sending half, and
    /// runs `serve` as a tracked task until the stream ends.
    pub(crate) fn open_bidi<In, Out, Fut>(
        self: &Arc<Self>,
        request: Request<Streaming<In>>,
        kind: StreamKind,
        register: impl FnOnce(&Shared, u64, Outbound<Out>),
        serve: impl FnOnce(Arc<Shared>, StreamGuard, Streaming<In>, Outbound<Out>) -> Fut,
    ) -> Response<ResponseStream<Out>>
    where
        Out: Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let client_id = crate::auth::client_id_header(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let guard = self.streams.open(kind, &client_id);
        register(self, guard.id, tx.clone());
        self.tasks
            .spawn(serve(Arc::clone(self), guard, inbound, tx));
        Response::new(Box::pin(UnboundedReceiverStream::new(rx)))
    }

    pub(crate) fn new(config: ServerConfig, host: String, port: u16) -> Arc<Self> {
        let shutdown = CancellationToken::new();
        let faults = FaultState::new(&config);
        Arc::new(Self {
            host,
            port,
            tasks: TaskTracker::new(),
            streams: Arc::new(StreamRegistry::new(shutdown.clone())),
            shutdown,
            faults,
            platform: Mutex::new(PlatformState::default()),
            commands: Mutex::new(CommandRouter::default()),
            queries: Mutex::new(QueryRouter::default()),
            events: EventStore::default(),
            trackers: Mutex::default(),
            config,
        })
    }

    /// Sends `message` (an ack) now, or after the injected ack delay.
    pub(crate) fn send_ack<T: Send + 'static>(&self, tx: &Outbound<T>, message: T) {
        let delay = self.faults.ack_delay();
        if delay.is_zero() {
            let _ = tx.send(Ok(message));
            return;
        }
        let tx = tx.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => { let _ = tx.send(Ok(message)); }
                () = shutdown.cancelled() => {}
            }
        });
    }

    /// Current pending-request timeout (may be shortened by a fault).
    pub(crate) fn pending_timeout(&self) -> Duration {
        self.faults.pending_request_timeout()
    }
}
