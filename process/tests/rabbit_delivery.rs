//! What the RabbitMQ bus promises about delivery, tried against the real
//! broker through a proxy this test controls: a node that never answers, a
//! broker that refuses the config, confirms that never come, and acks that
//! must not wait behind a full subscriber queue.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::Proxy;
use common::rabbit::{amqp_url, queues, require_broker, require_local_broker, unique};
use common::{config, within};
use serde_json::{Value, json};
use telamon_process::Process;
use telamon_sdk::{FullPolicy, SubscribeOptions};
use tokio::net::TcpListener;

/// One RabbitMQ bus carrying everything, over `urls` (a TOML value).
fn toml(exchange: &str, urls: &str, extra: &str) -> String {
    format!(
        "[process]\nconnect-timeout = \"10s\"\nshutdown-timeout = \"500ms\"\n\n[message-bus.external]\nclass = \"rabbit-mq\"\nurl = {urls}\nexchange = \"{exchange}\"\nreconnect-min = \"50ms\"\nreconnect-max = \"200ms\"\n{extra}\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n"
    )
}

async fn start(toml: &str) -> telamon_process::RunningProcess<Value> {
    Process::<Value>::new(config(toml))
        .start()
        .await
        .expect("process starts")
}

#[tokio::test]
async fn a_node_that_accepts_tcp_and_never_answers_is_skipped() {
    require_broker();
    // Accepts connections and holds them without a byte in reply.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let exchange = unique("silent");
    let urls = format!(
        "[\"amqp://guest:guest@127.0.0.1:{silent_port}/%2f\", \"{}\"]",
        amqp_url()
    );
    let p = start(&toml(&exchange, &urls, "connection-timeout = \"300ms\"")).await;
    assert!(p.bus_stats()[0].1.connected, "moved on to the second node");
    let ctx = p.context("t");
    let mut sub = ctx.subscribe("data.#").await.unwrap();
    ctx.publish("data.x", json!("through the live node"))
        .await
        .unwrap();
    assert_eq!(
        **within(sub.recv()).await.unwrap().message(),
        json!("through the live node")
    );
    p.stop().await;
}

#[tokio::test]
async fn a_broker_that_refuses_the_declarations_fails_startup_naming_the_key() {
    require_broker();
    let exchange = unique("refused");
    // Someone else declared the exchange non-durable first.
    let raw = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = raw.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Topic,
        lapin::options::ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let started = Process::<Value>::new(config(&toml(
        &exchange,
        &format!("\"{}\"", amqp_url()),
        "exchange-durable = true",
    )))
    .start()
    .await;
    let err = started.expect_err("startup fails");
    assert_eq!(
        err.config_key(),
        Some("message-bus.external.exchange-durable"),
        "names the key: {err}"
    );
    let err = err.to_string();
    assert!(
        err.contains("406") && err.contains("PRECONDITION_FAILED"),
        "quotes the broker: {err}"
    );
    ch.exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn flush_waits_for_confirms_and_stop_reports_what_was_never_confirmed() {
    require_broker();
    let proxy = Proxy::start().await;
    let exchange = unique("unconfirmed");
    let p = start(&toml(
        &exchange,
        &format!("\"{}\"", proxy.url()),
        "delivery = \"at-least-once\"",
    ))
    .await;
    let ctx = p.context("t");
    for i in 0..10 {
        ctx.publish("data.x", json!(i)).await.unwrap();
    }
    within(ctx.flush())
        .await
        .expect("the broker confirmed all ten");
    // The broker goes silent: publishes are handed over, confirms never come.
    proxy.freeze();
    for i in 0..50 {
        ctx.publish("data.y", json!(i)).await.unwrap();
    }
    // Then the connection goes, and no broker can be reached any more.
    proxy.close();
    let flushed = within(ctx.flush()).await;
    let err = flushed.expect_err("nothing can confirm them now");
    assert!(err.to_string().contains("50 published messages"), "{err}");
    let scraped = p.metrics().render();
    assert!(
        scraped.contains("telamon_bus_unconfirmed{bus=\"external\"} 50"),
        "{scraped}"
    );
    let report = p.stop().await;
    assert_eq!(report.unconfirmed, 50, "{report:?}");
}

#[tokio::test]
async fn acks_are_not_held_back_while_a_full_subscriber_queue_waits() {
    require_broker();
    require_local_broker();
    let proxy = Proxy::start().await;
    let exchange = unique("fullacks");
    let sub_side = start(&toml(
        &exchange,
        &format!("\"{}\"", proxy.url()),
        "delivery = \"at-least-once\"\nprefetch = 16",
    ))
    .await;
    let pub_side = start(&toml(
        &exchange,
        &format!("\"{}\"", amqp_url()),
        "delivery = \"at-least-once\"",
    ))
    .await;
    let mut sub = sub_side
        .context("slow")
        .subscribe_with(
            "data.#",
            SubscribeOptions::new().capacity(8).policy(FullPolicy::Wait),
        )
        .await
        .unwrap();
    let publisher = pub_side.context("p");
    for i in 0..100 {
        publisher.publish("data.x", json!(i)).await.unwrap();
    }
    publisher.flush().await.unwrap();
    // The 8 in the local queue are acknowledged although the consumer now
    // waits for room: the broker holds 92, not 100.
    within(async {
        loop {
            let q = queues(&format!("{exchange}.sub."));
            if q.len() == 1 && q[0].1 + q[0].2 == 92 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The connection fails while the consumer waits; then the subscriber reads.
    proxy.cut();
    let mut seen: HashMap<i64, usize> = HashMap::new();
    while seen.len() < 100 {
        let d = within(sub.recv()).await.unwrap();
        *seen.entry(d.message().as_i64().unwrap()).or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // Documented (docs/configuration.md, `delivery`): after a lost connection
    // at most `prefetch` deliveries come again — the ones received but not
    // yet acknowledged; never the ones acknowledged before the wait.
    assert!(duplicates <= 16, "{duplicates} duplicates, prefetch 16");
    pub_side.stop().await;
    sub_side.stop().await;
}
