//! Commands through the bridge, both ways, against the test server over
//! loopback gRPC: an application enum and `serde_json::Value`, the exact
//! bytes a Java application sees, errors with their Axon codes, and bad
//! input from either side.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::bank::{self, Bank};
use common::raw::{self, RawCommandHandler};
use serde_json::{Value, json};
use telamon_axon_proto::pb::command::{Command, CommandResponse};
use telamon_axon_proto::pb::{MetaDataValue, ProcessingKey, meta_data_value};
use telamon_sdk::{HandlerError, Headers, RequestOptions};

const BANK: &str = r#"
[module.axon.payload]
type-prefix = "com.example.bank."

[[module.axon.send-command]]
pattern = "bank.command.*"
routing-key = "/accountId"

[[module.axon.handle-command]]
command = "com.example.bank.OpenAccount"
topic = "bank.handle.{command|simple|kebab}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enum_command_goes_out_and_comes_back_through_a_module() {
    let server = common::server().await;
    let process =
        common::start::<Bank>(&common::bridge("axon", &server.address().to_string(), BANK)).await;
    let ctx = process.context("test");
    let _handler = ctx
        .handle("bank.handle.open-account", |request| {
            let Bank::OpenAccount(open) = &**request.message() else {
                return std::future::ready(Err(HandlerError::new("not an OpenAccount")));
            };
            std::future::ready(Ok(bank::opened(&open.account_id, open.overdraft, 0)))
        })
        .await
        .unwrap();
    let answer = common::within(10, ctx.request("bank.command.open", bank::open("a-1", 50)))
        .await
        .unwrap();
    assert_eq!(*answer, bank::opened("a-1", 50, 0));
    let handlers = server.command_handlers();
    assert!(
        handlers.contains_key("com.example.bank.OpenAccount"),
        "{handlers:?}"
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_value_command_is_named_by_the_topic_and_typed_by_config() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[[module.axon.send-command]]
pattern = "shop.command.*"
command = "org.shop.{2|pascal}"
payload-type = "org.shop.{2|pascal}Command"

[[module.axon.handle-command]]
command = "org.shop.PlaceOrder"
topic = "shop.handle.place-order"
response-type = "org.shop.OrderPlaced"
"#,
    );
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    let _h = ctx
        .handle("shop.handle.place-order", |request| {
            let headers = request.headers().clone();
            let order = request.message()["order"].clone();
            async move {
                assert_eq!(headers.get("axon-command"), Some("org.shop.PlaceOrder"));
                assert_eq!(
                    headers.get("axon-payload-type"),
                    Some("org.shop.PlaceOrderCommand")
                );
                assert_eq!(
                    headers.get("tenant"),
                    Some("acme"),
                    "metadata arrives as headers"
                );
                Ok::<_, HandlerError>(json!({ "placed": order }))
            }
        })
        .await
        .unwrap();
    let answer = ctx
        .request_with(
            "shop.command.place-order",
            json!({ "order": 7 }),
            RequestOptions::new().headers(Headers::new().with("tenant", "acme")),
        )
        .await
        .unwrap();
    assert_eq!(*answer, json!({ "placed": 7 }));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_handler_sees_the_bare_object_and_its_answer_becomes_the_variant() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[module.axon.payload]
type-prefix = "com.example.bank."

[module.axon.types]
AccountOpened = { type = "com.example.bank.events.AccountOpened", revision = "2" }

