//! 100 000 requests: nothing grows per request (no subscription, queue or memory per request).

mod common;

use common::{ONE_BUS, rss_bytes, start};
use serde_json::{Value, json};
use telamon_sdk::{HandlerError, Request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_requests_leave_subscriptions_and_memory_flat() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    ctx.handle("echo", |request: Request<Value>| async move {
        let m = request.into_message();
        Ok::<_, HandlerError>(m)
    })
    .await
    .unwrap();
    // Warm up allocator and runtime, then take the baseline.
    for n in 0..10_000 {
        ctx.request("echo", json!(n)).await.unwrap();
    }
    let stats_before = process.bus_stats();
    let rss_before = rss_bytes();
    for n in 0..100_000 {
        let answer = ctx.request("echo", json!(n)).await.unwrap();
        assert_eq!(*answer, json!(n));
    }
    assert_eq!(
        process.bus_stats(),
        stats_before,
        "subscriptions and handlers unchanged"
    );
    let grown = rss_bytes().saturating_sub(rss_before);
    // Caryatid keeps one subscription per request; anything per request here
    // would be megabytes after 100 000 requests.
    assert!(
        grown < 4 * 1024 * 1024,
        "RSS grew by {grown} bytes over 100 000 requests"
    );
    process.stop().await;
}
