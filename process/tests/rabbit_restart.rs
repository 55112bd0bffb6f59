//! At-least-once across a broker restart (`rabbitmqctl stop_app` / `start_app`):
//! durable subscription queues keep what was confirmed, unconfirmed messages
//! are re-sent once the subscription is bound again.
//! (Its own test binary: the restart hits every client of the broker.)

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::rabbit::{rabbit_toml, rabbitmqctl, require_broker, require_local_broker, unique};
use common::start;
use serde_json::json;
use telamon_sdk::PublishError;

const COUNT: i64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_and_unconfirmed_messages_survive_a_broker_restart() {
    require_broker();
    require_local_broker();
    let exchange = unique("restart");
    let extra = "reconnect-min = \"100ms\"\nreconnect-max = \"1s\"\nsubscriber-queue-size = 16\nprefetch = 64";
    let p = start(&rabbit_toml(&exchange, "at-least-once", extra)).await;
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("flow.#").await.unwrap();
    // The subscriber reads nothing until the broker has restarted, so the
    // broker holds a backlog of confirmed messages when it goes down.
    let (go, restarted_rx) = tokio::sync::oneshot::channel::<()>();
    let receiver = tokio::spawn(async move {
        let _ = restarted_rx.await;
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while (seen.len() as i64) < COUNT && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(30), sub.recv()).await {
                Ok(Some(d)) => {
                    seen.insert(d.message().as_i64().unwrap());
                }
                Ok(None) | Err(_) => break,
            }
        }
        seen
    });
    let mut restarted = false;
    let mut go = Some(go);
    for n in 0..COUNT {
        if n == COUNT / 2 && !restarted {
            // Blocking on purpose: the broker is down until start_app returns.
            tokio::task::block_in_place(|| {
                rabbitmqctl(&["stop_app"]);
                rabbitmqctl(&["start_app"]);
            });
            restarted = true;
            if let Some(go) = go.take() {
                let _ = go.send(());
            }
        }
        loop {
            match ctx.publish("flow.item", json!(n)).await {
                Ok(()) => break,
                Err(PublishError::Bus { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("unexpected: {e}"),
            }
        }
    }
    let seen = receiver.await.unwrap();
    let missing: Vec<i64> = (0..COUNT).filter(|n| !seen.contains(n)).take(10).collect();
    println!(
        "received {} distinct of {COUNT} across a broker restart",
        seen.len()
    );
    assert!(missing.is_empty(), "lost messages, e.g. {missing:?}");
    p.stop().await;
}
