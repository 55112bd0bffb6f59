//! Request/response through the router and the in-process bus.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ONE_BUS, start, within};
use serde_json::{Value, json};
use telamon_sdk::{HandleOptions, HandlerError, Request, RequestError};
use tokio::sync::Barrier;

const SLOW_BUS: &str = "[message-bus.internal]\nclass = \"in-memory\"\n\n[message-router]\nrequest-timeout = \"300ms\"\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"internal\"\n";

#[tokio::test]
async fn a_handler_answers_and_its_errors_reach_the_requester() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    ctx.handle("math.halve", |request: Request<Value>| async move {
        let m = request.into_message();
        let n = m
            .as_i64()
            .ok_or_else(|| HandlerError::new("not a number"))?;
        if n % 2 != 0 {
            return Err(HandlerError::new(format!("{n} is odd")).with_code("odd"));
        }
        Ok(json!(n / 2))
    })
    .await
    .unwrap();
    assert_eq!(
        *ctx.request("math.halve", json!(10)).await.unwrap(),
        json!(5)
    );
    let err = ctx.request("math.halve", json!(3)).await.unwrap_err();
    let handler_error = err.handler_error().expect("a handler error");
    assert_eq!(handler_error.code(), Some("odd"));
    assert_eq!(handler_error.message(), "3 is odd");
    let err = ctx.request("math.halve", json!("x")).await.unwrap_err();
    assert_eq!(err.handler_error().unwrap().message(), "not a number");
    process.stop().await;
}

#[tokio::test]
async fn the_default_timeout_comes_from_config_and_a_call_can_override_it() {
    let process = start(SLOW_BUS).await;
    let ctx = process.context("test");
    ctx.handle("never", |_| {
        std::future::pending::<Result<Value, HandlerError>>()
    })
    .await
    .unwrap();
    let err = ctx.request("never", json!(1)).await.unwrap_err();
    assert!(
        matches!(err, RequestError::TimedOut { after, .. } if after == Duration::from_millis(300)),
        "{err}"
    );
    let err = ctx
        .request_with_timeout("never", json!(1), Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RequestError::TimedOut { after, .. } if after == Duration::from_millis(20)),
        "{err}"
    );
    process.stop().await;
}

#[tokio::test]
async fn a_request_nobody_handles_fails_at_once_not_after_the_timeout() {
    let toml = "[message-bus.internal]\nclass = \"in-memory\"\n\n[message-router]\nrequest-timeout = \"60s\"\n\n[[message-router.route]]\npattern = \"known.#\"\nbus = \"internal\"\n";
    let process = start(toml).await;
    let ctx = process.context("test");
    let started = Instant::now();
    let err = ctx.request("known.nobody", json!(1)).await.unwrap_err();
    assert!(matches!(err, RequestError::NoResponder { .. }), "{err}");
    let err = ctx.request("elsewhere", json!(1)).await.unwrap_err();
    assert!(matches!(err, RequestError::NoRoute { .. }), "{err}");
    assert!(err.is_no_responder());
    // Both answers came without waiting for the 60 s timeout.
    assert!(started.elapsed() < Duration::from_secs(30));
    process.stop().await;
}

#[tokio::test]
async fn a_dropped_handler_means_no_responder() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let queue = ctx
        .request_queue("gone", HandleOptions::new())
        .await
        .unwrap();
    drop(queue);
    let err = within(ctx.request("gone", json!(1))).await.unwrap_err();
    assert!(matches!(err, RequestError::NoResponder { .. }), "{err}");
    process.stop().await;
}

#[tokio::test]
async fn handlers_run_concurrently() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    // Three requests can only pass the barrier together.
    let barrier = Arc::new(Barrier::new(3));
    ctx.handle_with(
        "meet",
        HandleOptions::new().concurrency(3),
        move |request: Request<Value>| {
            let m = request.into_message();
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                Ok::<_, HandlerError>(m)
            }
        },
    )
    .await
    .unwrap();
    let (a, b, c) = within(async {
        tokio::join!(
            ctx.request("meet", json!(1)),
            ctx.request("meet", json!(2)),
            ctx.request("meet", json!(3))
        )
    })
    .await;
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (Arc::new(json!(1)), Arc::new(json!(2)), Arc::new(json!(3)))
    );
    process.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_with_an_error_and_keeps_serving() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    ctx.handle("fragile", |request: Request<Value>| async move {
        let m = request.into_message();
        if *m == json!("boom") {
            panic!("asked to explode");
        }
        Ok::<_, HandlerError>(m)
    })
    .await
    .unwrap();
    let err = ctx.request("fragile", json!("boom")).await.unwrap_err();
    let e = err.handler_error().unwrap();
    assert_eq!(e.code(), Some("panic"));
    assert!(e.message().contains("asked to explode"));
    assert_eq!(
        *ctx.request("fragile", json!("ok")).await.unwrap(),
        json!("ok")
    );
    assert_eq!(process.panics(), 1);
    process.stop().await;
}

#[tokio::test]
async fn a_handler_that_panics_before_its_future_exists_also_answers_with_an_error() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    ctx.handle("eager", |request: Request<Value>| {
        let m = request.into_message();
        if *m == json!("boom") {
            panic!("panicked while building the future");
        }
        async move { Ok::<_, HandlerError>(m) }
    })
    .await
    .unwrap();
    let err = within(ctx.request("eager", json!("boom")))
        .await
        .unwrap_err();
    assert_eq!(err.handler_error().unwrap().code(), Some("panic"), "{err}");
    assert_eq!(
        *ctx.request("eager", json!("fine")).await.unwrap(),
        json!("fine")
    );
    assert_eq!(process.panics(), 1);
    process.stop().await;
}

#[tokio::test]
async fn stop_lets_a_request_in_flight_finish() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let entered_tx = std::sync::Mutex::new(Some(entered_tx));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    ctx.handle("work", move |request: Request<Value>| {
        let m = request.into_message();
        if let Some(tx) = entered_tx.lock().unwrap().take() {
            let _ = tx.send(());
        }
        let mut release = release_rx.clone();
        async move {
            let _ = release.wait_for(|r| *r).await;
            Ok::<_, HandlerError>(m)
        }
    })
    .await
    .unwrap();
    let requester = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.request("work", json!("job")).await })
    };
    within(entered_rx).await.unwrap();
    let stopping = tokio::spawn(process.stop());
    // Only release the handler once the stop has begun.
    within(ctx.stopping()).await;
    release_tx.send(true).unwrap();
    let report = within(stopping).await.unwrap();
    assert!(report.drained);
    assert_eq!(*within(requester).await.unwrap().unwrap(), json!("job"));
}
