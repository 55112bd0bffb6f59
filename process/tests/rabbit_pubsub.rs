//! Pub-sub over the real RabbitMQ broker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::rabbit::{amqp_url, queues, rabbit_toml, require_broker, unique};
use common::{start, within};
use serde_json::json;
use telamon_sdk::{FullPolicy, PublishError, SubscribeOptions};
use tokio::net::TcpListener;

#[tokio::test]
async fn every_subscription_to_a_topic_gets_every_message_across_processes() {
    require_broker();
    let exchange = unique("fanout");
    let toml = rabbit_toml(&exchange, "at-least-once", "");
    let a = start(&toml).await;
    let b = start(&toml).await;
    let mut a1 = a.context("t").subscribe("orders.*").await.unwrap();
    let mut a2 = a.context("t").subscribe("orders.eu").await.unwrap();
    let mut b1 = b.context("t").subscribe("orders.#").await.unwrap();
    let publisher = b.context("t");
    for n in 0..50 {
        publisher.publish("orders.eu", json!(n)).await.unwrap();
    }
    for sub in [&mut a1, &mut a2, &mut b1] {
        for n in 0..50 {
            let d = within(sub.recv()).await.unwrap();
            assert_eq!(**d.message(), json!(n));
            assert_eq!(d.topic().as_str(), "orders.eu");
            assert!(
                d.id().is_some(),
                "the AMQP message id is available for de-duplication"
            );
        }
    }
    a.stop().await;
    b.stop().await;
    // Every subscription queue was deleted at stop: nothing is left on the broker.
    assert_eq!(queues(&exchange), vec![]);
}

