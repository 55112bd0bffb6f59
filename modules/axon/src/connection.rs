//! The connection to AxonServer: channel set-up, `GetPlatformServer` and its
//! redirect, the headers every call carries, and the supervisor that
//! reconnects with back-off.
//!
//! One [`Link`] is one channel (one HTTP/2 connection) to one node, with a
//! generation number. The supervisor owns the control stream; when it is
//! lost — an error, the server completing it, a missed heartbeat, a
//! `RequestReconnect` — the link is marked lost, every stream opened on it
//! ends, and a new link is made from scratch (`GetPlatformServer` again,
//! `register` again). Every stream task then reopens its stream on the new
//! link and registers again (commands, queries, tracking processors,
//! subscription queries): the server keeps nothing across streams.
//!
//! # Under stress
//!
//! - **AxonServer away**: the supervisor tries each server in turn, each
//!   within `connect-timeout`, then waits a jittered, growing back-off
//!   (`reconnect.*`) and tries again, for as long as the process runs. The
//!   bridge is `connecting` meanwhile; outbound calls wait for a link up to
//!   their deadline, then fail with `not-connected`.
//! - **Half-open connection** (a proxy that swallows everything): the
//!   heartbeat deadline (`heartbeat-interval` + `heartbeat-timeout`) passes
//!   without an answer and the link is replaced.
//! - **Refused credentials**: at start-up, an error naming the `token`
//!   setting; later (a token revoked), logged on every attempt while the
//!   bridge keeps trying.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use telamon_axon_proto::headers;
use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
use telamon_axon_proto::pb::control::{
    ClientIdentification, PlatformInboundInstruction, PlatformOutboundInstruction,
    platform_inbound_instruction, platform_outbound_instruction,
};
use telamon_sdk::{Counter, Gauge};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Settings;
use crate::error::BridgeError;
use crate::resilience::Backoff;

/// A channel whose every call carries the context, token and client id.
pub(crate) type Grpc = InterceptedService<Channel, CallHeaders>;

/// The version sent in `ClientIdentification` (SE sends server heartbeats to
/// clients at 4.2.1 or later).
pub(crate) const CLIENT_VERSION: &str = "4.6.0";

/// Adds `axoniq-context`, `axoniq-access-token` and `axoniq-clientid` to every call.
#[derive(Clone)]
pub(crate) struct CallHeaders {
    context: AsciiMetadataValue,
    token: Option<AsciiMetadataValue>,
    client_id: AsciiMetadataValue,
}

impl std::fmt::Debug for CallHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHeaders")
            .field("context", &self.context)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Interceptor for CallHeaders {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let md = request.metadata_mut();
        md.insert(headers::CONTEXT, self.context.clone());
        md.insert(headers::CLIENT_ID, self.client_id.clone());
        if let Some(token) = &self.token {
            md.insert(headers::ACCESS_TOKEN, token.clone());
        }
        Ok(request)
    }
}

/// `http://host:port` (or `https://`) for a configured server address.
pub(crate) fn endpoint_url(server: &str, tls: bool) -> Result<String, String> {
    let bare = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))
        .unwrap_or(server)
        .trim_end_matches('/');
    if bare.is_empty() || bare.contains('/') || bare.contains(char::is_whitespace) {
        return Err(format!("`{server}` is not a host:port address"));
    }
    let with_port = if bare
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        bare.to_owned()
    } else if bare.contains(':') && !bare.starts_with('[') {
        return Err(format!("`{server}` has a port that is not a number"));
    } else {
        format!("{bare}:{}", telamon_axon_proto::defaults::GRPC_PORT)
    };
    let scheme = if tls { "https" } else { "http" };
    let url = format!("{scheme}://{with_port}");
    Endpoint::from_shared(url.clone()).map_err(|e| format!("`{server}`: {e}"))?;
    Ok(url)
}

