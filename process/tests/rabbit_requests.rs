//! Request/response over the real RabbitMQ broker.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::rabbit::{bindings, queues, rabbit_toml, require_broker, unique};
use common::{start, within};
use serde_json::{Value, json};
use telamon_sdk::{HandlerError, RequestError};

#[tokio::test]
async fn requests_cross_processes_with_answers_and_handler_errors() {
    require_broker();
    let exchange = unique("req");
    let toml = rabbit_toml(&exchange, "at-least-once", "");
    let server = start(&toml).await;
    let client = start(&toml).await;
    server
        .context("calc")
        .handle("calc.sqrt", |m: Arc<Value>| async move {
            let x = m
                .as_f64()
                .ok_or_else(|| HandlerError::new("not a number"))?;
            if x < 0.0 {
                return Err(HandlerError::new("negative").with_code("domain"));
            }
            Ok(json!(x.sqrt()))
        })
        .await
        .unwrap();
    let ctx = client.context("t");
    assert_eq!(
        *ctx.request("calc.sqrt", json!(2.25)).await.unwrap(),
        json!(1.5)
    );
    let err = ctx.request("calc.sqrt", json!(-1.0)).await.unwrap_err();
    assert_eq!(err.handler_error().unwrap().code(), Some("domain"));
    client.stop().await;
    server.stop().await;
    assert_eq!(
        queues(&exchange),
        vec![],
        "handler and reply queues are gone"
    );
}

#[tokio::test]
async fn a_request_no_handler_can_take_fails_fast_with_no_responder() {
    require_broker();
    let exchange = unique("noresp");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "")).await;
    let ctx = p.context("t");
    let started = Instant::now();
    let err = ctx
        .request_with_timeout("nobody.here", json!(1), Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::NoResponder { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    p.stop().await;
}

#[tokio::test]
async fn a_thousand_requests_declare_nothing_per_request() {
    require_broker();
    let exchange = unique("flat");
    let toml = rabbit_toml(&exchange, "at-most-once", "");
    let p = start(&toml).await;
    let ctx = p.context("t");
    ctx.handle(
        "echo",
        |m: Arc<Value>| async move { Ok::<_, HandlerError>(m) },
    )
    .await
    .unwrap();
    ctx.request("echo", json!(0)).await.unwrap();
    let before = (queues(&exchange).len(), bindings(&exchange));
    assert_eq!(
        before,
        (2, 1),
        "one handler queue bound once, one reply queue"
    );
    within(async {
        for n in 0..1000 {
            assert_eq!(*ctx.request("echo", json!(n)).await.unwrap(), json!(n));
        }
    })
    .await;
    assert_eq!(
        (queues(&exchange).len(), bindings(&exchange)),
        before,
        "no queue or binding per request"
    );
    p.stop().await;
}

#[tokio::test]
async fn a_slow_handler_times_out_and_the_late_answer_is_dropped() {
    require_broker();
    let exchange = unique("slow");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "")).await;
    let ctx = p.context("t");
    let (release, released) = tokio::sync::watch::channel(false);
    ctx.handle("slow", move |m: Arc<Value>| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Ok::<_, HandlerError>(m)
        }
    })
    .await
    .unwrap();
    let err = ctx
        .request_with_timeout("slow", json!(1), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    release.send(true).unwrap();
    // The next request gets its own answer, not the late one.
    assert_eq!(*ctx.request("slow", json!(2)).await.unwrap(), json!(2));
    p.stop().await;
}
