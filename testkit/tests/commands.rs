//! CommandService: registrations, permits, routing, in-band errors.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{CommandHandler, channel, command_ack, next, req, start, until};
use futures_util::StreamExt;
use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::command::command_service_client::CommandServiceClient;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderOutbound, CommandResponse, CommandSubscription,
};
use telamon_axon_proto::pb::{
    MetaDataValue, ProcessingInstruction, ProcessingKey, SerializedObject, meta_data_value,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

fn command(id: &str, name: &str) -> Command {
    Command {
        message_identifier: id.to_owned(),
        name: name.to_owned(),
        client_id: "sender".to_owned(),
        component_name: "sender-app".to_owned(),
        ..Command::default()
    }
}

fn with_routing_key(mut command: Command, key: &str) -> Command {
    command.processing_instructions.push(ProcessingInstruction {
        key: ProcessingKey::RoutingKey as i32,
        value: Some(MetaDataValue {
            data: Some(meta_data_value::Data::TextValue(key.to_owned())),
        }),
    });
    command
}

fn spawn_dispatch(channel: &Channel, command: Command) -> JoinHandle<CommandResponse> {
    let mut client = CommandServiceClient::new(channel.clone());
    tokio::spawn(async move {
        client
            .dispatch(req(command))
            .await
            .expect("dispatch is never a gRPC error")
            .into_inner()
    })
}

async fn received_command(handler: &mut CommandHandler) -> Command {
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::Command(command)) => command,
        other => panic!("expected a command, got {other:?}"),
    }
}

fn answer(handler: &CommandHandler, command: &Command, data: &[u8]) {
    handler
        .tx
        .send(CommandProviderOutbound {
            instruction_id: String::new(),
            request: Some(FromHandler::CommandResponse(CommandResponse {
                message_identifier: format!("resp-{}", command.message_identifier),
                request_identifier: command.message_identifier.clone(),
                payload: Some(SerializedObject {
                    r#type: "bytes".to_owned(),
                    revision: String::new(),
                    data: data.to_vec(),
                }),
                ..CommandResponse::default()
            })),
        })
        .expect("send");
}

async fn finished(call: JoinHandle<CommandResponse>) -> CommandResponse {
    tokio::time::timeout(common::WAIT, call)
        .await
        .expect("dispatch completes within the bound")
        .expect("join")
}

