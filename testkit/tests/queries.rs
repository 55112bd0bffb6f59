//! QueryService: handler registration and the Query rpc.

mod common;

use std::time::Duration;

use common::{QueryHandler, WAIT, channel, next, req, start, until};
use futures_util::FutureExt;
use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::query::query_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::query::query_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::query::query_service_client::QueryServiceClient;
use telamon_axon_proto::pb::query::{
    QueryComplete, QueryProviderOutbound, QueryRequest, QueryResponse,
};
use telamon_axon_proto::pb::{
    MetaDataValue, ProcessingInstruction, ProcessingKey, SerializedObject, meta_data_value,
};
use telamon_testkit::AxonTestServer;
use tonic::Streaming;
use tonic::transport::Channel;

fn query(id: &str, name: &str) -> QueryRequest {
    QueryRequest {
        message_identifier: id.to_owned(),
        query: name.to_owned(),
        client_id: "caller".to_owned(),
        component_name: "caller-app".to_owned(),
        ..QueryRequest::default()
    }
}

fn instruction(key: ProcessingKey, data: meta_data_value::Data) -> ProcessingInstruction {
    ProcessingInstruction {
        key: key as i32,
        value: Some(MetaDataValue { data: Some(data) }),
    }
}

async fn call(channel: &Channel, request: QueryRequest) -> Streaming<QueryResponse> {
    QueryServiceClient::new(channel.clone())
        .query(req(request))
        .await
        .expect("query call")
        .into_inner()
}

async fn received_query(handler: &mut QueryHandler) -> QueryRequest {
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::Query(query)) => query,
        other => panic!("expected a query, got {other:?}"),
    }
}

fn respond(handler: &QueryHandler, request_id: &str, data: &[u8], error: Option<&str>) {
    handler
        .tx
        .send(QueryProviderOutbound {
            instruction_id: String::new(),
            request: Some(FromHandler::QueryResponse(QueryResponse {
                message_identifier: format!("{}-{request_id}", handler.client_id),
                request_identifier: request_id.to_owned(),
                error_code: error.unwrap_or_default().to_owned(),
                payload: Some(SerializedObject {
                    r#type: "bytes".to_owned(),
                    revision: String::new(),
                    data: data.to_vec(),
                }),
                ..QueryResponse::default()
            })),
        })
        .expect("send");
}

fn complete(handler: &QueryHandler, request_id: &str) {
    handler
        .tx
        .send(QueryProviderOutbound {
            instruction_id: String::new(),
            request: Some(FromHandler::QueryComplete(QueryComplete {
                message_id: format!("done-{request_id}"),
                request_id: request_id.to_owned(),
            })),
        })
        .expect("send");
}

async fn assert_ended(stream: &mut Streaming<QueryResponse>) {
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("end within the bound");
    assert!(
        matches!(end, Ok(None)),
        "expected a normal end, got {end:?}"
    );
}