/// One channel to one node.
#[derive(Clone)]
pub(crate) struct Link {
    pub(crate) generation: u64,
    pub(crate) server: String,
    pub(crate) channel: Grpc,
    /// Fired when the link is given up; every stream on it ends.
    pub(crate) lost: CancellationToken,
    max_message_size: usize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("generation", &self.generation)
            .field("server", &self.server)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

macro_rules! client {
    ($name:ident, $client:ty) => {
        pub(crate) fn $name(&self) -> $client {
            <$client>::new(self.channel.clone())
                .max_decoding_message_size(self.max_message_size)
                .max_encoding_message_size(self.max_message_size)
        }
    };
}

impl Link {
    client!(
        commands,
        telamon_axon_proto::pb::command::command_service_client::CommandServiceClient<Grpc>
    );
    client!(
        queries,
        telamon_axon_proto::pb::query::query_service_client::QueryServiceClient<Grpc>
    );
    client!(
        events,
        telamon_axon_proto::pb::event::event_store_client::EventStoreClient<Grpc>
    );
    client!(platform, PlatformServiceClient<Grpc>);
}

/// The overall state, as the `telamon_axon_state` gauge shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeState {
    /// No connection (0).
    Connecting = 0,
    /// Connected, every handler registered and every stream open (1).
    Ready = 1,
    /// Connected, but a stream is down or not yet registered (2).
    Degraded = 2,
}

/// Which stream tasks are up; the bridge is ready when all are.
#[derive(Debug)]
pub(crate) struct Readiness {
    parts: std::sync::Mutex<Vec<(String, bool)>>,
    connected: std::sync::atomic::AtomicBool,
    closing: std::sync::atomic::AtomicBool,
    state: watch::Sender<BridgeState>,
    gauge: Gauge,
}

/// One stream task's place in [`Readiness`].
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    readiness: Arc<Readiness>,
    index: usize,
}

impl Slot {
    /// Marks the stream up (registered) or down.
    pub(crate) fn set(&self, up: bool) {
        {
            let mut parts = self.readiness.lock();
            if parts[self.index].1 == up {
                return;
            }
            parts[self.index].1 = up;
        }
        self.readiness.update();
    }
}

impl Readiness {
    pub(crate) fn new(gauge: Gauge) -> Arc<Self> {
        gauge.set(BridgeState::Connecting as i64);
        Arc::new(Readiness {
            parts: std::sync::Mutex::new(Vec::new()),
            connected: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
            state: watch::channel(BridgeState::Connecting).0,
            gauge,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, bool)>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for one stream task, down until it says otherwise.
    pub(crate) fn slot(self: &Arc<Self>, name: impl Into<String>) -> Slot {
        let mut parts = self.lock();
        parts.push((name.into(), false));
        let index = parts.len() - 1;
        drop(parts);
        self.update();
        Slot {
            readiness: self.clone(),
            index,
        }
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
        self.update();
    }

    fn update(&self) {
        let down: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, up)| !up)
            .map(|(n, _)| n.clone())
            .collect();
        let state = if !self.connected.load(Ordering::SeqCst) {
            BridgeState::Connecting
        } else if down.is_empty() {
            BridgeState::Ready
        } else {
            BridgeState::Degraded
        };
        let old = self.state.send_replace(state);
        self.gauge.set(state as i64);
        if old != state && self.closing.load(Ordering::SeqCst) {
            tracing::debug!(?state, "AxonServer bridge closing");
        } else if old != state {
            match state {
                BridgeState::Ready => tracing::info!(
                    "AxonServer bridge ready: every handler registered, every stream open"
                ),
                BridgeState::Degraded => {
                    tracing::info!(waiting_for = ?down, "AxonServer bridge connected, streams not all up")
                }
                BridgeState::Connecting => tracing::warn!("AxonServer bridge connecting"),
            }
        }
    }

    /// The bridge is stopping: state changes are expected, not news.
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// The current state.
    pub(crate) fn state(&self) -> BridgeState {
        *self.state.borrow()
    }

