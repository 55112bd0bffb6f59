//! Hostile bodies from a plain AMQP client, on a subscribed topic and on a
//! request topic, against a process whose message type is `serde_json::Value`
//! (the type that builds whatever nesting it is given). Each must be rejected
//! and counted, and a valid message and request after them must still arrive.
//! Before depth limits, the first of these aborted the process with a stack
//! overflow, which no test harness can catch.

mod common;

use common::rabbit::{amqp_url, rabbit_toml, require_broker, unique};
use common::{start, within};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use telamon_sdk::HandlerError;
use telamon_sdk::Request;

/// Small enough that the oversized shape stays cheap to send.
const MAX_SIZE: usize = 64 * 1024;

/// Each hostile shape: a name, the body, its content type.
fn shapes() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    let nested = |open: &[u8], n: usize, close: &[u8]| {
        let mut v = open.repeat(n);
        v.push(0x00);
        v.extend(close.repeat(n));
        v
    };
    let valid = telamon_process::codec::encode_cbor(&json!({"a": [1, 2, 3], "b": "text"})).unwrap();
    vec![
        ("deep arrays", nested(&[0x81], 10_000, &[]), None),
        ("deep maps", nested(&[0xa1, 0x00], 10_000, &[]), None),
        ("deep tags", nested(&[0xc6], 10_000, &[]), None),
        (
            "deep indefinite arrays",
            nested(&[0x9f], 10_000, &[0xff]),
            None,
        ),
        (
            "deep indefinite maps",
            nested(&[0xbf, 0x00], 10_000, &[0xff]),
            None,
        ),
        (
            "deep mixed",
            nested(&[0x81, 0xa1, 0x00, 0xc6], 3_000, &[]),
            None,
        ),
        ("truncated", valid[..valid.len() / 2].to_vec(), None),
        (
            "2^64 items",
            vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            None,
        ),
        ("64 GiB string", vec![0x5b, 0, 0, 0, 0x10, 0, 0, 0, 0], None),
        (
            "2^63 map pairs",
            vec![0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0],
            None,
        ),
        (
            "over max-message-size",
            telamon_process::codec::encode_cbor(&serde_bytes_like(MAX_SIZE + 1)).unwrap(),
            None,
        ),
        (
            "wrong content type",
            valid.clone(),
            Some("application/json"),
        ),
        ("empty body", Vec::new(), None),
        ("not CBOR", b"\xff\xfe garbage".to_vec(), None),
    ]
}

/// A JSON string of `n` characters (CBOR: a text string a few bytes longer).
fn serde_bytes_like(n: usize) -> Value {
    Value::String("x".repeat(n))
}

#[tokio::test]
async fn hostile_bodies_are_rejected_counted_and_valid_traffic_goes_on() {
    require_broker();
    let exchange = unique("hostile");
    let extra = format!("max-message-size = {MAX_SIZE}\nmax-nesting-depth = 128\n");
    let p = start(&rabbit_toml(&exchange, "at-least-once", &extra)).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("data.#").await.unwrap();
    ctx.handle("svc.echo", |request: Request<Value>| async move {
        let m = request.into_message();
        Ok::<_, HandlerError>((*m).clone())
    })
    .await
    .unwrap();

    let raw = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = raw.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let replies = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut reply_consumer = ch
        .basic_consume(
            replies.name().as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let shapes = shapes();
    let requests = format!("{exchange}.requests");
    for (i, (name, body, content_type)) in shapes.iter().enumerate() {
        let mut props = BasicProperties::default();
        if let Some(kind) = content_type {
            props = props.with_content_type((*kind).into());
        }
        for (target, key, props) in [
            (exchange.as_str(), "data.x", props.clone()),
            (
                requests.as_str(),
                "svc.echo",
                props
                    .with_reply_to(replies.name().as_str().into())
                    .with_correlation_id(format!("hostile-{i}").into()),
            ),
        ] {
            let confirm = ch
                .basic_publish(target.into(), key.into(), Default::default(), body, props)
                .await
                .unwrap_or_else(|e| panic!("{name}: publish: {e}"));
            confirm.await.unwrap();
        }
    }

    // Every hostile request is answered with an error, not left to time out.
    for _ in 0..shapes.len() {
        let reply = within(reply_consumer.next()).await.unwrap().unwrap();
        let decoded: Value =
            telamon_process::codec::decode_cbor(&reply.data, &Default::default()).unwrap();
        let error = decoded
            .get("Err")
            .unwrap_or_else(|| panic!("not an error reply: {decoded}"));
        assert_eq!(error["code"], json!("malformed"), "{decoded}");
    }

    // The process is alive, and valid traffic after the hostile bodies arrives.
    ctx.publish("data.x", json!("valid")).await.unwrap();
    let d = within(sub.recv()).await.unwrap();
    assert_eq!(
        **d.message(),
        json!("valid"),
        "no hostile body was delivered"
    );
    let answer = within(ctx.request("svc.echo", json!({"still": "alive"})))
        .await
        .unwrap();
    assert_eq!(*answer, json!({"still": "alive"}));
    // A request exactly at the depth limit is served, and its echo — one level
    // deeper inside the reply envelope — comes back.
    let mut at_limit = json!(0);
    for _ in 0..128 {
        at_limit = json!([at_limit]);
    }
    let echoed = within(ctx.request("svc.echo", at_limit.clone()))
        .await
        .unwrap();
    assert_eq!(*echoed, at_limit);

    // One count per hostile body on each path. The raw publishes were
    // confirmed before the valid ones were sent, so they were ahead of them
    // in both queues and have been counted by now.
    assert_eq!(p.bus_stats()[0].1.malformed, 2 * shapes.len() as u64);
    p.stop().await;
}
