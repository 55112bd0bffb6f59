//! Publish/subscribe on the in-process bus, through the public API.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{ONE_BUS, start, within};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Value, json};
use telamon_process::{ConfigLoader, Process};
use telamon_sdk::{FullPolicy, PublishError, SubscribeError, SubscribeOptions, Topic};

static SERIALISED: AtomicUsize = AtomicUsize::new(0);

/// A message that is not `Clone` and counts every serialisation.
#[derive(Debug, Deserialize)]
struct Counted(u64);

impl Serialize for Counted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SERIALISED.fetch_add(1, Ordering::SeqCst);
        s.serialize_u64(self.0)
    }
}

#[tokio::test]
async fn in_process_delivery_shares_one_arc_and_never_serialises() {
    let config = ConfigLoader::new()
        .embedded(ONE_BUS)
        .env_prefix(None)
        .load()
        .unwrap();
    let process = Process::<Counted>::new(config).start().await.unwrap();
    let ctx = process.context("test");
    let mut a = ctx.subscribe("x.*").await.unwrap();
    let mut b = ctx.subscribe("#").await.unwrap();
    let message = Arc::new(Counted(7));
    ctx.publish("x.y", message.clone()).await.unwrap();
    let da = within(a.recv()).await.unwrap();
    let db = within(b.recv()).await.unwrap();
    assert!(Arc::ptr_eq(da.message(), &message));
    assert!(Arc::ptr_eq(db.message(), &message));
    assert_eq!(da.topic().as_str(), "x.y");
    assert_eq!(SERIALISED.load(Ordering::SeqCst), 0);
    process.stop().await;
}

#[tokio::test]
async fn every_matching_subscription_gets_every_message_in_order() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut subs = Vec::new();
    for p in ["orders.eu.created", "orders.*.created", "orders.#", "#"] {
        subs.push(ctx.subscribe(p).await.unwrap());
    }
    let mut other = ctx.subscribe("invoices.#").await.unwrap();
    let topic = Topic::new("orders.eu.created").unwrap();
    for n in 0..500 {
        ctx.publish(&topic, json!(n)).await.unwrap();
    }
    for sub in &mut subs {
        for n in 0..500 {
            let d = within(sub.recv()).await.unwrap();
            assert_eq!(**d.message(), json!(n), "pattern {}", sub.pattern());
        }
    }
    // Publishing has finished, so anything for `other` would be queued by now.
    assert!(other.try_recv().is_none());
    process.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_under_wait_delays_the_publisher_but_not_the_others() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut slow = ctx
        .subscribe_with(
            "t",
            SubscribeOptions::new().capacity(4).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    let mut fast = ctx.subscribe("t").await.unwrap();
    let publisher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for n in 0..10 {
                ctx.publish("t", json!(n)).await.unwrap();
            }
        })
    };
    // The fast subscriber gets messages 0..=4 although the slow one took none:
    // message 4 was offered to it before the publisher waited for the slow queue.
    for n in 0..5 {
        assert_eq!(**within(fast.recv()).await.unwrap().message(), json!(n));
    }
    assert!(
        !publisher.is_finished(),
        "publisher should be waiting for the slow queue"
    );
    // Once the slow subscriber reads, everything flows, to both, in order.
    for n in 0..10 {
        assert_eq!(**within(slow.recv()).await.unwrap().message(), json!(n));
    }
    within(publisher).await.unwrap();
    for n in 5..10 {
        assert_eq!(**within(fast.recv()).await.unwrap().message(), json!(n));
    }
    process.stop().await;
}

#[tokio::test]
async fn drop_oldest_never_blocks_the_publisher_and_counts_the_lag() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut lossy = ctx
        .subscribe_with(
            "t",
            SubscribeOptions::new()
                .capacity(4)
                .policy(FullPolicy::DropOldest),
        )
        .await
        .unwrap();
    let mut full = ctx.subscribe("t").await.unwrap();
    // 100 publishes complete although the lossy subscriber reads nothing.
    within(async {
        for n in 0..100 {
            ctx.publish("t", json!(n)).await.unwrap();
        }
    })
    .await;
    let kept: Vec<Value> =
        std::iter::from_fn(|| lossy.try_recv().map(|d| (**d.message()).clone())).collect();
    assert_eq!(kept, vec![json!(96), json!(97), json!(98), json!(99)]);
    assert_eq!(lossy.lagged(), 96);
    for n in 0..100 {
        assert_eq!(**within(full.recv()).await.unwrap().message(), json!(n));
    }
    process.stop().await;
}

