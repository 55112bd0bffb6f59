//! Server-sent events over real HTTP: clients get what is published; a
//! stalled client is dropped and counted, and neither the bus nor the other
//! clients wait for it.

mod common;

use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: &str = "telamon_rest_sse_clients{module=\"rest\",path=\"/events\"}";
const DROPPED: &str = "telamon_rest_sse_dropped_total{module=\"rest\",path=\"/events\"}";

/// Reads SSE `data:` lines from `body` until `n` have come; fails after 10 s.
async fn read_events(
    body: &mut hyper::body::Incoming,
    buffer: &mut String,
    n: usize,
) -> Vec<Value> {
    let mut events = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                for line in event.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        events.push(serde_json::from_str(data).unwrap());
                    }
                }
                if events.len() == n {
                    return;
                }
            }
            let frame = body.frame().await.expect("the stream ended").unwrap();
            if let Ok(data) = frame.into_data() {
                buffer.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} events not within 10 s; got {events:?}"));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_receives_what_is_published_on_the_pattern() {
    let (p, addr) = start(
        "events = [{ path = \"/events\", pattern = \"orders.#\" }]",
        "",
    )
    .await;
    let r = client().request(get(addr, "/events")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut body = r.into_body();
    let ctx = p.context("t");
    ctx.publish("orders.placed", json!({"id": 1}))
        .await
        .unwrap();
    ctx.publish("payments.made", json!("not streamed"))
        .await
        .unwrap();
    ctx.publish("orders.shipped.eu", json!({"id": 1}))
        .await
        .unwrap();
    let mut buffer = String::new();
    let events = read_events(&mut body, &mut buffer, 2).await;
    assert_eq!(
        events,
        vec![
            json!({"topic": "orders.placed", "message": {"id": 1}}),
            json!({"topic": "orders.shipped.eu", "message": {"id": 1}}),
        ]
    );
    assert_eq!(metric(&p, CLIENTS), Some(1.0));
    // At stop the stream ends, so the server's shutdown does not wait for it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), p.stop()).await;
    assert!(stopped.expect("stop waited for the event stream").drained);
    // …and the client sees its end rather than hanging.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match body.frame().await {
                Some(Ok(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the event stream did not end at stop");
}

/// Two clients of `/events`: one that asks for the stream and never reads,
/// on a socket with a 4 KiB receive buffer, and one that reads.
async fn stalled_and_reading(
    p: &telamon_process::RunningProcess<Value>,
    addr: std::net::SocketAddr,
) -> (tokio::net::TcpStream, Reader) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let r = client().request(get(addr, "/events")).await.unwrap();
    until("both clients connected", || metric(p, CLIENTS) == Some(2.0)).await;
    let reader = Reader {
        body: r.into_body(),
        buffer: String::new(),
    };
    (stalled, reader)
}

/// The reading client.
struct Reader {
    body: hyper::body::Incoming,
    buffer: String,
}

/// Publishes `n` messages of 16 KiB on `load.tick`, the reader taking each
/// before the next goes (so it never falls behind), and checks it got each
/// in order. A publisher held up by a stalled client would stop this.
async fn publish_and_read(p: &telamon_process::RunningProcess<Value>, reader: &mut Reader, n: u64) {
    let ctx = p.context("t");
    let filler = "x".repeat(16 * 1024);
    for i in 0..n {
        ctx.publish("load.tick", json!({"i": i, "filler": filler}))
            .await
            .unwrap();
        let events = read_events(&mut reader.body, &mut reader.buffer, 1).await;
        assert_eq!(events[0]["message"]["i"], json!(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_and_counted_and_nobody_waits_for_it() {
    let (p, addr) = start(
        "events = [{ path = \"/events\", pattern = \"load.#\", client-queue = 8 }]",
        "",
    )
    .await;
    let (mut stalled, mut reader) = stalled_and_reading(&p, addr).await;
    // Far more than the stalled socket and its queue of 8 hold.
    publish_and_read(&p, &mut reader, 400).await;
    until("the stalled client dropped", || {
        metric(&p, DROPPED) == Some(1.0)
    })
    .await;
    // Its connection is cut while it still reads nothing: hyper lets go of
    // its response, and the client count falls back.
    until("the stalled client's connection let go", || {
        metric(&p, CLIENTS) == Some(1.0)
    })
    .await;
    // Its connection is closed, not left to hang: reading it now ends.
    let mut sink = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut sink)).await;
    assert!(end.is_ok(), "the stalled client's connection stays open");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stopped_reading_does_not_hold_the_stop() {
    // A queue that never fills: the client is not dropped for falling
    // behind, hyper just cannot write to it.
    let (p, addr) = start(
        "events = [{ path = \"/events\", pattern = \"load.#\", client-queue = 100000 }]",
        "[process]\nshutdown-timeout = \"60s\"",
    )
    .await;
    let (stalled, mut reader) = stalled_and_reading(&p, addr).await;
    // 600 × 16 KiB: once the reader has them all, the stalled socket is full
    // and hyper is stuck writing to it.
    publish_and_read(&p, &mut reader, 600).await;
    assert_eq!(metric(&p, DROPPED), Some(0.0));
    // Well within the 60 s shutdown deadline: the stop cuts the stalled
    // connection instead of waiting for it.
    let report = tokio::time::timeout(Duration::from_secs(10), p.stop())
        .await
        .expect("the stop waited for a client that does not read");
    assert!(report.drained);
    drop(stalled);
}
