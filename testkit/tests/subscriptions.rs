//! QueryService.Subscription: subscription queries.

mod common;

use common::{QueryHandler, WAIT, channel, next, outbound};
use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::query::query_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::query::query_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::query::query_service_client::QueryServiceClient;
use telamon_axon_proto::pb::query::subscription_query_request::Request as SubscriberRequest;
use telamon_axon_proto::pb::query::subscription_query_response::Response as Update;
use telamon_axon_proto::pb::query::{
    QueryProviderOutbound, QueryRequest, QueryUpdate, SubscriptionQuery, SubscriptionQueryRequest,
    SubscriptionQueryResponse,
};
use telamon_axon_proto::{headers, pb};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

type Subscriber = (
    common::Sender<SubscriptionQueryRequest>,
    Streaming<SubscriptionQueryResponse>,
);

fn subscription(id: &str, name: &str) -> SubscriptionQuery {
    SubscriptionQuery {
        subscription_identifier: id.to_owned(),
        number_of_permits: 0,
        query_request: Some(QueryRequest {
            message_identifier: id.to_owned(),
            query: name.to_owned(),
            client_id: "subscriber".to_owned(),
            ..QueryRequest::default()
        }),
        update_response_type: None,
    }
}

async fn subscribe(channel: &Channel, id: &str, name: &str, permits: i64) -> Subscriber {
    let mut client = QueryServiceClient::new(channel.clone());
    let (tx, request) = outbound();
    let stream = client
        .subscription(request)
        .await
        .expect("call")
        .into_inner();
    let flow = SubscriptionQuery {
        number_of_permits: permits,
        ..SubscriptionQuery::default()
    };
    tx.send(SubscriptionQueryRequest {
        request: Some(SubscriberRequest::FlowControl(flow)),
    })
    .expect("send");
    tx.send(SubscriptionQueryRequest {
        request: Some(SubscriberRequest::Subscribe(subscription(id, name))),
    })
    .expect("send");
    (tx, stream)
}

/// Next subscription-query request a handler receives.
async fn handler_request(
    handler: &mut QueryHandler,
) -> pb::query::subscription_query_request::Request {
    match next(&mut handler.inbound).await.request {
        Some(ToHandler::SubscriptionQueryRequest(SubscriptionQueryRequest {
            request: Some(request),
        })) => request,
        other => panic!("expected a subscription query request, got {other:?}"),
    }
}

fn update(handler: &QueryHandler, subscription_id: &str, data: u8) {
    handler
        .tx
        .send(QueryProviderOutbound {
            instruction_id: String::new(),
            request: Some(FromHandler::SubscriptionQueryResponse(
                SubscriptionQueryResponse {
                    message_identifier: format!("u{data}"),
                    subscription_identifier: subscription_id.to_owned(),
                    response: Some(Update::Update(QueryUpdate {
                        message_identifier: format!("u{data}"),
                        payload: Some(pb::SerializedObject {
                            r#type: "bytes".to_owned(),
                            revision: String::new(),
                            data: vec![data],
                        }),
                        ..QueryUpdate::default()
                    })),
                },
            )),
        })
        .expect("send");
}

#[tokio::test]
async fn subscription_without_handler_fails_the_call() {
    let server = common::start().await;
    let channel = channel(&server).await;
    let (_tx, mut stream) = subscribe(&channel, "s1", "Nobody", 10).await;
    let status = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("bounded")
        .expect_err("call fails");
    assert_eq!(status.code(), Code::Cancelled);
    assert_eq!(
        status
            .metadata()
            .get(headers::ERROR_CODE)
            .and_then(|v| v.to_str().ok()),
        Some(error_code::OTHER)
    );
    assert!(status.message().contains(error_code::NO_HANDLER_FOR_QUERY));
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn subscribe_reaches_every_handler_instance_and_late_joiners() {
    let server = common::start().await;
    let channel = channel(&server).await;
    let mut a1 = QueryHandler::open(&channel, "a1", "app-a", &["Watch"], 0).await;
    let mut a2 = QueryHandler::open(&channel, "a2", "app-a", &["Watch"], 0).await;
    let (_tx, _stream) = subscribe(&channel, "s1", "Watch", 10).await;
    for handler in [&mut a1, &mut a2] {
        match handler_request(handler).await {
            SubscriberRequest::Subscribe(q) => assert_eq!(q.subscription_identifier, "s1"),
            other => panic!("expected subscribe, got {other:?}"),
        }
    }
    let mut late = QueryHandler::open(&channel, "late", "app-b", &["Watch"], 0).await;
    match handler_request(&mut late).await {
        SubscriberRequest::Subscribe(q) => assert_eq!(q.subscription_identifier, "s1"),
        other => panic!("expected replayed subscribe, got {other:?}"),
    }
    assert_eq!(server.subscription_queries(), 1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn updates_are_routed_by_id_and_never_exceed_the_subscriber_permits() {
    let server = common::start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "h", "app", &["Watch"], 0).await;
    let (_tx, mut stream) = subscribe(&channel, "s1", "Watch", 1).await;
    handler_request(&mut handler).await; // subscribe
    update(&handler, "s1", 1);
    let first = next(&mut stream).await;
    assert_eq!(first.subscription_identifier, "s1");
    assert!(matches!(first.response, Some(Update::Update(_))));
    update(&handler, "s1", 2); // no permit left: SE fails the subscription
    let status = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("bounded")
        .expect_err("out of permits");
    assert_eq!(status.code(), Code::Cancelled);
    match handler_request(&mut handler).await {
        SubscriberRequest::Unsubscribe(q) => assert_eq!(q.subscription_identifier, "s1"),
        other => panic!("expected unsubscribe, got {other:?}"),
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn unsubscribe_and_cancel_propagate_to_handlers() {
    let server = common::start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "h", "app", &["Watch"], 0).await;
    let (tx, stream) = subscribe(&channel, "s1", "Watch", 10).await;
    handler_request(&mut handler).await;
    tx.send(SubscriptionQueryRequest {
        request: Some(SubscriberRequest::Unsubscribe(subscription("s1", "Watch"))),
    })
    .expect("send");
    match handler_request(&mut handler).await {
        SubscriberRequest::Unsubscribe(q) => assert_eq!(q.subscription_identifier, "s1"),
        other => panic!("expected unsubscribe, got {other:?}"),
    }
    drop((tx, stream));
    let (tx2, stream2) = subscribe(&channel, "s2", "Watch", 10).await;
    handler_request(&mut handler).await; // subscribe s2
    drop((tx2, stream2)); // caller half-closes and goes away
    match handler_request(&mut handler).await {
        SubscriberRequest::Unsubscribe(q) => assert_eq!(q.subscription_identifier, "s2"),
        other => panic!("expected unsubscribe after cancel, got {other:?}"),
    }
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn update_for_an_unknown_subscription_is_answered_with_unsubscribe() {
    let server = common::start().await;
    let channel = channel(&server).await;
    let mut handler = QueryHandler::open(&channel, "h", "app", &["Watch"], 0).await;
    update(&handler, "ghost", 1);
    match handler_request(&mut handler).await {
        SubscriberRequest::Unsubscribe(q) => assert_eq!(q.subscription_identifier, "ghost"),
        other => panic!("expected unsubscribe, got {other:?}"),
    }
    handler.assert_nothing_received().await;
    server.stop().await.expect("stops");
}