#[tokio::test]
async fn dispatch_without_handler_answers_axoniq_4000_in_band() {
    let server = start().await;
    let mut client = CommandServiceClient::new(channel(&server).await);
    let response = client
        .dispatch(req(command("c1", "Unknown")))
        .await
        .expect("gRPC OK")
        .into_inner();
    assert_eq!(response.error_code, error_code::NO_HANDLER_FOR_COMMAND);
    assert_eq!(response.request_identifier, "c1");
    let message = response.error_message.expect("error message");
    assert_eq!(message.message, "No Handler for command: Unknown");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn subscription_is_acked_and_registered_with_load_factor() {
    let server = start().await;
    let channel = channel(&server).await;
    let handler = CommandHandler::open(&channel, "h1", "orders", &["PlaceOrder"], 0).await;
    let handlers = server.command_handlers();
    let registered = &handlers["PlaceOrder"];
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0].client_id, "h1");
    assert_eq!(registered[0].component_name, "orders");
    assert_eq!(registered[0].load_factor, 100);
    drop(handler);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn no_command_is_delivered_before_flow_control() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["PlaceOrder"], 0).await;
    let call = spawn_dispatch(&channel, command("c1", "PlaceOrder"));
    until("c1 queued for lack of permits", || {
        server.command_handlers()["PlaceOrder"][0].queued == 1
    })
    .await;
    handler.assert_nothing_received().await;
    handler.grant(1);
    let received = received_command(&mut handler).await;
    assert_eq!(received.message_identifier, "c1");
    answer(&handler, &received, b"done");
    let response = finished(call).await;
    assert!(response.error_code.is_empty());
    assert_eq!(response.request_identifier, "c1");
    assert_eq!(response.payload.expect("payload").data, b"done");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn each_delivered_command_consumes_one_permit() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["PlaceOrder"], 2).await;
    let calls: Vec<_> = (0..3)
        .map(|i| spawn_dispatch(&channel, command(&format!("c{i}"), "PlaceOrder")))
        .collect();
    let first = received_command(&mut handler).await;
    let second = received_command(&mut handler).await;
    until("the third command queued", || {
        server.command_handlers()["PlaceOrder"][0].queued == 1
    })
    .await;
    handler.assert_nothing_received().await;
    assert_eq!(server.command_handlers()["PlaceOrder"][0].permits, 0);
    handler.grant(1);
    let third = received_command(&mut handler).await;
    for command in [&first, &second, &third] {
        answer(&handler, command, b"ok");
    }
    for call in calls {
        assert!(finished(call).await.error_code.is_empty());
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn responses_are_correlated_by_request_identifier() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["Do"], 10).await;
    let call_a = spawn_dispatch(&channel, command("a", "Do"));
    let a = received_command(&mut handler).await;
    let call_b = spawn_dispatch(&channel, command("b", "Do"));
    let b = received_command(&mut handler).await;
    answer(&handler, &b, b"B");
    answer(&handler, &a, b"A");
    assert_eq!(finished(call_a).await.payload.expect("payload").data, b"A");
    assert_eq!(finished(call_b).await.payload.expect("payload").data, b"B");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn same_routing_key_reaches_the_same_handler() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handlers = Vec::new();
    for i in 0..3 {
        handlers
            .push(CommandHandler::open(&channel, &format!("h{i}"), "orders", &["Do"], 1000).await);
    }
    let mut owner: HashMap<String, usize> = HashMap::new();
    let mut used = [false; 3];
    for round in 0..2 {
        for k in 0..20 {
            let key = format!("aggregate-{k}");
            let call = spawn_dispatch(
                &channel,
                with_routing_key(command(&format!("{round}-{k}"), "Do"), &key),
            );
            // Exactly one handler receives it.
            let (index, received) = tokio::time::timeout(common::WAIT, async {
                loop {
                    for (i, handler) in handlers.iter_mut().enumerate() {
                        if let Ok(Ok(Some(message))) = tokio::time::timeout(
                            Duration::from_millis(5),
                            handler.inbound.message(),
                        )
                        .await
                            && let Some(ToHandler::Command(c)) = message.request
                        {
                            return (i, c);
                        }
                    }
                }
            })
            .await
            .expect("delivered");
            answer(&handlers[index], &received, b"ok");
            finished(call).await;
            used[index] = true;
            let previous = *owner.entry(key.clone()).or_insert(index);
            assert_eq!(previous, index, "key {key} moved between handlers");
        }
    }
    assert!(
        used.iter().filter(|u| **u).count() >= 2,
        "routing spreads keys: {used:?}"
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn handler_stream_closing_with_a_delivered_command_answers_axoniq_4001() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["Do"], 1).await;
    let call = spawn_dispatch(&channel, command("c1", "Do"));
    received_command(&mut handler).await;
    drop(handler);
    let response = finished(call).await;
    assert_eq!(response.error_code, error_code::CONNECTION_TO_HANDLER_LOST);
    assert_eq!(response.request_identifier, "c1");
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn queued_commands_are_rerouted_when_their_handler_closes() {
    let server = start().await;
    let channel = channel(&server).await;
    let starving = CommandHandler::open(&channel, "h1", "orders", &["Do"], 0).await;
    let call = spawn_dispatch(&channel, command("c1", "Do"));
    tokio::time::timeout(common::WAIT, async {
        while server.command_handlers()["Do"][0].queued == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("command queued");
    let mut healthy = CommandHandler::open(&channel, "h2", "orders", &["Do"], 5).await;
    drop(starving);
    let received = received_command(&mut healthy).await;
    assert_eq!(received.message_identifier, "c1");
    answer(&healthy, &received, b"rerouted");
    assert_eq!(
        finished(call).await.payload.expect("payload").data,
        b"rerouted"
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn queued_command_without_another_handler_answers_axoniq_4000() {
    let server = start().await;
    let channel = channel(&server).await;
    let starving = CommandHandler::open(&channel, "h1", "orders", &["Do"], 0).await;
    let call = spawn_dispatch(&channel, command("c1", "Do"));
    tokio::time::timeout(common::WAIT, async {
        while server.pending_commands() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("command queued");
    drop(starving);
    assert_eq!(
        finished(call).await.error_code,
        error_code::NO_HANDLER_FOR_COMMAND
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn duplicate_command_id_in_flight_answers_axoniq_4005() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["Do"], 5).await;
    let first = spawn_dispatch(&channel, command("same", "Do"));
    let received = received_command(&mut handler).await;
    let duplicate = finished(spawn_dispatch(&channel, command("same", "Do"))).await;
    assert_eq!(duplicate.error_code, error_code::COMMAND_DUPLICATED);
    answer(&handler, &received, b"ok");
    assert!(finished(first).await.error_code.is_empty());
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn unsubscribe_is_acked_and_removes_the_handler() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["Do"], 5).await;
    handler
        .tx
        .send(CommandProviderOutbound {
            instruction_id: "unsub-1".to_owned(),
            request: Some(FromHandler::Unsubscribe(CommandSubscription {
                message_id: "unsub-1".to_owned(),
                command: "Do".to_owned(),
                component_name: "orders".to_owned(),
                client_id: "h1".to_owned(),
                load_factor: 0,
            })),
        })
        .expect("send");
    let ack = command_ack(&mut handler.inbound).await;
    assert_eq!(ack.instruction_id, "unsub-1");
    assert!(ack.success);
    let response = finished(spawn_dispatch(&channel, command("c1", "Do"))).await;
    assert_eq!(response.error_code, error_code::NO_HANDLER_FOR_COMMAND);
    server.stop().await.expect("stops");
}

/// Commands of the load test (100 000; `TESTKIT_LOAD_COMMANDS` overrides).
fn load_count() -> usize {
    std::env::var("TESTKIT_LOAD_COMMANDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_many_commands_through_one_handler_with_a_small_permit_window() {
    const WINDOW: i64 = 100;
    const REFILL: i64 = 25;
    let count = load_count();
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["Load"], WINDOW).await;
    let answering = tokio::spawn(async move {
        let mut answered = 0usize;
        while answered < count {
            let Ok(Some(message)) = handler.inbound.message().await else {
                break;
            };
            if let Some(ToHandler::Command(command)) = message.request {
                answer(&handler, &command, &[]);
                answered += 1;
                if answered.is_multiple_of(usize::try_from(REFILL).expect("small")) {
                    handler.grant(REFILL);
                }
            }
        }
        // Keep the stream open: dropping it would cancel the call and lose unsent answers.
        (answered, handler)
    });
    let run = async {
        let client = CommandServiceClient::new(channel.clone());
        futures_util::stream::iter(0..count)
            .map(|i| {
                let mut client = client.clone();
                async move {
                    client
                        .dispatch(req(command(&format!("load-{i}"), "Load")))
                        .await
                        .expect("gRPC OK")
                        .into_inner()
                }
            })
            .buffer_unordered(256)
            .filter(|response| std::future::ready(response.error_code.is_empty()))
            .count()
            .await
    };
    let succeeded = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("load completes in time");
    assert_eq!(succeeded, count, "no command lost or failed");
    let (answered, handler) = answering.await.expect("join");
    assert_eq!(answered, count);
    drop(handler);
    assert_eq!(server.pending_commands(), 0);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn full_handler_queue_answers_axoniq_1900() {
    let config = telamon_testkit::ServerConfig {
        handler_queue_soft_limit: 1,
        handler_queue_hard_limit: 2,
        ..telamon_testkit::ServerConfig::default()
    };
    let server = telamon_testkit::AxonTestServer::new(config)
        .start()
        .await
        .expect("starts");
    let channel = channel(&server).await;
    let _starving = CommandHandler::open(&channel, "h1", "orders", &["Do"], 0).await;
    let queued = spawn_dispatch(&channel, command("c1", "Do"));
    tokio::time::timeout(common::WAIT, async {
        while server.pending_commands() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("first command queued");
    let rejected = finished(spawn_dispatch(&channel, command("c2", "Do"))).await;
    assert_eq!(rejected.error_code, error_code::TOO_MANY_REQUESTS);
    drop(queued);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn metadata_matching_client_tags_selects_the_handler() {
    use telamon_axon_proto::pb::control::platform_inbound_instruction::Request as Inbound;
    use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
    use telamon_axon_proto::pb::control::{ClientIdentification, PlatformInboundInstruction};

    let server = start().await;
    let channel = channel(&server).await;
    let mut controls = Vec::new();
    for (client_id, region) in [("eu-1", "eu"), ("us-1", "us")] {
        let mut platform = PlatformServiceClient::new(channel.clone());
        let (tx, request) = common::outbound();
        let mut inbound = platform
            .open_stream(request)
            .await
            .expect("stream")
            .into_inner();
        tx.send(PlatformInboundInstruction {
            instruction_id: "reg".to_owned(),
            request: Some(Inbound::Register(ClientIdentification {
                client_id: client_id.to_owned(),
                component_name: "orders".to_owned(),
                tags: [("region".to_owned(), region.to_owned())].into(),
                version: "4.6".to_owned(),
            })),
        })
        .expect("send");
        next(&mut inbound).await; // ack: registered
        controls.push((tx, inbound));
    }
    let mut eu = CommandHandler::open(&channel, "eu-1", "orders", &["Do"], 100).await;
    let mut us = CommandHandler::open(&channel, "us-1", "orders", &["Do"], 100).await;
    for i in 0..10 {
        let mut command = with_routing_key(command(&format!("c{i}"), "Do"), &format!("key-{i}"));
        command.meta_data.insert(
            "region".to_owned(),
            MetaDataValue {
                data: Some(meta_data_value::Data::TextValue("us".to_owned())),
            },
        );
        let call = spawn_dispatch(&channel, command);
        let received = received_command(&mut us).await;
        answer(&us, &received, b"us");
        assert_eq!(finished(call).await.payload.expect("payload").data, b"us");
    }
    eu.assert_nothing_received().await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn misbehaving_handler_messages_are_tolerated() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = CommandHandler::open(&channel, "h1", "orders", &["Do"], 0).await;
    // Empty oneof with an id: unsupported instruction.
    handler
        .tx
        .send(CommandProviderOutbound {
            instruction_id: "empty".to_owned(),
            request: None,
        })
        .expect("send");
    let ack = command_ack(&mut handler.inbound).await;
    assert_eq!(ack.instruction_id, "empty");
    assert!(!ack.success);
    assert_eq!(
        ack.error.expect("error").error_code,
        error_code::UNSUPPORTED_INSTRUCTION
    );
    // A response nobody waits for and negative permits are ignored.
    handler
        .tx
        .send(CommandProviderOutbound {
            instruction_id: String::new(),
            request: Some(FromHandler::CommandResponse(CommandResponse {
                request_identifier: "never-sent".to_owned(),
                ..CommandResponse::default()
            })),
        })
        .expect("send");
    handler.grant(-5);
    let call = spawn_dispatch(&channel, command("c1", "Do"));
    until("c1 queued behind negative permits", || {
        server.command_handlers()["Do"][0].queued == 1
    })
    .await;
    handler.assert_nothing_received().await;
    handler.grant(1);
    let received = received_command(&mut handler).await;
    answer(&handler, &received, b"still fine");
    assert_eq!(
        finished(call).await.payload.expect("payload").data,
        b"still fine"
    );
    server.stop().await.expect("stops");
}
