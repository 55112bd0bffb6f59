//! Fault injection through the running handle; each fault is observed by a client.

mod common;

use std::time::{Duration, Instant};

use common::{CommandHandler, WAIT, channel, command_ack, next, outbound, req, start, until};
use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::command::command_service_client::CommandServiceClient;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderOutbound, CommandResponse, CommandSubscription,
};
use telamon_axon_proto::pb::control::platform_inbound_instruction::Request as Inbound;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Outgoing;
use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
use telamon_axon_proto::pb::control::{ClientIdentification, PlatformInboundInstruction};
use telamon_axon_proto::pb::event::event_store_client::EventStoreClient;
use telamon_axon_proto::pb::event::{Event, GetEventsRequest};
use telamon_testkit::{AxonTestServer, StreamKind};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

fn spawn_dispatch(channel: &Channel, id: &str, name: &str) -> JoinHandle<CommandResponse> {
    let mut client = CommandServiceClient::new(channel.clone());
    let command = Command {
        message_identifier: id.to_owned(),
        name: name.to_owned(),
        ..Command::default()
    };
    tokio::spawn(async move {
        client
            .dispatch(req(command))
            .await
            .expect("gRPC OK")
            .into_inner()
    })
}

async fn finished(call: JoinHandle<CommandResponse>) -> CommandResponse {
    tokio::time::timeout(WAIT, call)
        .await
        .expect("bounded")
        .expect("join")
}

async fn stream_error<T: std::fmt::Debug>(stream: &mut Streaming<T>) -> tonic::Status {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("stream fails within the bound")
}

async fn registered_control_stream(
    channel: &Channel,
    client_id: &str,
) -> (
    common::Sender<PlatformInboundInstruction>,
    Streaming<telamon_axon_proto::pb::control::PlatformOutboundInstruction>,
) {
    let mut client = PlatformServiceClient::new(channel.clone());
    let (tx, request) = outbound();
    let mut inbound = client
        .open_stream(request)
        .await
        .expect("stream")
        .into_inner();
    tx.send(PlatformInboundInstruction {
        instruction_id: "reg".to_owned(),
        request: Some(Inbound::Register(ClientIdentification {
            client_id: client_id.to_owned(),
            component_name: "app".to_owned(),
            tags: Default::default(),
            version: "4.6".to_owned(),
        })),
    })
    .expect("send");
    next(&mut inbound).await; // register ack
    (tx, inbound)
}

