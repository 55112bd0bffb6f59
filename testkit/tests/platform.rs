//! PlatformService: routing answer and control stream.

mod common;

use std::time::Duration;

use common::{WAIT, channel, next, outbound, req, start};
use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::control::platform_inbound_instruction::Request as Inbound;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Outgoing;
use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
use telamon_axon_proto::pb::control::{
    ClientIdentification, Heartbeat, PlatformInboundInstruction, PlatformOutboundInstruction,
    SubscribeTopologyChanges,
};
use telamon_testkit::{AxonTestServer, StreamKind};

fn identification(client_id: &str) -> ClientIdentification {
    ClientIdentification {
        client_id: client_id.to_owned(),
        component_name: "orders".to_owned(),
        tags: Default::default(),
        version: "4.6".to_owned(),
    }
}

fn instruction(id: &str, request: Inbound) -> PlatformInboundInstruction {
    PlatformInboundInstruction {
        request: Some(request),
        instruction_id: id.to_owned(),
    }
}

/// Opens a control stream: the sender of instructions and the stream of the server's.
async fn control_stream(
    server: &telamon_testkit::RunningAxonServer,
) -> (
    common::Sender<PlatformInboundInstruction>,
    tonic::Streaming<PlatformOutboundInstruction>,
) {
    let mut client = PlatformServiceClient::new(channel(server).await);
    let (tx, request) = outbound();
    let inbound = client
        .open_stream(request)
        .await
        .expect("stream")
        .into_inner();
    (tx, inbound)
}

#[tokio::test]
async fn get_platform_server_returns_own_node_and_same_connection() {
    let server = start().await;
    let mut client = PlatformServiceClient::new(channel(&server).await);
    let info = client
        .get_platform_server(req(identification("c1")))
        .await
        .expect("call succeeds")
        .into_inner();
    assert!(info.same_connection);
    let primary = info.primary.expect("primary node");
    assert_eq!(primary.host_name, server.address().ip().to_string());
    assert_eq!(primary.grpc_port, i32::from(server.address().port()));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn register_is_recorded_and_acked_when_it_has_an_id() {
    let server = start().await;
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction(
        "reg-1",
        Inbound::Register(identification("c1")),
    ))
    .expect("send");
    match next(&mut inbound).await.request {
        Some(Outgoing::Ack(ack)) => {
            assert_eq!(ack.instruction_id, "reg-1");
            assert!(ack.success);
        }
        other => panic!("expected ack, got {other:?}"),
    }
    let clients = server.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].identification.client_id, "c1");
    assert_eq!(server.open_streams().get(&StreamKind::Platform), Some(&1));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn heartbeat_with_id_is_acked() {
    let server = start().await;
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction("", Inbound::Register(identification("c1"))))
        .expect("send");
    tx.send(instruction("hb-1", Inbound::Heartbeat(Heartbeat {})))
        .expect("send");
    match next(&mut inbound).await.request {
        Some(Outgoing::Ack(ack)) => {
            assert_eq!(ack.instruction_id, "hb-1");
            assert!(ack.success);
        }
        other => panic!("expected ack, got {other:?}"),
    }
    assert_eq!(server.clients()[0].heartbeats_received, 1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn unsupported_instruction_is_nacked_with_axoniq_1002() {
    let server = start().await;
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction("", Inbound::Register(identification("c1"))))
        .expect("send");
    tx.send(instruction(
        "topo-1",
        Inbound::SubscribeTopologyChanges(SubscribeTopologyChanges {}),
    ))
    .expect("send");
    match next(&mut inbound).await.request {
        Some(Outgoing::Ack(ack)) => {
            assert_eq!(ack.instruction_id, "topo-1");
            assert!(!ack.success);
            assert_eq!(
                ack.error.expect("error").error_code,
                error_code::UNSUPPORTED_INSTRUCTION
            );
        }
        other => panic!("expected ack, got {other:?}"),
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn server_heartbeats_are_sent_when_enabled() {
    let server = AxonTestServer::builder()
        .heartbeat(Some(Duration::from_millis(50)))
        .start()
        .await
        .expect("starts");
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction("", Inbound::Register(identification("c1"))))
        .expect("send");
    match next(&mut inbound).await.request {
        Some(Outgoing::Heartbeat(_)) => {}
        other => panic!("expected heartbeat, got {other:?}"),
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn silent_heartbeating_client_loses_its_streams() {
    let server = AxonTestServer::builder()
        .heartbeat(Some(Duration::from_millis(20)))
        .heartbeat_timeout(Duration::from_millis(200))
        .start()
        .await
        .expect("starts");
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction("", Inbound::Register(identification("c1"))))
        .expect("send");
    tx.send(instruction("", Inbound::Heartbeat(Heartbeat {})))
        .expect("send");
    // Never answer the server's heartbeats: the stream must fail.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("stream ends within the bound");
    let status = ended.expect("ends with an error status");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn stop_ends_open_streams() {
    let server = start().await;
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction("reg", Inbound::Register(identification("c1"))))
        .expect("send");
    next(&mut inbound).await;
    tokio::time::timeout(WAIT, server.stop())
        .await
        .expect("stop is bounded")
        .expect("stops");
    let end = tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("client sees the end");
    assert!(!matches!(end, Ok(Some(_))), "got {end:?}");
}

#[tokio::test]
async fn processor_instruction_waits_for_the_instruction_result() {
    use telamon_axon_proto::pb::InstructionResult;
    use telamon_axon_proto::pb::control::EventProcessorReference;

    let server = start().await;
    let (tx, mut inbound) = control_stream(&server).await;
    tx.send(instruction("reg", Inbound::Register(identification("c1"))))
        .expect("send");
    next(&mut inbound).await; // register ack
    let pause = Outgoing::PauseEventProcessor(EventProcessorReference {
        processor_name: "projector".to_owned(),
    });
    let waiting = server.processor_instruction("c1", pause, WAIT);
    let client_side = async {
        let received = next(&mut inbound).await;
        assert!(matches!(
            received.request,
            Some(Outgoing::PauseEventProcessor(_))
        ));
        assert!(!received.instruction_id.is_empty());
        tx.send(PlatformInboundInstruction {
            request: Some(Inbound::Result(InstructionResult {
                instruction_id: received.instruction_id.clone(),
                success: true,
                error: None,
            })),
            instruction_id: String::new(),
        })
        .expect("send");
        received.instruction_id
    };
    let (result, id) = tokio::join!(waiting, client_side);
    let result = result.expect("client known");
    assert!(result.success);
    assert_eq!(result.instruction_id, id);

    let unanswered = server
        .processor_instruction(
            "c1",
            Outgoing::StartEventProcessor(EventProcessorReference {
                processor_name: "projector".to_owned(),
            }),
            Duration::from_millis(100),
        )
        .await
        .expect("client known");
    assert!(!unanswered.success);
    assert_eq!(
        unanswered.error.expect("error").error_code,
        error_code::INSTRUCTION_RESULT_TIMEOUT
    );
    assert!(
        server
            .processor_instruction("nobody", Outgoing::Heartbeat(Heartbeat {}), WAIT)
            .await
            .is_err()
    );
    server.stop().await.expect("stops");
}
