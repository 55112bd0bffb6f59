//! The subscriptions of one process share one RabbitMQ queue (`shared-queue`):
//! a binding per distinct pattern, local dispatch, one network crossing per
//! message — tried against the real broker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::proxy::Proxy;
use common::rabbit::{
    amqp_url, bound_keys, queues, rabbit_toml, require_broker, require_local_broker, unique,
};
use common::{start, until, until_every, within};
use serde_json::{Value, json};
use telamon_sdk::{FullPolicy, SubscribeOptions, Subscription};

fn bindings_to(exchange: &str, queue_prefix: &str) -> usize {
    bound_keys(exchange, queue_prefix).len()
}

/// Publishes until the bus takes it: the bus opens for publishing only once
/// its subscriptions are bound again after a reconnect.
async fn until_publishing(ctx: &telamon_sdk::Context<Value>) {
    within(async {
        while ctx.publish("nobody.x", json!(0)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until `f`, which asks the broker through `rabbitmqctl`, holds:
/// asked twice a second (each call starts an Erlang VM that competes for
/// the two cores with the broker's own work).
async fn until_broker(f: impl FnMut() -> bool) {
    until_every(Duration::from_millis(500), f).await;
}

async fn expect_all(sub: &mut Subscription<Value>, n: i64) {
    for i in 0..n {
        let d = within(sub.recv()).await.unwrap();
        assert_eq!(**d.message(), json!(i), "on `{}`", sub.pattern());
    }
}

#[tokio::test]
async fn a_thousand_subscriptions_are_one_queue_and_a_message_crosses_once() {
    require_broker();
    require_local_broker();
    let exchange = unique("shared");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "")).await;
    let ctx = p.context("t");
    let mut entities = Vec::new();
    for i in 0..1000 {
        entities.push(ctx.subscribe(&format!("entity.{i}.#")).await.unwrap());
    }
    // Four subscriptions match `shared.topic`, two of them with the same pattern.
    let mut matching = Vec::new();
    for pattern in ["shared.#", "shared.topic", "shared.topic", "*.topic"] {
        matching.push(ctx.subscribe(pattern).await.unwrap());
    }
    let prefix = format!("{exchange}.sub.");
    assert_eq!(queues(&prefix).len(), 1, "one queue for 1004 subscriptions");
    assert_eq!(
        bindings_to(&exchange, &prefix),
        1003,
        "a binding per distinct pattern"
    );

    for n in 0..100 {
        ctx.publish("shared.topic", json!(n)).await.unwrap();
    }
    for sub in &mut matching {
        expect_all(sub, 100).await;
    }
    // Each message came from the broker once, not once per subscription.
    assert_eq!(p.bus_stats()[0].1.received, 100);

    // An entity message reaches its own subscription only.
    ctx.publish("entity.7.changed", json!("seven"))
        .await
        .unwrap();
    let d = within(entities[7].recv()).await.unwrap();
    assert_eq!(**d.message(), json!("seven"));
    ctx.publish("shared.topic", json!("marker")).await.unwrap();
    within(matching[0].recv()).await.unwrap();
    assert!(entities.iter_mut().all(|s| s.try_recv().is_none()));

    // Dropping subscriptions unbinds their patterns; a pattern still in use
    // stays bound. Subscribing meanwhile does not wait behind the unbinds, and
    // a pattern subscribed again before its unbind stays bound.
    entities.truncate(800);
    drop(matching.remove(1));
    let mut again = ctx.subscribe("entity.999.#").await.unwrap();
    let mut fresh = ctx.subscribe("fresh.one").await.unwrap();
    ctx.publish("entity.999.x", json!(999)).await.unwrap();
    ctx.publish("fresh.one", json!(1)).await.unwrap();
    assert_eq!(**within(again.recv()).await.unwrap().message(), json!(999));
    assert_eq!(**within(fresh.recv()).await.unwrap().message(), json!(1));
    let mut expected: BTreeSet<String> = (0..800).map(|i| format!("entity.{i}.#")).collect();
    for key in [
        "entity.999.#",
        "fresh.one",
        "shared.#",
        "shared.topic",
        "*.topic",
    ] {
        expected.insert(key.to_owned());
    }
    until_broker(|| bound_keys(&exchange, &prefix) == expected).await;
    ctx.publish("entity.999.x", json!("still")).await.unwrap();
    assert_eq!(
        **within(again.recv()).await.unwrap().message(),
        json!("still")
    );
    ctx.publish("shared.topic", json!("after")).await.unwrap();
    for sub in &mut matching {
        let d = loop {
            let d = within(sub.recv()).await.unwrap();
            if **d.message() != json!("marker") {
                break d;
            }
        };
        assert_eq!(**d.message(), json!("after"), "on `{}`", sub.pattern());
    }
    p.stop().await;
    assert_eq!(queues(&exchange), vec![]);
}

#[tokio::test]
async fn shared_queue_false_gives_every_subscription_its_own_queue() {
    require_broker();
    require_local_broker();
    let exchange = unique("ownqueue");
    let p = start(&rabbit_toml(
        &exchange,
        "at-least-once",
        "shared-queue = false",
    ))
    .await;
    let ctx = p.context("t");
    let mut subs = Vec::new();
    for pattern in ["shared.#", "shared.topic", "*.topic"] {
        subs.push(ctx.subscribe(pattern).await.unwrap());
    }
    assert_eq!(queues(&format!("{exchange}.sub.")).len(), 3);
    for n in 0..10 {
        ctx.publish("shared.topic", json!(n)).await.unwrap();
    }
    for sub in &mut subs {
        expect_all(sub, 10).await;
    }
    assert_eq!(p.bus_stats()[0].1.received, 30, "a copy per queue");
    p.stop().await;
}

#[tokio::test]
async fn every_pattern_is_bound_again_after_the_connection_is_cut() {
    require_broker();
    // At-most-once: the exclusive queue dies with the connection, bindings and
    // all, so only re-binding brings messages back.
    let proxy = Proxy::start().await;
    let exchange = unique("rebind");
    let toml = rabbit_toml(&exchange, "at-most-once", "reconnect-min = \"50ms\"")
        .replace(&amqp_url(), &proxy.url());
    let p = start(&toml).await;
    let ctx = p.context("t");
    let mut subs = Vec::new();
    for i in 0..20 {
        subs.push(ctx.subscribe(&format!("k.{i}.#")).await.unwrap());
    }
    proxy.cut();
    until(|| p.bus_stats()[0].1.reconnects >= 1).await;
    // One more while the bus reconnects (or just after): bound either way.
    subs.push(ctx.subscribe("k.new").await.unwrap());
    // A publish succeeds once the bus is open again, which is after re-binding.
    until_publishing(&ctx).await;
    for i in 0..20 {
        ctx.publish(&format!("k.{i}.x"), json!(i)).await.unwrap();
    }
    ctx.publish("k.new", json!("new")).await.unwrap();
    for (i, sub) in subs.iter_mut().enumerate() {
        let d = within(sub.recv()).await.unwrap();
        let want = if i == 20 { json!("new") } else { json!(i) };
        assert_eq!(**d.message(), want);
    }
    p.stop().await;
}

#[tokio::test]
async fn dropping_a_stalled_subscriber_releases_the_others_and_loses_nothing() {
    require_broker();
    let exchange = unique("stalled");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "prefetch = 8")).await;
    let ctx = p.context("t");
    // Never read: it fills and holds back the shared queue (documented).
    let stalled = ctx
        .subscribe_with(
            "load.#",
            SubscribeOptions::new().capacity(4).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    let mut reader = ctx.subscribe("load.*").await.unwrap();
    for n in 0..200 {
        ctx.publish("load.x", json!(n)).await.unwrap();
    }
    // The reader gets the first few, then waits behind the stalled one: the
    // broker keeps the backlog (at most `prefetch` handed out).
    expect_all(&mut reader, 4).await;
    let prefix = format!("{exchange}.sub.");
    until_broker(|| {
        let q = queues(&prefix);
        q.len() == 1 && q[0].1 + q[0].2 >= 190 && q[0].2 <= 8
    })
    .await;
    // The broker's count reaches the metrics too (asked every second).
    let backlog = || {
        let text = p.metrics().render();
        text.lines()
            .find_map(|l| l.strip_prefix("telamon_bus_backlog{bus=\"external\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    until(|| backlog() >= 180).await;
    let mut early = Vec::new();
    while let Some(d) = reader.try_recv() {
        early.push(d.message().as_i64().unwrap());
    }
    assert!(early.len() <= 1, "held back, yet it got {early:?}");
    drop(stalled);
    // Nothing was lost meanwhile: the broker kept the rest.
    for n in 4 + early.len() as i64..200 {
        let d = within(reader.recv()).await.unwrap();
        assert_eq!(**d.message(), json!(n));
    }
    p.stop().await;
}

#[tokio::test]
async fn subscriptions_made_while_the_broker_is_away_are_bound_when_it_is_back() {
    require_broker();
    let proxy = Proxy::start().await;
    let exchange = unique("offline");
    let toml = rabbit_toml(
        &exchange,
        "at-least-once",
        "reconnect-min = \"50ms\"\nreconnect-max = \"200ms\"",
    )
    .replace(&amqp_url(), &proxy.url());
    let p = start(&toml).await;
    let ctx = p.context("t");
    let gone = ctx.subscribe("again.x").await.unwrap();
    let _kept = ctx.subscribe("kept.x").await.unwrap();
    // Unsubscribed: its binding is now stale, to be removed lazily.
    drop(gone);
    proxy.refuse();
    until(|| !p.bus_stats()[0].1.connected).await;
    // While the broker is away: the same pattern again, and a new one.
    let mut again = ctx.subscribe("again.x").await.unwrap();
    let mut fresh = ctx.subscribe("fresh.x").await.unwrap();
    proxy.admit();
    until_publishing(&ctx).await;
    // Twice, with a round trip between: a stale unbind that ran after the
    // re-subscription would lose the second.
    for n in 0..2 {
        ctx.publish("again.x", json!(n)).await.unwrap();
        ctx.publish("fresh.x", json!(n)).await.unwrap();
        assert_eq!(**within(again.recv()).await.unwrap().message(), json!(n));
        assert_eq!(**within(fresh.recv()).await.unwrap().message(), json!(n));
        p.context("t").flush().await.unwrap();
    }
    p.stop().await;
}

#[tokio::test]
async fn every_subscription_ends_when_the_process_stops() {
    require_broker();
    let exchange = unique("ends");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "")).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("end.#").await.unwrap();
    ctx.publish("end.x", json!(1)).await.unwrap();
    assert_eq!(**within(sub.recv()).await.unwrap().message(), json!(1));
    p.stop().await;
    assert!(within(sub.recv()).await.is_none(), "drained, then None");
}