[[module.axon.send-command]]
pattern = "bank.command.*"
routing-key = "/accountId"
"#,
    );
    let process = common::start::<Bank>(&toml).await;
    let mut java = RawCommandHandler::start(
        &server.url(),
        "java-1",
        &["com.example.bank.OpenAccount"],
        10,
    )
    .await;
    let ctx = process.context("test");
    let asked = tokio::spawn(async move {
        ctx.request_with(
            "bank.command.open",
            bank::open("a-1", 50),
            RequestOptions::new().headers(Headers::new().with(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )),
        )
        .await
    });
    let command = common::within(10, java.next()).await;
    assert_eq!(command.name, "com.example.bank.OpenAccount");
    let payload = command.payload.clone().unwrap();
    assert_eq!(payload.r#type, "com.example.bank.OpenAccount");
    assert_eq!(
        payload.data, br#"{"accountId":"a-1","overdraft":50}"#,
        "the variant's content, not serde's wrapper"
    );
    let routing = command
        .processing_instructions
        .iter()
        .find(|p| p.key == ProcessingKey::RoutingKey as i32)
        .and_then(|p| p.value.clone());
    assert_eq!(
        routing.and_then(|v| v.data),
        Some(meta_data_value::Data::TextValue("a-1".into()))
    );
    assert_eq!(
        command
            .meta_data
            .get("traceparent")
            .and_then(|v| v.data.clone()),
        Some(meta_data_value::Data::TextValue(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()
        ))
    );
    assert!(!command.client_id.is_empty() && command.component_name == "test");
    java.respond(
        &command,
        CommandResponse {
            payload: Some(raw::json_payload(
                "com.example.bank.events.AccountOpened",
                br#"{"accountId":"a-1","overdraft":50,"sequence":0}"#,
            )),
            ..CommandResponse::default()
        },
    );
    let answer = common::within(10, asked).await.unwrap().unwrap();
    assert_eq!(*answer, bank::opened("a-1", 50, 0));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_sender_reaches_a_module_and_gets_its_answer_as_json() {
    let server = common::server().await;
    let process =
        common::start::<Bank>(&common::bridge("axon", &server.address().to_string(), BANK)).await;
    let ctx = process.context("test");
    let _h = ctx
        .handle("bank.handle.open-account", |request| {
            let headers = request.headers().clone();
            let message = request.message().clone();
            async move {
                assert_eq!(headers.get("axon-message-id"), Some("cmd-1"));
                assert_eq!(
                    headers.get("priority"),
                    Some("3"),
                    "typed metadata arrives as text"
                );
                let Bank::OpenAccount(open) = &*message else {
                    return Err(HandlerError::new("wrong variant"));
                };
                Ok(bank::opened(&open.account_id, open.overdraft, 0))
            }
        })
        .await
        .unwrap();
    let mut meta = std::collections::HashMap::new();
    meta.insert(
        "priority".to_owned(),
        MetaDataValue {
            data: Some(meta_data_value::Data::NumberValue(3)),
        },
    );
    let response = raw::dispatch(
        &server.url(),
        Command {
            message_identifier: "cmd-1".into(),
            name: "com.example.bank.OpenAccount".into(),
            payload: Some(raw::json_payload(
                "com.example.bank.OpenAccount",
                br#"{"accountId":"j-1","overdraft":5}"#,
            )),
            meta_data: meta,
            ..Command::default()
        },
    )
    .await;
    assert_eq!(response.error_code, "", "{response:?}");
    let payload = response.payload.unwrap();
    assert_eq!(payload.r#type, "com.example.bank.AccountOpened");
    assert_eq!(
        payload.data,
        br#"{"accountId":"j-1","overdraft":5,"sequence":0}"#
    );
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_timeouts_and_missing_handlers_arrive_with_their_codes() {
    let server = common::server().await;
    let toml = common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
retry = { attempts = 2, initial = "10ms" }

[[module.axon.send-command]]
pattern = "c.send.*"
command = "{2}"

[[module.axon.handle-command]]
command = "Fails"
topic = "c.handle.fails"

[[module.axon.handle-command]]
command = "Refuses"
topic = "c.handle.refuses"

[[module.axon.handle-command]]
command = "Slow"
topic = "c.handle.slow"

[[module.axon.handle-command]]
command = "Orphan"
topic = "c.handle.orphan"
"#,
    )
    .replace("handler-timeout = \"5s\"", "handler-timeout = \"300ms\"");
    let process = common::start::<Value>(&toml).await;
    let ctx = process.context("test");
    let _a = ctx
        .handle("c.handle.fails", |_| async {
            Err::<Value, _>(HandlerError::new("insufficient funds").with_code("overdraft"))
        })
        .await
        .unwrap();
    let _b = ctx
        .handle("c.handle.refuses", |_| async {
            Err::<Value, _>(HandlerError::new("do not retry").with_code("AXONIQ-4005"))
        })
        .await
        .unwrap();
    let _c = ctx
        .handle("c.handle.slow", |_| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok::<_, HandlerError>(json!("late"))
        })
        .await
        .unwrap();
    let code = |r: Result<Arc<Value>, telamon_sdk::RequestError>| {
        let e = r.expect_err("an error");
        let h = e.handler_error().expect("a handler error").clone();
        (
            h.code().unwrap_or_default().to_owned(),
            h.message().to_owned(),
        )
    };
    let (c, m) = code(ctx.request("c.send.Fails", json!({})).await);
    // The module's own code travels in the error's details.
    assert_eq!(
        (c.as_str(), m.as_str()),
        ("AXONIQ-4002", "insufficient funds (overdraft)")
    );
    let (c, m) = code(ctx.request("c.send.Refuses", json!({})).await);
    assert_eq!(
        (c.as_str(), m.as_str()),
        ("AXONIQ-4005", "do not retry (AXONIQ-4005)"),
        "an Axon code from the module is kept"
    );
    let (c, m) = code(ctx.request("c.send.Slow", json!({})).await);
    assert_eq!(c, "AXONIQ-4002");
    assert!(m.contains("timed out"), "{m}");
    let (c, m) = code(ctx.request("c.send.Orphan", json!({})).await);
    assert_eq!(c, "AXONIQ-4000", "nobody on the bus takes it");
    assert!(m.contains("no responder"), "{m}");
    let (c, m) = code(ctx.request("c.send.Nobody", json!({})).await);
    assert_eq!(c, "AXONIQ-4000");
    assert!(m.contains("Nobody"), "{m}");
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mib_command_is_refused_locally_and_the_stream_lives_on() {
    let server = common::server().await;
    let process = common::start::<Value>(&common::bridge(
        "axon",
        &server.address().to_string(),
        r#"
[[module.axon.send-command]]
pattern = "big.*"
command = "Echo"

[[module.axon.handle-command]]
command = "Echo"
topic = "echo"
"#,
    ))
    .await;
    let ctx = process.context("test");
    let _h = ctx
        .handle("echo", |r| {
            let m = r.message().clone();
            async move { Ok::<_, HandlerError>(m) }
        })
        .await
        .unwrap();
    let big = json!({ "blob": "x".repeat(5 * 1024 * 1024) });
    let e = ctx.request("big.one", big).await.unwrap_err();
    let h = e.handler_error().unwrap();
    assert_eq!(h.code(), Some("too-large"), "{h}");
    assert!(h.message().contains("max-message-size"), "{h}");
    assert_eq!(server.pending_commands(), 0);
    // The handler stream was not killed: a normal command still works.
    let ok = ctx.request("big.small", json!({"n": 1})).await.unwrap();
    assert_eq!(*ok, json!({"n": 1}));
    process.stop().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_bytes_from_the_server_get_a_clear_error_and_nothing_breaks() {
    let server = common::server().await;
    let process =
        common::start::<Bank>(&common::bridge("axon", &server.address().to_string(), BANK)).await;
    let ctx = process.context("test");
    let _h = ctx
        .handle("bank.handle.open-account", |r| {
            let m = r.message().clone();
            async move { Ok::<_, HandlerError>(m) }
        })
        .await
        .unwrap();
    let bad = |data: Vec<u8>, type_name: &str, id: &str| Command {
        message_identifier: id.to_owned(),
        name: "com.example.bank.OpenAccount".into(),
        payload: Some(raw::json_payload(type_name, &data)),
        ..Command::default()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"accountId\": ".to_vec(), "com.example.bank.OpenAccount"),
        (
            "[".repeat(100_000).into_bytes(),
            "com.example.bank.OpenAccount",
        ),
        (vec![0xff, 0x00, 0xc3], "com.example.bank.OpenAccount"),
        (
            br#"{"accountId":"a"}"#.to_vec(),
            "com.example.bank.OpenAccount",
        ),
        (
            br#"{"accountId":"a","overdraft":1}"#.to_vec(),
            "com.example.Unknown",
        ),
        (
            br#"{"a":1},"Other":{"#.to_vec(),
            "com.example.bank.OpenAccount",
        ),
    ];
    for (i, (data, type_name)) in cases.into_iter().enumerate() {
        let r = raw::dispatch(&server.url(), bad(data, type_name, &format!("bad-{i}"))).await;
        assert_eq!(r.error_code, "AXONIQ-4002", "case {i}: {r:?}");
        let msg = r.error_message.unwrap();
        assert!(msg.message.contains("payload"), "case {i}: {}", msg.message);
    }
    let good = raw::dispatch(
        &server.url(),
        bad(
            br#"{"accountId":"ok","overdraft":1}"#.to_vec(),
            "com.example.bank.OpenAccount",
            "good",
        ),
    )
    .await;
    assert_eq!(good.error_code, "", "{good:?}");
    process.stop().await;
    server.stop().await.unwrap();
}
