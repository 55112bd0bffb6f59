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

/// Short window used to assert that nothing arrives.
pub(crate) const QUIET: Duration = Duration::from_millis(300);

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

/// Asserts that nothing arrives on `stream` within [`QUIET`].
pub(crate) async fn assert_quiet<T: std::fmt::Debug>(stream: &mut Streaming<T>) {
    if let Ok(got) = tokio::time::timeout(QUIET, stream.message()).await {
        panic!("expected silence, got {got:?}");
    }
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
