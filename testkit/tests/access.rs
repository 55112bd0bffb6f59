//! Access token, context header and message size limit.

mod common;

use common::channel;
use telamon_axon_proto::pb::SerializedObject;
use telamon_axon_proto::pb::command::Command;
use telamon_axon_proto::pb::command::command_service_client::CommandServiceClient;
use telamon_axon_proto::pb::control::ClientIdentification;
use telamon_axon_proto::pb::control::platform_service_client::PlatformServiceClient;
use telamon_axon_proto::pb::event::GetLastTokenRequest;
use telamon_axon_proto::pb::event::event_store_client::EventStoreClient;
use telamon_axon_proto::{error_code, headers};
use telamon_testkit::AxonTestServer;
use tonic::{Code, Request};

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = common::req(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert(headers::ACCESS_TOKEN, token.parse().expect("ascii"));
    }
    request
}

fn trailer_code(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get(headers::ERROR_CODE)
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn missing_token_is_permission_denied_with_axoniq_1000() {
    let server = AxonTestServer::builder()
        .access_token(Some("secret"))
        .start()
        .await
        .expect("starts");
    let mut client = PlatformServiceClient::new(channel(&server).await);
    let status = client
        .get_platform_server(with_token(ClientIdentification::default(), None))
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        trailer_code(&status),
        Some(error_code::AUTHENTICATION_TOKEN_MISSING)
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn wrong_token_is_permission_denied_with_axoniq_1001() {
    let server = AxonTestServer::builder()
        .access_token(Some("secret"))
        .start()
        .await
        .expect("starts");
    let mut events = EventStoreClient::new(channel(&server).await);
    let status = events
        .get_last_token(with_token(GetLastTokenRequest {}, Some("wrong")))
        .await
        .expect_err("rejected");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        trailer_code(&status),
        Some(error_code::AUTHENTICATION_INVALID_TOKEN)
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn right_token_is_accepted_on_every_service() {
    let server = AxonTestServer::builder()
        .access_token(Some("secret"))
        .start()
        .await
        .expect("starts");
    let channel = channel(&server).await;
    PlatformServiceClient::new(channel.clone())
        .get_platform_server(with_token(ClientIdentification::default(), Some("secret")))
        .await
        .expect("platform accepted");
    EventStoreClient::new(channel.clone())
        .get_last_token(with_token(GetLastTokenRequest {}, Some("secret")))
        .await
        .expect("event store accepted");
    let response = CommandServiceClient::new(channel)
        .dispatch(with_token(
            Command {
                message_identifier: "c1".to_owned(),
                name: "Nobody".to_owned(),
                ..Command::default()
            },
            Some("secret"),
        ))
        .await
        .expect("command service accepted");
    assert_eq!(
        response.into_inner().error_code,
        error_code::NO_HANDLER_FOR_COMMAND
    );
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn any_context_lands_in_the_single_default_context() {
    let server = AxonTestServer::builder().start().await.expect("starts");
    let mut client = EventStoreClient::new(channel(&server).await);
    let mut request = Request::new(GetLastTokenRequest {});
    request
        .metadata_mut()
        .insert(headers::CONTEXT, "other-context".parse().expect("ascii"));
    let token = client.get_last_token(request).await.expect("accepted");
    assert_eq!(token.into_inner().token, -1);
    server.stop().await.expect("stops");
}

#[tokio::test]
async fn messages_over_the_size_limit_are_rejected() {
    let server = AxonTestServer::builder()
        .max_message_size(1024)
        .start()
        .await
        .expect("starts");
    let mut client = CommandServiceClient::new(channel(&server).await);
    let status = client
        .dispatch(common::req(Command {
            message_identifier: "big".to_owned(),
            name: "Big".to_owned(),
            payload: Some(SerializedObject {
                r#type: "bytes".to_owned(),
                revision: String::new(),
                data: vec![0; 4096],
            }),
            ..Command::default()
        }))
        .await
        .expect_err("too large");
    // grpc-java (AxonServer) reports RESOURCE_EXHAUSTED; tonic's decoder reports OUT_OF_RANGE.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    server.stop().await.expect("stops");
}