#[tokio::test]
async fn drop_client_fails_its_streams_and_pending_commands() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "app", &["Do"], 5).await;
    let call = spawn_dispatch(&channel, "c1", "Do");
    next(&mut handler.inbound).await; // the command
    assert_eq!(server.faults().drop_client("h1"), 1);
    assert_eq!(
        stream_error(&mut handler.inbound).await.code(),
        Code::Unavailable
    );
    assert_eq!(
        finished(call).await.error_code,
        error_code::CONNECTION_TO_HANDLER_LOST
    );
    assert!(server.command_handlers().is_empty());
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn close_all_streams_ends_every_stream_and_new_ones_work() {
    let server = start().await;
    let channel = channel(&server).await;
    let (_tx, mut control) = registered_control_stream(&channel, "c1").await;
    let mut events = EventStoreClient::new(channel.clone());
    let (tracker_tx, request) = outbound();
    let mut tracker = events
        .list_events(request)
        .await
        .expect("stream")
        .into_inner();
    tracker_tx
        .send(GetEventsRequest {
            number_of_permits: 10,
            ..GetEventsRequest::default()
        })
        .expect("send");
    tokio::time::timeout(WAIT, async {
        while !server
            .open_streams()
            .contains_key(&StreamKind::EventTracker)
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("tracker open");
    assert!(server.faults().close_all_streams() >= 2);
    assert_eq!(stream_error(&mut control).await.code(), Code::Unavailable);
    assert_eq!(stream_error(&mut tracker).await.code(), Code::Unavailable);
    let (_tx2, _control2) = registered_control_stream(&channel, "c1").await;
    assert_eq!(server.clients().len(), 1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn withheld_permits_stop_delivery_until_released() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "app", &["Do"], 5).await;
    server.faults().withhold_permits();
    let call = spawn_dispatch(&channel, "c1", "Do");
    until("c1 queued while permits are withheld", || {
        server.command_handlers()["Do"][0].queued == 1
    })
    .await;
    handler.assert_nothing_received().await;
    server.faults().release_permits();
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::Command(command)) => {
            handler
                .tx
                .send(CommandProviderOutbound {
                    instruction_id: String::new(),
                    request: Some(FromHandler::CommandResponse(CommandResponse {
                        request_identifier: command.message_identifier,
                        ..CommandResponse::default()
                    })),
                })
                .expect("send");
        }
        other => panic!("expected the command, got {other:?}"),
    }
    assert!(finished(call).await.error_code.is_empty());
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn withheld_permits_also_stop_event_streams() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut events = EventStoreClient::new(channel);
    let (tx, request) = outbound();
    let mut tracker = events
        .list_events(request)
        .await
        .expect("stream")
        .into_inner();
    server.faults().withhold_permits();
    tx.send(GetEventsRequest {
        number_of_permits: 10,
        ..GetEventsRequest::default()
    })
    .expect("send");
    events
        .append_event(req(tokio_stream::iter(vec![Event::default()])))
        .await
        .expect("append");
    until("the tracker holds the appended event back", || {
        server
            .event_trackers()
            .iter()
            .any(|t| t.events_seen >= 1 && t.next_token == 0 && t.permits == 10)
    })
    .await;
    server.faults().release_permits();
    assert_eq!(next(&mut tracker).await.token, 0);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn delayed_acks_arrive_late() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut client = CommandServiceClient::new(channel);
    let (tx, request) = outbound();
    let mut inbound = client
        .open_stream(request)
        .await
        .expect("stream")
        .into_inner();
    let delay = Duration::from_millis(400);
    server.faults().delay_acks(delay);
    let sent = Instant::now();
    tx.send(CommandProviderOutbound {
        instruction_id: "sub".to_owned(),
        request: Some(FromHandler::Subscribe(CommandSubscription {
            message_id: "sub".to_owned(),
            command: "Do".to_owned(),
            component_name: "app".to_owned(),
            client_id: "h1".to_owned(),
            load_factor: 1,
        })),
    })
    .expect("send");
    let ack = command_ack(&mut inbound).await;
    assert_eq!(ack.instruction_id, "sub");
    assert!(
        sent.elapsed() >= delay,
        "ack came after {:?}",
        sent.elapsed()
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn request_reconnect_reaches_the_clients_control_stream() {
    let server = start().await;
    let channel = channel(&server).await;
    let (_tx, mut control) = registered_control_stream(&channel, "c1").await;
    assert!(!server.faults().request_reconnect("unknown"));
    assert!(server.faults().request_reconnect("c1"));
    match next(&mut control).await.request {
        Some(Outgoing::RequestReconnect(_)) => {}
        other => panic!("expected request_reconnect, got {other:?}"),
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn shortened_pending_timeout_answers_axoniq_4002() {
    let server = AxonTestServer::builder().start().await.expect("starts");
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "app", &["Slow"], 5).await;
    server
        .faults()
        .set_sweep_interval(Duration::from_millis(20));
    server
        .faults()
        .set_pending_request_timeout(Duration::from_millis(100));
    let call = spawn_dispatch(&channel, "c1", "Slow");
    next(&mut handler.inbound).await; // delivered, never answered
    assert_eq!(finished(call).await.error_code, error_code::COMMAND_TIMEOUT);
    assert_eq!(server.pending_commands(), 0);
    server.stop().await.expect("stops");
}