#[tokio::test]
async fn a_consumer_group_shares_the_work() {
    require_broker();
    let exchange = unique("group");
    let toml = rabbit_toml(
        &exchange,
        "at-least-once",
        "consumer-groups = { \"jobs.#\" = \"workers\" }\nprefetch = 1",
    );
    let a = start(&toml).await;
    let b = start(&toml).await;
    let mut wa = a.context("w").subscribe("jobs.#").await.unwrap();
    let mut wb = b.context("w").subscribe("jobs.#").await.unwrap();
    let publisher = a.context("p");
    for n in 0..100 {
        publisher.publish("jobs.resize", json!(n)).await.unwrap();
    }
    let mut got_a = BTreeSet::new();
    let mut got_b = BTreeSet::new();
    within(async {
        while got_a.len() + got_b.len() < 100 {
            tokio::select! {
                Some(d) = wa.recv() => { got_a.insert(d.message().as_i64().unwrap()); }
                Some(d) = wb.recv() => { got_b.insert(d.message().as_i64().unwrap()); }
            }
        }
    })
    .await;
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both workers got work: {} / {}",
        got_a.len(),
        got_b.len()
    );
    assert!(got_a.is_disjoint(&got_b), "no job went to both");
    assert_eq!(got_a.union(&got_b).count(), 100);
    a.stop().await;
    b.stop().await;
    // The group's queue is durable and shared; it stays (empty) for the next instances.
    let left = queues(&exchange);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].0.ends_with(".group.workers"));
    assert_eq!((left[0].1, left[0].2), (0, 0));
    let cleanup = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = cleanup.create_channel().await.unwrap();
    ch.queue_delete(left[0].0.as_str().into(), Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_json_null_arrives_as_null() {
    require_broker();
    let exchange = unique("null");
    let p = start(&rabbit_toml(&exchange, "at-most-once", "")).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("data.#").await.unwrap();
    let sent = json!({"a": null, "b": [null, 1], "c": []});
    ctx.publish("data.x", sent.clone()).await.unwrap();
    let d = within(sub.recv()).await.unwrap();
    assert_eq!(**d.message(), sent);
    p.stop().await;
}

#[tokio::test]
async fn malformed_bodies_are_rejected_counted_and_consumption_goes_on() {
    require_broker();
    let exchange = unique("malformed");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "")).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("data.#").await.unwrap();
    // A raw AMQP client publishes garbage, then a valid message.
    let raw = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = raw.create_channel().await.unwrap();
    for body in [&b"\xff\xfe not cbor"[..], &b""[..]] {
        ch.basic_publish(
            exchange.as_str().into(),
            "data.x".into(),
            Default::default(),
            body,
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    ctx.publish("data.x", json!("valid")).await.unwrap();
    let d = within(sub.recv()).await.unwrap();
    assert_eq!(**d.message(), json!("valid"));
    // The garbage came on another connection: it may be counted just after.
    within(async {
        while p.bus_stats()[0].1.malformed < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(p.bus_stats()[0].1.malformed, 2);
    p.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_holds_at_most_prefetch_messages_the_broker_keeps_the_rest() {
    require_broker();
    let exchange = unique("prefetch");
    let p = start(&rabbit_toml(&exchange, "at-least-once", "prefetch = 10")).await;
    let ctx = p.context("t");
    let slow = ctx
        .subscribe_with(
            "load.#",
            SubscribeOptions::new().capacity(4).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    for n in 0..200 {
        ctx.publish("load.x", json!(n)).await.unwrap();
    }
    // Wait until the broker has accounted for all 200.
    let mut seen = Vec::new();
    within(async {
        loop {
            seen = queues(&format!("{exchange}.sub."));
            if seen.len() == 1 && seen[0].1 + seen[0].2 >= 190 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let (_, ready, unacked) = &seen[0];
    assert!(*unacked <= 10, "unacked {unacked} > prefetch 10");
    assert!(*ready >= 185, "the broker keeps the backlog: ready {ready}");
    // Dropping a blocked subscriber deletes its queue, backlog and all.
    drop(slow);
    p.stop().await;
    assert_eq!(queues(&exchange), vec![]);
}

/// Forwards one port to the broker once told to, to play a broker that appears late.
async fn late_broker() -> (u16, tokio::sync::oneshot::Sender<()>) {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let (go, appear) = tokio::sync::oneshot::channel::<()>();
    let broker = amqp_url();
    let target = broker
        .rsplit('@')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    tokio::spawn(async move {
        let _ = appear.await;
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (port, go)
}

#[tokio::test]
async fn a_process_starts_without_its_broker_reports_it_and_connects_when_it_appears() {
    require_broker();
    let exchange = unique("late");
    let (port, appear) = late_broker().await;
    let toml = format!(
        "[process]\nconnect-timeout = \"200ms\"\n[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"amqp://guest:guest@127.0.0.1:{port}/%2f\"\nexchange = \"{exchange}\"\nreconnect-min = \"50ms\"\nreconnect-max = \"200ms\"\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n"
    );
    let p = start(&toml).await;
    assert!(!p.bus_stats()[0].1.connected);
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("late.#").await.unwrap();
    let err = ctx.publish("late.x", json!(0)).await.unwrap_err();
    assert!(
        matches!(err, PublishError::Bus { ref reason, .. } if reason.contains("not connected")),
        "{err}"
    );
    appear.send(()).unwrap();
    // Publish until the subscriber hears something: the bus connects, the
    // subscription binds, and from then on messages arrive.
    let mut first_ok = None;
    let first = within(async {
        let mut n = 1;
        loop {
            tokio::select! {
                d = sub.recv() => break d.unwrap(),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                    if ctx.publish("late.x", json!(n)).await.is_ok() {
                        first_ok.get_or_insert(n);
                    }
                    n += 1;
                }
            }
        }
    })
    .await;
    assert!(p.bus_stats()[0].1.connected);
    assert!(first.message().as_i64().unwrap() >= first_ok.expect("a publish succeeded"));
    let text = p.metrics().render();
    assert!(
        text.contains("telamon_bus_connected{bus=\"external\"} 1"),
        "{text}"
    );
    p.stop().await;
}
