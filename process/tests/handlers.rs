//! What a handler sees (topic, headers), removing a handler, concurrency
//! under a blocking call, and headers on the in-process bus.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ONE_BUS, start, within};
use serde_json::{Value, json};
use telamon_sdk::{
    HandleOptions, HandlerError, Headers, Request, RequestOptions, TRACEPARENT, TraceContext,
};

/// Answers with the topic it was asked on and the `tenant` header.
fn echo_topic(request: Request<Value>) -> impl Future<Output = Result<Value, HandlerError>> {
    let topic = request.topic().to_string();
    let tenant = request.headers().get("tenant").map(str::to_owned);
    async move { Ok(json!({"topic": topic, "tenant": tenant})) }
}

#[tokio::test]
async fn a_pattern_handler_sees_the_topic_and_headers_of_each_request() {
    let p = start(ONE_BUS).await;
    let ctx = p.context("t");
    let _ = ctx.handle("orders.*", echo_topic).await.unwrap();
    let plain = ctx.request("orders.created", json!(null)).await.unwrap();
    assert_eq!(*plain, json!({"topic": "orders.created", "tenant": null}));
    let options = RequestOptions::new().headers(Headers::new().with("tenant", "acme"));
    let with = ctx
        .request_with("orders.paid", json!(null), options)
        .await
        .unwrap();
    assert_eq!(*with, json!({"topic": "orders.paid", "tenant": "acme"}));
    p.stop().await;
}

#[tokio::test]
async fn removing_a_handler_takes_it_off_the_bus_and_dropping_the_handle_does_not() {
    let p = start(ONE_BUS).await;
    let ctx = p.context("t");
    let kept = ctx.handle("kept", echo_topic).await.unwrap();
    drop(kept);
    let removed = ctx.handle("removed", echo_topic).await.unwrap();
    assert!(ctx.request("removed", json!(1)).await.is_ok());
    removed.remove().await;
    let err = ctx.request("removed", json!(1)).await.unwrap_err();
    assert!(err.is_no_responder(), "{err}");
    assert!(
        ctx.request("kept", json!(1)).await.is_ok(),
        "a dropped handle leaves its handler registered"
    );
    p.stop().await;
}

/// The first call blocks its thread until the second call runs. With every
/// call on one task this never ends (and the test fails at its 10 s limit);
/// with a task per call the second runs on another thread and releases it.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_calls_progress_while_one_blocks_its_thread() {
    let p = start(ONE_BUS).await;
    let ctx = p.context("t");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(std::sync::Mutex::new(released));
    let started = Arc::new(tokio::sync::Notify::new());
    let blocking = started.clone();
    let _ = ctx
        .handle_with(
            "work.*",
            HandleOptions::new().concurrency(2),
            move |request: Request<Value>| {
                let (release, released) = (release.clone(), released.clone());
                let started = blocking.clone();
                async move {
                    if request.topic().as_str() == "work.block" {
                        started.notify_one();
                        // Blocks this thread, as CPU-bound or blocking code would.
                        let waited = released
                            .lock()
                            .unwrap()
                            .recv_timeout(Duration::from_secs(20));
                        return Ok::<_, HandlerError>(json!(waited.is_ok()));
                    }
                    release.send(()).unwrap();
                    Ok(json!("released"))
                }
            },
        )
        .await
        .unwrap();
    let blocked = tokio::spawn({
        let ctx = ctx.clone();
        async move { ctx.request("work.block", json!(null)).await }
    });
    // Only once the first call blocks its thread is the second one asked.
    within(started.notified()).await;
    let other = within(ctx.request("work.release", json!(null)))
        .await
        .unwrap();
    assert_eq!(*other, json!("released"));
    let first = within(blocked).await.unwrap().unwrap();
    assert_eq!(
        *first,
        json!(true),
        "the blocked call was released by the second"
    );
    p.stop().await;
}

#[tokio::test]
async fn headers_travel_with_published_messages() {
    let p = start(ONE_BUS).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("data.#").await.unwrap();
    ctx.publish("data.plain", json!(1)).await.unwrap();
    ctx.publish_with("data.tagged", json!(2), Headers::new().with("k", "v"))
        .await
        .unwrap();
    let plain = within(sub.recv()).await.unwrap();
    assert!(plain.headers().is_empty());
    let tagged = within(sub.recv()).await.unwrap();
    assert_eq!(tagged.headers().get("k"), Some("v"));
    p.stop().await;
}

#[tokio::test]
async fn a_request_inside_a_trace_carries_it_to_the_handler_and_on() {
    let p = start(ONE_BUS).await;
    let ctx = p.context("t");
    // The outer handler asks the inner one: the trace goes on through both.
    let inner = |_r: Request<Value>| async move {
        let seen = TraceContext::current().map(|t| t.trace_id());
        Ok::<_, HandlerError>(json!(seen))
    };
    let _ = ctx.handle("trace.inner", inner).await.unwrap();
    let outer_ctx = ctx.clone();
    let _ = ctx
        .handle("trace.outer", move |r: Request<Value>| {
            let ctx = outer_ctx.clone();
            let header = r.headers().get(TRACEPARENT).map(str::to_owned);
            async move {
                let inner = ctx.request("trace.inner", json!(null)).await?;
                Ok::<_, HandlerError>(json!({"header": header, "inner": *inner}))
            }
        })
        .await
        .unwrap();
    let untraced = ctx.request("trace.inner", json!(null)).await.unwrap();
    assert_eq!(*untraced, Value::Null, "no trace, no traceparent");
    let root = TraceContext::new_root();
    let answer = root
        .scope(ctx.request("trace.outer", json!(null)))
        .await
        .unwrap();
    let header = answer["header"]
        .as_str()
        .expect("the request carried a traceparent");
    assert_eq!(
        TraceContext::parse(header).unwrap().trace_id(),
        root.trace_id()
    );
    assert_eq!(answer["inner"], json!(root.trace_id()));
    p.stop().await;
}