    /// Waits until ready, up to `timeout`; true if it became ready.
    pub(crate) async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.state.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == BridgeState::Ready))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Why connecting to a server failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The server refused the credentials or the context: retrying will not help.
    #[error("{server} refused the connection: {error}")]
    Refused { server: String, error: BridgeError },
    /// The server could not be reached or did not answer in time.
    #[error("{server}: {reason}")]
    Unreachable { server: String, reason: String },
}

/// A link and its freshly registered control stream.
pub(crate) struct Established {
    pub(crate) link: Link,
    pub(crate) inbound: tonic::Streaming<PlatformOutboundInstruction>,
    pub(crate) outbound: mpsc::UnboundedSender<PlatformInboundInstruction>,
}

/// The bridge's connection: the current link and everything to make new ones.
pub(crate) struct Connection {
    settings: Arc<Settings>,
    headers: CallHeaders,
    link: watch::Sender<Option<Link>>,
    generation: AtomicU64,
    next_server: AtomicU64,
    pub(crate) stop: CancellationToken,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) reconnects: Counter,
    backoff: Backoff,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("client_id", &self.settings.client_id)
            .field("link", &*self.link.borrow())
            .field("state", &self.readiness.state())
            .finish()
    }
}

impl Connection {
    pub(crate) fn new(
        settings: Arc<Settings>,
        readiness: Arc<Readiness>,
        reconnects: Counter,
    ) -> Result<Self, String> {
        let value = |name: &str, v: &str| {
            MetadataValue::try_from(v).map_err(|_| format!("`{name}` is not valid header text"))
        };
        let c = &settings.raw;
        let headers = CallHeaders {
            context: value("context", &c.context)?,
            token: match &c.token {
                Some(t) => {
                    let mut v = value("token", t.expose())?;
                    v.set_sensitive(true);
                    Some(v)
                }
                None => None,
            },
            client_id: value("client-id", &settings.client_id)?,
        };
        Ok(Connection {
            backoff: Backoff::new(&c.reconnect),
            settings,
            headers,
            link: watch::channel(None).0,
            generation: AtomicU64::new(0),
            next_server: AtomicU64::new(0),
            stop: CancellationToken::new(),
            readiness,
            reconnects,
        })
    }

    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The current link, waiting up to `wait` for one.
    pub(crate) async fn current(&self, wait: Duration) -> Result<Link, BridgeError> {
        let mut rx = self.link.subscribe();
        let found = tokio::time::timeout(wait, async {
            tokio::select! {
                r = rx.wait_for(|l| l.as_ref().is_some_and(|l| !l.lost.is_cancelled())) => r.ok().and_then(|l| l.clone()),
                () = self.stop.cancelled() => None,
            }
        })
        .await;
        match found {
            Ok(Some(link)) => Ok(link),
            Ok(None) if self.stop.is_cancelled() => Err(BridgeError::Stopping),
            _ => Err(BridgeError::NotConnected(wait)),
        }
    }

    /// The next usable link for a stream task; `None` once the bridge stops.
    pub(crate) async fn next_link(&self) -> Option<Link> {
        let mut rx = self.link.subscribe();
        tokio::select! {
            r = rx.wait_for(|l| l.as_ref().is_some_and(|l| !l.lost.is_cancelled())) => r.ok().and_then(|l| l.clone()),
            () = self.stop.cancelled() => None,
        }
    }

    /// [`next_link`](Self::next_link), or `None` once `drain` fires.
    pub(crate) async fn next_link_or(&self, drain: &CancellationToken) -> Option<Link> {
        tokio::select! {
            l = self.next_link() => l,
            () = drain.cancelled() => None,
        }
    }

    /// The identification sent in `register` and `GetPlatformServer`.
    pub(crate) fn identification(&self) -> ClientIdentification {
        let c = &self.settings.raw;
        ClientIdentification {
            client_id: self.settings.client_id.clone(),
            component_name: c.component.clone(),
            tags: c.tags.clone().into_iter().collect(),
            version: CLIENT_VERSION.to_owned(),
        }
    }

