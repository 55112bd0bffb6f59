//! At-least-once delivery while the broker force-closes every connection.
//! (Its own test binary: `close_all_connections` hits every client of the broker.)

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::rabbit::{rabbit_toml, rabbitmqctl, require_broker, unique};
use common::{start, within};
use serde_json::json;
use telamon_sdk::PublishError;

const COUNT: i64 = 50_000;

fn close_all_connections() {
    rabbitmqctl(&["close_all_connections", "telamon fault test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_connections_are_force_closed_mid_stream() {
    require_broker();
    let exchange = unique("fault");
    let extra =
        "reconnect-min = \"50ms\"\nreconnect-max = \"500ms\"\nsubscriber-queue-size = 100000";
    let p = start(&rabbit_toml(&exchange, "at-least-once", extra)).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("flow.#").await.unwrap();
    let receiver = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut duplicates = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while (seen.len() as i64) < COUNT && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
                Ok(Some(d)) => {
                    if !seen.insert(d.message().as_i64().unwrap()) {
                        duplicates += 1;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        (seen, duplicates)
    });
    let mut refused = 0u64;
    let mut closed = false;
    for n in 0..COUNT {
        if n == COUNT / 3 && !closed {
            close_all_connections();
            closed = true;
        }
        // A publish that fails was not sent; the publisher owns the retry.
        loop {
            match ctx.publish("flow.item", json!(n)).await {
                Ok(()) => break,
                Err(PublishError::Bus { .. }) => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
    }
    let (seen, duplicates) = receiver.await.unwrap();
    let missing: Vec<i64> = (0..COUNT).filter(|n| !seen.contains(n)).take(10).collect();
    println!(
        "received {} distinct of {COUNT}, {duplicates} duplicates, {refused} publishes refused while disconnected",
        seen.len()
    );
    assert!(missing.is_empty(), "lost messages, e.g. {missing:?}");
    assert!(p.bus_stats()[0].1.reconnects >= 1, "the bus reconnected");
    p.stop().await;

    // At-most-once: while disconnected, every publish reports an error; none is a silent Ok.
    let exchange = unique("fault-amo");
    let p = start(&rabbit_toml(
        &exchange,
        "at-most-once",
        "reconnect-min = \"2s\"\nreconnect-max = \"2s\"",
    ))
    .await;
    let ctx = p.context("t");
    ctx.publish("x", json!(0)).await.unwrap();
    close_all_connections();
    let connected = || p.bus_stats()[0].1.connected;
    within(async {
        while connected() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The bus knows it is disconnected (and stays so for the 2 s back-off):
    // every publish in that time must be an error.
    let mut tried = 0;
    while tried < 200 {
        let before = connected();
        let outcome = ctx.publish("x", json!(1)).await;
        if before || connected() {
            break; // reconnected meanwhile: an Ok would be honest
        }
        assert!(
            outcome.is_err(),
            "publish {tried} while disconnected was a silent Ok"
        );
        tried += 1;
    }
    assert_eq!(
        tried, 200,
        "200 publishes while disconnected, each an error"
    );
    assert!(!p.bus_stats()[0].1.connected);
    p.stop().await;
}