#[tokio::test]
async fn drop_oldest_keeps_exactly_its_capacity() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut lossy = ctx
        .subscribe_with(
            "t",
            SubscribeOptions::new()
                .capacity(3)
                .policy(FullPolicy::DropOldest),
        )
        .await
        .unwrap();
    for n in 0..10 {
        ctx.publish("t", json!(n)).await.unwrap();
    }
    // Counted when dropped, before anything is read.
    assert_eq!(lossy.lagged(), 7);
    let kept: Vec<Value> =
        std::iter::from_fn(|| lossy.try_recv().map(|d| (**d.message()).clone())).collect();
    assert_eq!(kept, vec![json!(7), json!(8), json!(9)]);
    process.stop().await;
}

#[tokio::test]
async fn a_dropped_subscription_is_removed_at_once_and_never_blocks_a_publish() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let dead = ctx
        .subscribe_with(
            "t",
            SubscribeOptions::new().capacity(1).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    let mut live = ctx.subscribe("t").await.unwrap();
    assert_eq!(process.bus_stats()[0].1.subscriptions, 2);
    drop(dead);
    assert_eq!(process.bus_stats()[0].1.subscriptions, 1);
    // With the dead queue (capacity 1) still registered, the second publish would wait forever.
    within(async {
        for n in 0..10 {
            ctx.publish("t", json!(n)).await.unwrap();
        }
    })
    .await;
    for n in 0..10 {
        assert_eq!(**within(live.recv()).await.unwrap().message(), json!(n));
    }
    process.stop().await;
}

#[tokio::test]
async fn subscriptions_do_not_leak() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let before = process.bus_stats()[0].1.subscriptions;
    for _ in 0..10_000 {
        let sub = ctx.subscribe("leak.#").await.unwrap();
        drop(sub);
    }
    assert_eq!(process.bus_stats()[0].1.subscriptions, before);
    process.stop().await;
}

#[tokio::test]
async fn a_publish_that_matches_no_route_is_an_error_not_a_silent_ok() {
    let toml = "[message-bus.internal]\nclass = \"in-memory\"\n\n[[message-router.route]]\npattern = \"known.#\"\nbus = \"internal\"\n";
    let process = start(toml).await;
    let ctx = process.context("test");
    let err = ctx.publish("unknown.topic", json!(1)).await.unwrap_err();
    assert!(
        matches!(err, PublishError::NoRoute { ref topic } if topic == "unknown.topic"),
        "{err}"
    );
    assert_eq!(process.metrics().unrouted_total(), 1);
    let err = ctx.subscribe("unknown.#").await.unwrap_err();
    assert!(matches!(err, SubscribeError::NoRoute { .. }), "{err}");
    // `#` overlaps `known.#`, so it subscribes to the bus that carries `known.…`.
    let mut all = ctx.subscribe("#").await.unwrap();
    ctx.publish("known.x", json!(2)).await.unwrap();
    assert_eq!(**within(all.recv()).await.unwrap().message(), json!(2));
    process.stop().await;
}

#[tokio::test]
async fn unrouted_drop_is_counted_when_configured() {
    let toml = "[message-bus.internal]\nclass = \"in-memory\"\n\n[message-router]\nunrouted = \"drop\"\n\n[[message-router.route]]\npattern = \"known.#\"\nbus = \"internal\"\n";
    let process = start(toml).await;
    let ctx = process.context("test");
    ctx.publish("unknown.topic", json!(1)).await.unwrap();
    assert_eq!(process.metrics().unrouted_total(), 1);
    process.stop().await;
}

#[tokio::test]
async fn invalid_topics_are_refused_before_any_bus_sees_them() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    assert!(matches!(
        ctx.publish("a..b", json!(1)).await,
        Err(PublishError::InvalidTopic(_))
    ));
    assert!(matches!(
        ctx.publish("a.*", json!(1)).await,
        Err(PublishError::InvalidTopic(_))
    ));
    assert!(matches!(
        ctx.subscribe("a.b#").await,
        Err(SubscribeError::InvalidPattern(_))
    ));
    process.stop().await;
}

#[tokio::test]
async fn first_matching_route_wins_and_subscriptions_follow_the_routes() {
    let toml = "[message-bus.fast]\nclass = \"in-memory\"\n[message-bus.bulk]\nclass = \"in-memory\"\n\n[[message-router.route]]\npattern = \"audit.#\"\nbus = \"fast\"\n[[message-router.route]]\npattern = \"#\"\nbus = \"bulk\"\n";
    let process = start(toml).await;
    let ctx = process.context("test");
    let mut everything = ctx.subscribe("#").await.unwrap();
    let mut audit = ctx.subscribe("audit.*").await.unwrap();
    ctx.publish("audit.login", json!("a")).await.unwrap();
    ctx.publish("sales.order", json!("s")).await.unwrap();
    assert_eq!(
        **within(everything.recv()).await.unwrap().message(),
        json!("a")
    );
    assert_eq!(
        **within(everything.recv()).await.unwrap().message(),
        json!("s")
    );
    assert_eq!(**within(audit.recv()).await.unwrap().message(), json!("a"));
    assert!(audit.try_recv().is_none());
    let stats = process.bus_stats();
    // `#` listens on both buses; `audit.*` overlaps both routes too (`#` can carry audit.x
    // from other processes' routing), so each bus holds both subscriptions.
    assert_eq!(stats.iter().map(|(_, s)| s.subscriptions).sum::<usize>(), 4);
    assert!(everything.try_recv().is_none(), "each message arrives once");
    process.stop().await;
}

