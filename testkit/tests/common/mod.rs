//! Helpers shared by the integration tests: plain tonic clients over loopback.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::time::Duration;

use telamon_axon_proto::headers;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::command::command_service_client::CommandServiceClient;
use telamon_axon_proto::pb::command::{
    CommandProviderInbound, CommandProviderOutbound, CommandSubscription,
};
use telamon_axon_proto::pb::query::query_provider_outbound::Request as FromQueryHandler;
use telamon_axon_proto::pb::query::query_service_client::QueryServiceClient;
use telamon_axon_proto::pb::query::{
    QueryProviderInbound, QueryProviderOutbound, QuerySubscription,
};
use telamon_axon_proto::pb::{FlowControl, InstructionAck};
use telamon_testkit::{AxonTestServer, RunningAxonServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Streaming};

/// Upper bound for any single awaited message.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A fresh instruction id for a sentinel.
fn sentinel_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "sentinel-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Waits, within [`WAIT`], until the server's state satisfies `condition`
/// (checked every millisecond).
pub(crate) async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never got to: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) async fn start() -> RunningAxonServer {
    AxonTestServer::builder()
        .start()
        .await
        .expect("server starts")
}

pub(crate) async fn channel(server: &RunningAxonServer) -> Channel {
    Endpoint::from_shared(server.url())
        .expect("valid url")
        .connect()
        .await
        .expect("connects")
}

/// A request with the context header.
pub(crate) fn req<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        headers::CONTEXT,
        headers::DEFAULT_CONTEXT.parse().expect("ascii"),
    );
    request
}

/// Next message of a response stream, within [`WAIT`].
pub(crate) async fn next<T>(stream: &mut Streaming<T>) -> T {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("message within the wait bound")
        .expect("stream not failed")
        .expect("stream not ended")
}

/// Sending half of a bidi call.
pub(crate) type Sender<T> = mpsc::UnboundedSender<T>;

/// Opens a request stream for a bidi call.
pub(crate) fn outbound<T>() -> (Sender<T>, Request<UnboundedReceiverStream<T>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, req(UnboundedReceiverStream::new(rx)))
}

/// A command handler connected over its own stream.
pub(crate) struct CommandHandler {
    pub(crate) client_id: String,
    pub(crate) tx: Sender<CommandProviderOutbound>,
    pub(crate) inbound: Streaming<CommandProviderInbound>,
}

impl CommandHandler {
    /// Opens a stream, subscribes to `names` (waiting for the acks) and grants `permits` (0 = none).
    pub(crate) async fn open(
        channel: &Channel,
        client_id: &str,
        component: &str,
        names: &[&str],
        permits: i64,
    ) -> Self {
        let mut client = CommandServiceClient::new(channel.clone());
        let (tx, request) = outbound();
        let mut inbound = client
            .open_stream(request)
            .await
            .expect("stream")
            .into_inner();
        for (i, name) in names.iter().enumerate() {
            let id = format!("{client_id}-sub-{i}");
            tx.send(CommandProviderOutbound {
                instruction_id: id.clone(),
                request: Some(FromHandler::Subscribe(CommandSubscription {
                    message_id: id.clone(),
                    command: (*name).to_owned(),
                    component_name: component.to_owned(),
                    client_id: client_id.to_owned(),
                    load_factor: 100,
                })),
            })
            .expect("send");
            let ack = command_ack(&mut inbound).await;
            assert_eq!(ack.instruction_id, id);
            assert!(ack.success);
        }
        let handler = Self {
            client_id: client_id.to_owned(),
            tx,
            inbound,
        };
        if permits > 0 {
            handler.grant(permits);
        }
        handler
    }

    /// Sends `FlowControl{permits}` (no instruction id).
    /// Proves that nothing reached this handler so far: the server answers an
    /// instruction with an ack in stream order, so the next message must be
    /// the ack of this sentinel (a flow control of 0 permits, which changes
    /// nothing).
    pub(crate) async fn assert_nothing_received(&mut self) {
        let id = sentinel_id();
        self.tx
            .send(CommandProviderOutbound {
                instruction_id: id.clone(),
                request: Some(FromHandler::FlowControl(FlowControl {
                    client_id: self.client_id.clone(),
                    permits: 0,
                })),
            })
            .expect("send");
        let ack = command_ack(&mut self.inbound).await;
        assert_eq!(ack.instruction_id, id, "nothing before the sentinel's ack");
    }