#[tokio::test]
async fn query_without_handler_answers_axoniq_5000_and_completes() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut responses = call(&channel, query("q1", "Unknown")).await;
    let response = next(&mut responses).await;
    assert_eq!(response.error_code, error_code::NO_HANDLER_FOR_QUERY);
    assert_eq!(response.request_identifier, "q1");
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn query_goes_to_one_handler_per_component_and_completes_after_all() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut a1 = QueryHandler::open(&channel, "a1", "app-a", &["Find"], 10).await;
    let mut a2 = QueryHandler::open(&channel, "a2", "app-a", &["Find"], 10).await;
    let mut b1 = QueryHandler::open(&channel, "b1", "app-b", &["Find"], 10).await;
    let mut responses = call(&channel, query("q1", "Find")).await;

    let from_b = received_query(&mut b1).await;
    assert_eq!(from_b.message_identifier, "q1");
    // Exactly one of the two instances of app-a gets it.
    let a1_first = tokio::select! {
        q = received_query(&mut a1) => { assert_eq!(q.message_identifier, "q1"); true }
        q = received_query(&mut a2) => { assert_eq!(q.message_identifier, "q1"); false }
    };
    let (a_handler, quiet) = if a1_first {
        (&mut a1, &mut a2)
    } else {
        (&mut a2, &mut a1)
    };
    quiet.assert_nothing_received().await;

    respond(a_handler, "q1", b"A", None);
    respond(&b1, "q1", b"B", None);
    let mut answers = vec![
        next(&mut responses).await.payload.expect("payload").data,
        next(&mut responses).await.payload.expect("payload").data,
    ];
    answers.sort();
    assert_eq!(answers, vec![b"A".to_vec(), b"B".to_vec()]);
    complete(a_handler, "q1");
    // The server has taken app-a's completion (it acks in stream order)…
    a_handler.assert_nothing_received().await;
    // …and the call is still open: app-b has not completed yet.
    assert_eq!(
        server.active_queries(),
        1,
        "the call must wait for every QueryComplete"
    );
    complete(&b1, "q1");
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn error_is_held_back_when_another_handler_succeeds() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut a = QueryHandler::open(&channel, "a", "app-a", &["Find"], 10).await;
    let mut b = QueryHandler::open(&channel, "b", "app-b", &["Find"], 10).await;
    let mut responses = call(&channel, query("q1", "Find")).await;
    received_query(&mut a).await;
    received_query(&mut b).await;
    respond(&a, "q1", b"", Some("AXONIQ-5001"));
    complete(&a, "q1");
    respond(&b, "q1", b"fine", None);
    complete(&b, "q1");
    let only = next(&mut responses).await;
    assert!(only.error_code.is_empty(), "{only:?}");
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn held_error_is_forwarded_when_nothing_succeeds() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut a = QueryHandler::open(&channel, "a", "app-a", &["Find"], 10).await;
    let mut responses = call(&channel, query("q1", "Find")).await;
    received_query(&mut a).await;
    respond(&a, "q1", b"", Some("AXONIQ-5001"));
    // The server has taken the error (it acks in stream order) and kept it.
    a.assert_nothing_received().await;
    assert!(
        responses.message().now_or_never().is_none(),
        "the error is held until completion"
    );
    assert_eq!(server.active_queries(), 1);
    complete(&a, "q1");
    assert_eq!(next(&mut responses).await.error_code, "AXONIQ-5001");
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn no_query_is_delivered_before_flow_control() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Find"], 0).await;
    let _responses = call(&channel, query("q1", "Find")).await;
    until("q1 queued for lack of permits", || {
        server.query_handlers()["Find"][0].queued == 1
    })
    .await;
    handler.assert_nothing_received().await;
    handler.grant(1);
    let forwarded = received_query(&mut handler).await;
    assert_eq!(forwarded.message_identifier, "q1");
    assert!(
        forwarded
            .processing_instructions
            .iter()
            .any(|pi| { pi.key == ProcessingKey::ServerSupportsStreaming as i32 })
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn caller_cancel_sends_query_cancel_to_the_handler() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Find"], 10).await;
    let responses = call(&channel, query("q1", "Find")).await;
    received_query(&mut handler).await;
    drop(responses);
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::QueryCancel(reference)) => assert_eq!(reference.request_id, "q1"),
        other => panic!("expected query_cancel, got {other:?}"),
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn duplicate_query_id_in_flight_answers_axoniq_5007() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Find"], 10).await;
    let _first = call(&channel, query("same", "Find")).await;
    received_query(&mut handler).await;
    let mut second = call(&channel, query("same", "Find")).await;
    assert_eq!(
        next(&mut second).await.error_code,
        error_code::QUERY_DUPLICATED
    );
    assert_ended(&mut second).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn handler_disconnect_answers_axoniq_4001() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Find"], 10).await;
    let mut responses = call(&channel, query("q1", "Find")).await;
    received_query(&mut handler).await;
    drop(handler);
    assert_eq!(
        next(&mut responses).await.error_code,
        error_code::CONNECTION_TO_HANDLER_LOST
    );
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn undelivered_query_times_out_with_axoniq_5006() {
    let server = AxonTestServer::builder()
        .sweep_interval(Duration::from_millis(20))
        .start()
        .await
        .expect("starts");
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Find"], 0).await;
    let mut request = query("q1", "Find");
    request.processing_instructions.push(instruction(
        ProcessingKey::Timeout,
        meta_data_value::Data::NumberValue(100),
    ));
    let mut responses = call(&channel, request).await;
    assert_eq!(
        next(&mut responses).await.error_code,
        error_code::QUERY_TIMEOUT
    );
    assert_ended(&mut responses).await;
    handler.grant(5);
    handler.assert_nothing_received().await; // the handler never sees it
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn streaming_query_keeps_the_first_responder_and_grants_query_permits() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut a = QueryHandler::open(&channel, "a", "app-a", &["Stream"], 10).await;
    let mut b = QueryHandler::open(&channel, "b", "app-b", &["Stream"], 10).await;
    let mut request = query("s1", "Stream");
    request.processing_instructions.push(instruction(
        ProcessingKey::ClientSupportsStreaming,
        meta_data_value::Data::BooleanValue(true),
    ));
    let mut responses = call(&channel, request).await;
    for handler in [&mut a, &mut b] {
        received_query(handler).await;
        match next(&mut handler.inbound).await.request {
            Some(ToHandler::QueryFlowControl(flow)) => {
                assert_eq!(flow.query_reference.expect("reference").request_id, "s1");
                assert!(flow.permits > 0);
            }
            other => panic!("expected query_flow_control, got {other:?}"),
        }
    }
    respond(&a, "s1", b"1", None);
    assert_eq!(
        next(&mut responses).await.payload.expect("payload").data,
        b"1"
    );
    match next(&mut b.inbound).await.request {
        Some(ToHandler::QueryCancel(reference)) => assert_eq!(reference.request_id, "s1"),
        other => panic!("expected query_cancel for the slower handler, got {other:?}"),
    }
    respond(&a, "s1", b"2", None);
    complete(&a, "s1");
    assert_eq!(
        next(&mut responses).await.payload.expect("payload").data,
        b"2"
    );
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn metadata_matching_client_tags_selects_the_instance_within_a_component() {
    let server = start().await;
    let channel = channel(&server).await;
    let _eu_control = common::register(&channel, "eu-1", "app", &[("region", "eu")]).await;
    let _us_control = common::register(&channel, "us-1", "app", &[("region", "us")]).await;
    let mut eu = QueryHandler::open(&channel, "eu-1", "app", &["Find"], 10).await;
    let mut us = QueryHandler::open(&channel, "us-1", "app", &["Find"], 10).await;
    for i in 0..4 {
        let id = format!("q{i}");
        let mut request = query(&id, "Find");
        request.meta_data.insert(
            "region".to_owned(),
            MetaDataValue {
                data: Some(meta_data_value::Data::TextValue("eu".to_owned())),
            },
        );
        let mut responses = call(&channel, request).await;
        assert_eq!(received_query(&mut eu).await.message_identifier, id);
        respond(&eu, &id, b"eu", None);
        complete(&eu, &id);
        assert_eq!(
            next(&mut responses).await.payload.expect("payload").data,
            b"eu"
        );
        assert_ended(&mut responses).await;
    }
    us.assert_nothing_received().await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn streaming_handler_gets_more_query_permits_as_the_caller_reads() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Stream"], 100).await;
    let mut request = query("s1", "Stream");
    request.processing_instructions.push(instruction(
        ProcessingKey::ClientSupportsStreaming,
        meta_data_value::Data::BooleanValue(true),
    ));
    let mut responses = call(&channel, request).await;
    received_query(&mut handler).await;
    let initial = match next(&mut handler.inbound).await.request {
        Some(ToHandler::QueryFlowControl(flow)) => flow.permits,
        other => panic!("expected query_flow_control, got {other:?}"),
    };
    for i in 0..initial {
        respond(&handler, "s1", &[u8::try_from(i).expect("small")], None);
    }
    for _ in 0..initial {
        next(&mut responses).await;
    }
    // The caller consumed the whole window: the handler may send more.
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::QueryFlowControl(flow)) => assert!(flow.permits > 0),
        other => panic!("expected more query permits, got {other:?}"),
    }
    complete(&handler, "s1");
    assert_ended(&mut responses).await;
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn unanswered_query_is_cancelled_with_axoniq_5006_after_the_pending_timeout() {
    let server = start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "a", "app-a", &["Find"], 10).await;
    server
        .faults()
        .set_sweep_interval(Duration::from_millis(20));
    server
        .faults()
        .set_pending_request_timeout(Duration::from_millis(150));
    let mut responses = call(&channel, query("q1", "Find")).await;
    received_query(&mut handler).await; // never answered
    assert_eq!(
        next(&mut responses).await.error_code,
        error_code::QUERY_TIMEOUT
    );
    assert_ended(&mut responses).await;
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::QueryCancel(reference)) => assert_eq!(reference.request_id, "q1"),
        other => panic!("expected query_cancel, got {other:?}"),
    }
    server.stop().await.expect("stops");
}