#[tokio::test]
async fn subscriptions_end_after_stop_and_reader_loops_finish() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut sub = ctx.subscribe("#").await.unwrap();
    ctx.publish("a", json!(1)).await.unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while sub.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let report = process.stop().await;
    assert!(report.drained);
    // The loop ends (it would spin forever if recv kept returning "nothing yet").
    assert_eq!(within(reader).await.unwrap(), 1);
    assert!(matches!(
        ctx.publish("a", json!(2)).await,
        Err(PublishError::Closed { .. })
    ));
}

#[tokio::test]
async fn thousands_of_entity_subscriptions_each_get_only_their_own_topics() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    const N: usize = 3_000;
    let mut exact = Vec::new();
    let mut per_order = Vec::new();
    for i in 0..N {
        exact.push(ctx.subscribe(format!("balance.{i}")).await.unwrap());
        per_order.push(ctx.subscribe(format!("orders.{i}.#")).await.unwrap());
    }
    let mut every_payment = ctx.subscribe("orders.*.paid").await.unwrap();
    assert_eq!(process.bus_stats()[0].1.subscriptions, 2 * N + 1);
    for i in (0..N).step_by(7) {
        ctx.publish(format!("balance.{i}"), json!(i)).await.unwrap();
        ctx.publish(format!("orders.{i}.paid"), json!(i))
            .await
            .unwrap();
        ctx.publish(format!("orders.{i}.lines.add"), json!(i))
            .await
            .unwrap();
    }
    for i in 0..N {
        if i % 7 == 0 {
            assert_eq!(**within(exact[i].recv()).await.unwrap().message(), json!(i));
            let paid = within(per_order[i].recv()).await.unwrap();
            assert_eq!(paid.topic().as_str(), format!("orders.{i}.paid"));
            let line = within(per_order[i].recv()).await.unwrap();
            assert_eq!(line.topic().as_str(), format!("orders.{i}.lines.add"));
            let any = within(every_payment.recv()).await.unwrap();
            assert_eq!(any.topic().as_str(), format!("orders.{i}.paid"));
        }
        assert!(
            exact[i].try_recv().is_none(),
            "balance.{i} got another's message"
        );
        assert!(
            per_order[i].try_recv().is_none(),
            "orders.{i}.# got another's message"
        );
    }
    assert!(every_payment.try_recv().is_none());
    // Unsubscribing half leaves the other half working, and counted.
    let kept: Vec<_> = exact.drain(..).skip(N / 2).collect();
    drop(per_order);
    assert_eq!(process.bus_stats()[0].1.subscriptions, N - N / 2 + 1);
    let mut last = kept.into_iter().last().unwrap();
    ctx.publish(format!("balance.{}", N - 1), json!("last"))
        .await
        .unwrap();
    assert_eq!(
        **within(last.recv()).await.unwrap().message(),
        json!("last")
    );
    process.stop().await;
}

#[tokio::test]
async fn a_publisher_waiting_on_a_full_queue_is_released_when_the_subscriber_goes() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let sub = ctx
        .subscribe_with(
            "full",
            SubscribeOptions::new().capacity(1).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    ctx.publish("full", json!(1)).await.unwrap();
    let publisher = {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.publish("full", json!(2)).await })
    };
    // The second publish waits for room: it has not finished.
    tokio::task::yield_now().await;
    assert!(!publisher.is_finished());
    drop(sub);
    within(publisher).await.unwrap().unwrap();
    process.stop().await;
}

#[tokio::test]
async fn a_small_wait_queue_passes_a_long_stream_in_order() {
    let process = start(ONE_BUS).await;
    let ctx = process.context("test");
    let mut sub = ctx
        .subscribe_with(
            "stream",
            SubscribeOptions::new().capacity(3).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    let publisher = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            for n in 0..5_000 {
                ctx.publish("stream", json!(n)).await.unwrap();
            }
        })
    };
    for n in 0..5_000 {
        assert_eq!(**within(sub.recv()).await.unwrap().message(), json!(n));
    }
    within(publisher).await.unwrap();
    assert!(sub.try_recv().is_none());
    process.stop().await;
}
