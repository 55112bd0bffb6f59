//! Request/response over the real RabbitMQ broker.

mod common;

use std::time::{Duration, Instant};

use common::rabbit::{bindings, queues, rabbit_toml, require_broker, unique};
use common::{start, within};
use serde_json::{Value, json};
use telamon_sdk::{HandlerError, Headers, Request, RequestError, TRACEPARENT, TraceContext};

#[tokio::test]
async fn requests_cross_processes_with_answers_and_handler_errors() {
    require_broker();
    let exchange = unique("req");
    let toml = rabbit_toml(&exchange, "at-least-once", "");
    let server = start(&toml).await;
    let client = start(&toml).await;
    server
        .context("calc")
        .handle("calc.sqrt", |request: Request<Value>| async move {
            let m = request.into_message();
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

/// A request made inside a trace continues it in a handler in another
/// process; headers published in one process reach a subscriber in the other.
#[tokio::test]
async fn trace_context_and_headers_cross_processes() {
    require_broker();
    let exchange = unique("trace");
    let toml = rabbit_toml(&exchange, "at-least-once", "");
    let server = start(&toml).await;
    let client = start(&toml).await;
    let _ = server
        .context("svc")
        .handle("svc.who", |r: Request<Value>| async move {
            let header = r.headers().get(TRACEPARENT).map(str::to_owned);
            let current = TraceContext::current().map(|t| t.trace_id());
            Ok::<_, HandlerError>(json!({"header": header, "current": current}))
        })
        .await
        .unwrap();
    let mut sub = server.context("svc").subscribe("news.#").await.unwrap();
    let ctx = client.context("t");
    let root = TraceContext::new_root();
    let answer = root
        .scope(ctx.request("svc.who", json!(null)))
        .await
        .unwrap();
    let header = TraceContext::parse(answer["header"].as_str().unwrap()).unwrap();
    assert_eq!(header.trace_id(), root.trace_id());
    assert_eq!(
        answer["current"],
        json!(root.trace_id()),
        "the handler runs in the trace"
    );
    root.scope(ctx.publish_with("news.x", json!(1), Headers::new().with("tenant", "acme")))
        .await
        .unwrap();
    let d = within(sub.recv()).await.unwrap();
    assert_eq!(d.headers().get("tenant"), Some("acme"));
    let carried = TraceContext::from_headers(d.headers()).unwrap();
    assert_eq!(carried.trace_id(), root.trace_id());
    client.stop().await;
    server.stop().await;
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
    ctx.handle("echo", |request: Request<Value>| async move {
        let m = request.into_message();
        Ok::<_, HandlerError>(m)
    })
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
    ctx.handle("slow", move |request: Request<Value>| {
        let m = request.into_message();
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
