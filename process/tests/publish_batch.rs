//! `Context::publish_batch` on the in-process bus, through the public API:
//! a batch must look to every subscriber exactly like one publish per message.

mod common;

use std::sync::Arc;

use common::{ONE_BUS, start, within};
use serde_json::{Value, json};
use telamon_sdk::{FullPolicy, Headers, PublishError, SubscribeOptions, TraceContext};

fn batch(range: std::ops::Range<u64>) -> Vec<(Arc<Value>, Headers)> {
    range
        .map(|n| (Arc::new(json!(n)), Headers::new().with("n", n.to_string())))
        .collect()
}

#[tokio::test]
async fn a_batch_reaches_every_matching_subscription_in_order_with_its_headers() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut subs = Vec::new();
    for p in ["orders.created", "orders.*", "#"] {
        subs.push(ctx.subscribe(p).await.unwrap());
    }
    let mut other = ctx.subscribe("invoices.#").await.unwrap();
    // Single publishes before and after: the batch keeps its place between them.
    ctx.publish("orders.created", json!(-1)).await.unwrap();
    ctx.publish_batch("orders.created", batch(0..300))
        .await
        .unwrap();
    ctx.publish("orders.created", json!(300)).await.unwrap();
    for sub in &mut subs {
        let d = within(sub.recv()).await.unwrap();
        assert_eq!(**d.message(), json!(-1));
        for n in 0..300u64 {
            let d = within(sub.recv()).await.unwrap();
            assert_eq!(**d.message(), json!(n), "pattern {}", sub.pattern());
            assert_eq!(d.headers().get("n"), Some(n.to_string().as_str()));
            assert_eq!(d.topic().as_str(), "orders.created");
        }
        let d = within(sub.recv()).await.unwrap();
        assert_eq!(**d.message(), json!(300));
    }
    assert!(other.try_recv().is_none());
    // An empty batch is nothing to do.
    ctx.publish_batch("orders.created", Vec::new())
        .await
        .unwrap();
    assert!(subs[0].try_recv().is_none());
    process.stop().await;
}

#[tokio::test]
async fn a_batch_inside_a_trace_carries_it_with_a_hop_of_its_own_per_message() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut sub = ctx.subscribe("t").await.unwrap();
    let root = TraceContext::new_root();
    root.scope(ctx.publish_batch("t", batch(0..3)))
        .await
        .unwrap();
    let mut spans = std::collections::HashSet::new();
    for _ in 0..3 {
        let d = within(sub.recv()).await.unwrap();
        let hop = TraceContext::from_headers(d.headers()).expect("a traceparent");
        assert_eq!(hop.trace_id(), root.trace_id());
        spans.insert(hop.span_id());
    }
    assert_eq!(spans.len(), 3);
    // Outside a trace nothing is added.
    ctx.publish_batch("t", batch(0..1)).await.unwrap();
    let d = within(sub.recv()).await.unwrap();
    assert!(TraceContext::from_headers(d.headers()).is_none());
    process.stop().await;
}

#[tokio::test]
async fn a_full_wait_queue_takes_what_fits_and_the_rest_follows_in_order() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut slow = ctx
        .subscribe_with(
            "t",
            SubscribeOptions::new().capacity(4).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    let mut fast = ctx
        .subscribe_with("t", SubscribeOptions::new().capacity(1000))
        .await
        .unwrap();
    let publisher = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.publish_batch("t", batch(0..100)).await })
    };
    // The other queue was offered the whole batch before the publisher
    // waited for the slow one.
    for n in 0..100u64 {
        assert_eq!(**within(fast.recv()).await.unwrap().message(), json!(n));
    }
    assert!(!publisher.is_finished());
    for n in 0..100u64 {
        assert_eq!(**within(slow.recv()).await.unwrap().message(), json!(n));
    }
    within(publisher).await.unwrap().unwrap();
    process.stop().await;
}

#[tokio::test]
async fn drop_oldest_under_a_batch_keeps_its_capacity_and_counts_the_rest() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut lossy = ctx
        .subscribe_with(
            "t",
            SubscribeOptions::new()
                .capacity(8)
                .policy(FullPolicy::DropOldest),
        )
        .await
        .unwrap();
    within(ctx.publish_batch("t", batch(0..50))).await.unwrap();
    assert_eq!(lossy.lagged(), 42);
    for n in 42..50u64 {
        assert_eq!(**within(lossy.recv()).await.unwrap().message(), json!(n));
    }
    assert!(lossy.try_recv().is_none());
    process.stop().await;
}

#[tokio::test]
async fn a_batch_with_no_route_or_on_a_closed_bus_comes_back_whole() {
    let toml = "[message-bus.internal]\nclass = \"in-memory\"\n\n[[message-router.route]]\npattern = \"known.#\"\nbus = \"internal\"\n";
    let process = start(toml).await;
    let ctx = process.context("test");
    let err = ctx
        .publish_batch("unknown.topic", batch(0..5))
        .await
        .unwrap_err();
    assert!(
        matches!(err.error(), PublishError::NoRoute { topic } if topic == "unknown.topic"),
        "{err}"
    );
    assert_eq!(err.published(), 0);
    assert_eq!(process.metrics().unrouted_total(), 5);
    let back = err.into_unpublished();
    assert_eq!(back.len(), 5);
    assert_eq!(*back[4].0, json!(4));
    assert_eq!(back[4].1.get("n"), Some("4"));
    // An invalid topic is refused with the batch given back too.
    let err = ctx
        .publish_batch("bad..topic", batch(0..2))
        .await
        .unwrap_err();
    assert!(
        matches!(err.error(), PublishError::InvalidTopic(_)),
        "{err}"
    );
    assert_eq!(err.into_unpublished().len(), 2);
    process.stop().await;
    let err = ctx.publish_batch("known.x", batch(0..3)).await.unwrap_err();
    assert!(err.is_closed(), "{err}");
    assert_eq!((err.published(), err.into_unpublished().len()), (0, 3));
}