    pub(crate) fn grant(&self, permits: i64) {
        self.tx
            .send(CommandProviderOutbound {
                instruction_id: String::new(),
                request: Some(FromHandler::FlowControl(FlowControl {
                    client_id: self.client_id.clone(),
                    permits,
                })),
            })
            .expect("send");
    }
}

/// Next ack on a command stream.
pub(crate) async fn command_ack(inbound: &mut Streaming<CommandProviderInbound>) -> InstructionAck {
    use telamon_axon_proto::pb::command::command_provider_inbound::Request;
    match next(inbound).await.request {
        Some(Request::Ack(ack)) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// A query handler connected over its own stream.
pub(crate) struct QueryHandler {
    pub(crate) client_id: String,
    pub(crate) tx: Sender<QueryProviderOutbound>,
    pub(crate) inbound: Streaming<QueryProviderInbound>,
}

impl QueryHandler {
    /// Opens a stream, subscribes to `names` (waiting for the acks) and grants `permits` (0 = none).
    pub(crate) async fn open(
        channel: &Channel,
        client_id: &str,
        component: &str,
        names: &[&str],
        permits: i64,
    ) -> Self {
        use telamon_axon_proto::pb::query::query_provider_inbound::Request;
        let mut client = QueryServiceClient::new(channel.clone());
        let (tx, request) = outbound();
        let mut inbound = client
            .open_stream(request)
            .await
            .expect("stream")
            .into_inner();
        for (i, name) in names.iter().enumerate() {
            let id = format!("{client_id}-qsub-{i}");
            tx.send(QueryProviderOutbound {
                instruction_id: id.clone(),
                request: Some(FromQueryHandler::Subscribe(QuerySubscription {
                    message_id: id.clone(),
                    query: (*name).to_owned(),
                    result_name: "result".to_owned(),
                    component_name: component.to_owned(),
                    client_id: client_id.to_owned(),
                })),
            })
            .expect("send");
            match next(&mut inbound).await.request {
                Some(Request::Ack(ack)) => {
                    assert_eq!(ack.instruction_id, id);
                    assert!(ack.success);
                }
                other => panic!("expected an ack, got {other:?}"),
            }
        }
        let handler = Self {
            client_id: client_id.to_owned(),
            tx,
            inbound,
        };
        if permits > 0 {
            handler.grant(permits);
        }
        handler
    }

    /// Sends `FlowControl{permits}`.
    /// As [`CommandHandler::assert_nothing_received`], on a query stream.
    pub(crate) async fn assert_nothing_received(&mut self) {
        use telamon_axon_proto::pb::query::query_provider_inbound::Request;
        let id = sentinel_id();
        self.tx
            .send(QueryProviderOutbound {
                instruction_id: id.clone(),
                request: Some(FromQueryHandler::FlowControl(FlowControl {
                    client_id: self.client_id.clone(),
                    permits: 0,
                })),
            })
            .expect("send");
        match next(&mut self.inbound).await.request {
            Some(Request::Ack(ack)) => {
                assert_eq!(ack.instruction_id, id, "nothing before the sentinel's ack");
            }
            other => panic!("expected only the sentinel's ack, got {other:?}"),
        }
    }

    pub(crate) fn grant(&self, permits: i64) {
        self.tx
            .send(QueryProviderOutbound {
                instruction_id: String::new(),
                request: Some(FromQueryHandler::FlowControl(FlowControl {
                    client_id: self.client_id.clone(),
                    permits,
                })),
            })
            .expect("send");
    }
}

/// Opens a control stream and registers `client_id` with `tags`; waits for the register ack.
pub(crate) async fn register(
    channel: &Channel,
    client_id: &str,
    component: &str,
    tags: &[(&str, &str)],
) -> (
    Sender<telamon_axon_proto::pb::control::PlatformInboundInstruction>,
    Streaming<telamon_axon_proto::pb::control::PlatformOutboundInstruction>,
) {
    use telamon_axon_proto::pb::control::platform_inbound_instruction::Request as Inbound;
    use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
    use telamon_axon_proto::pb::control::{ClientIdentification, PlatformInboundInstruction};

    let mut platform = PlatformServiceClient::new(channel.clone());
    let (tx, request) = outbound();
    let mut inbound = platform
        .open_stream(request)
        .await
        .expect("stream")
        .into_inner();
    tx.send(PlatformInboundInstruction {
        instruction_id: format!("reg-{client_id}"),
        request: Some(Inbound::Register(ClientIdentification {
            client_id: client_id.to_owned(),
            component_name: component.to_owned(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            version: "4.6".to_owned(),
        })),
    })
    .expect("send");
    next(&mut inbound).await; // register ack
    (tx, inbound)
}