    async fn channel(&self, url: &str) -> Result<Channel, String> {
        let c = &self.settings.raw;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| e.to_string())?
            .connect_timeout(c.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(c.keep_alive_interval)
            .keep_alive_timeout(c.heartbeat_timeout.max(Duration::from_secs(1)))
            .keep_alive_while_idle(true);
        #[cfg(feature = "tls")]
        let endpoint = if c.tls {
            endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots())
                .map_err(|e| e.to_string())?
        } else {
            endpoint
        };
        match tokio::time::timeout(c.connect_timeout, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(error_chain(&e)),
            Err(_) => Err(format!("no connection within {:?}", c.connect_timeout)),
        }
    }

    /// Connects to `server`: channel, `GetPlatformServer` (following a
    /// redirect once), control stream and an acknowledged `register`.
    async fn connect_to(&self, server: &str) -> Result<Established, ConnectError> {
        let c = &self.settings.raw;
        let unreachable = |reason: String| ConnectError::Unreachable {
            server: server.to_owned(),
            reason,
        };
        let refused_or_unreachable = |e: BridgeError| {
            let status = match &e {
                BridgeError::Axon { status, .. } => *status,
                BridgeError::Grpc { code, .. } => Some(*code),
                _ => None,
            };
            // Credentials, an unknown context, a licence: trying again will not help.
            if matches!(
                status,
                Some(
                    tonic::Code::PermissionDenied
                        | tonic::Code::Unauthenticated
                        | tonic::Code::NotFound
                )
            ) {
                ConnectError::Refused {
                    server: server.to_owned(),
                    error: e,
                }
            } else {
                ConnectError::Unreachable {
                    server: server.to_owned(),
                    reason: e.to_string(),
                }
            }
        };
        let url = endpoint_url(server, c.tls).map_err(unreachable)?;
        let channel = self.channel(&url).await.map_err(unreachable)?;
        let mut grpc = InterceptedService::new(channel, self.headers.clone());
        let mut address = url.clone();
        let asked = tokio::time::timeout(
            c.connect_timeout,
            PlatformServiceClient::new(grpc.clone()).get_platform_server(self.identification()),
        )
        .await
        .map_err(|_| {
            unreachable(format!(
                "no GetPlatformServer answer within {:?}",
                c.connect_timeout
            ))
        })?
        .map_err(|s| refused_or_unreachable(BridgeError::from(s)))?
        .into_inner();
        if let Some(primary) = asked.primary.filter(|_| !asked.same_connection) {
            let target = endpoint_url(
                &format!("{}:{}", primary.host_name, primary.grpc_port),
                c.tls,
            )
            .map_err(unreachable)?;
            if target != url {
                tracing::info!(from = %url, to = %target, node = %primary.node_name, "AxonServer routed the bridge to another node");
                let channel = self.channel(&target).await.map_err(unreachable)?;
                grpc = InterceptedService::new(channel, self.headers.clone());
                address = target;
            }
        }
        let link = Link {
            generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
            server: address,
            channel: grpc,
            lost: CancellationToken::new(),
            max_message_size: c.max_message_size,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let id = crate::ids::uuid();
        let _ = tx.send(PlatformInboundInstruction {
            instruction_id: id.clone(),
            request: Some(platform_inbound_instruction::Request::Register(
                self.identification(),
            )),
        });
        let mut inbound = tokio::time::timeout(
            c.connect_timeout,
            link.platform()
                .open_stream(UnboundedReceiverStream::new(rx)),
        )
        .await
        .map_err(|_| unreachable("control stream did not open in time".to_owned()))?
        .map_err(|s| refused_or_unreachable(BridgeError::from(s)))?
        .into_inner();
        // The register ack says the server took us; anything else first is
        // out of order but harmless (heartbeats are answered once running).
        let acked = tokio::time::timeout(c.connect_timeout, async {
            loop {
                match inbound.message().await {
                    Ok(Some(PlatformOutboundInstruction {
                        request: Some(platform_outbound_instruction::Request::Ack(ack)),
                        ..
                    })) if ack.instruction_id == id => {
                        return if ack.success {
                            Ok(())
                        } else {
                            Err(BridgeError::in_band(
                                ack.error
                                    .as_ref()
                                    .map_or("AXONIQ-0001", |e| e.error_code.as_str()),
                                ack.error.as_ref(),
                            ))
                        };
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        return Err(BridgeError::Grpc {
                            code: tonic::Code::Unavailable,
                            message: "control stream ended before register was acknowledged".into(),
                        });
                    }
                    Err(s) => return Err(BridgeError::from(s)),
                }
            }
        })
        .await
        .map_err(|_| {
            unreachable(format!(
                "register not acknowledged within {:?}",
                c.connect_timeout
            ))
        })?;
        acked.map_err(refused_or_unreachable)?;
        Ok(Established {
            link,
            inbound,
            outbound: tx,
        })
    }

    /// Tries every server once, starting after the last one used.
    pub(crate) async fn connect_any(&self) -> Result<Established, ConnectError> {
        let servers = &self.settings.raw.servers;
        let start = self.next_server.load(Ordering::Relaxed) as usize;
        let mut last = None;
        for i in 0..servers.len() {
            let server = &servers[(start + i) % servers.len()];
            match self.connect_to(server).await {
                Ok(established) => {
                    self.next_server
                        .store(((start + i) % servers.len()) as u64, Ordering::Relaxed);
                    return Ok(established);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "AxonServer connection attempt failed");
                    let refused = matches!(e, ConnectError::Refused { .. });
                    last = Some(e);
                    if refused {
                        break;
                    }
                }
            }
        }
        self.next_server.store(
            ((start + 1) % servers.len().max(1)) as u64,
            Ordering::Relaxed,
        );
        Err(last.expect("at least one server is configured"))
    }

    /// Publishes a new link.
    pub(crate) fn install(&self, link: &Link) {
        tracing::info!(server = %link.server, generation = link.generation, client_id = %self.settings.client_id, "connected to AxonServer");
        self.link.send_replace(Some(link.clone()));
        self.readiness.set_connected(true);
    }

    /// Gives up `link`: its streams end, and the supervisor makes a new one.
    pub(crate) fn retire(&self, link: &Link) {
        link.lost.cancel();
        self.link.send_if_modified(|current| {
            if current
                .as_ref()
                .is_some_and(|c| c.generation == link.generation)
            {
                *current = None;
                true
            } else {
                false
            }
        });
        self.readiness.set_connected(false);
    }

    /// The delay before reconnect attempt `attempt`.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }
}

/// `outer: inner: innermost`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// How long a stream task waits before reopening after `status` (CONNECTOR §A.3).
pub(crate) fn reopen_delay(status: Option<tonic::Code>) -> Duration {
    use tonic::Code::*;
    match status {
        Some(Unavailable) => Duration::from_millis(50),
        Some(
            NotFound | PermissionDenied | Unimplemented | Unauthenticated | FailedPrecondition
            | InvalidArgument | ResourceExhausted,
        ) => Duration::from_secs(5),
        _ => Duration::from_millis(500),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_become_urls() {
        assert_eq!(
            endpoint_url("127.0.0.1:8124", false).unwrap(),
            "http://127.0.0.1:8124"
        );
        assert_eq!(endpoint_url("axon", false).unwrap(), "http://axon:8124");
        assert_eq!(
            endpoint_url("http://axon:9000/", true).unwrap(),
            "https://axon:9000"
        );
        for bad in ["", "a b:1", "host:port", "x/y:1"] {
            assert!(endpoint_url(bad, false).is_err(), "{bad}");
        }
    }
}
