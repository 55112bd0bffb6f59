//! The raw tokio construction a hand-written mesh would use: a bounded mpsc per
//! subscriber for pub-sub, mpsc + oneshot for requests. No topics, no routing.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::measurement::{Measurement, gathered};
use crate::message::{BenchMsg, now_ns};
use crate::request_clock::RequestClock;

const SYSTEM: &str = "baseline";

pub(crate) async fn fan_out(
    scenario: &'static str,
    subscribers: usize,
    n: u64,
    queue: usize,
) -> anyhow::Result<Measurement> {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..subscribers {
        let (tx, mut rx) = mpsc::channel::<Arc<BenchMsg>>(queue);
        senders.push(tx);
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n as usize);
            while let Some(m) = rx.recv().await {
                latencies.push(now_ns() - m.sent_ns);
                if latencies.len() as u64 == n {
                    break;
                }
            }
            (latencies, Instant::now())
        }));
    }
    let started = Instant::now();
    for i in 0..n {
        let msg = Arc::new(BenchMsg::new(i));
        for tx in &senders {
            tx.send(msg.clone()).await?;
        }
    }
    gathered(scenario, SYSTEM, started, n, receivers).await
}

type Job = (Arc<BenchMsg>, oneshot::Sender<Arc<BenchMsg>>);

pub(crate) async fn request(n: u64, in_flight: usize) -> anyhow::Result<Measurement> {
    let (tx, mut rx) = mpsc::channel::<Job>(1024);
    let handler = tokio::spawn(async move {
        while let Some((msg, reply)) = rx.recv().await {
            let _ = reply.send(msg);
        }
    });
    let sender = &tx;
    let clock = RequestClock::new(n)
        .drive(in_flight, |i| {
            let msg = Arc::new(BenchMsg::new(i));
            async move {
                let (rtx, rrx) = oneshot::channel();
                sender
                    .send((msg, rtx))
                    .await
                    .map_err(|_| anyhow::anyhow!("handler gone"))?;
                rrx.await?;
                anyhow::Ok(())
            }
        })
        .await?;
    drop(tx);
    handler.await?;
    Ok(clock.finish("inproc-request", SYSTEM))
}

pub(crate) async fn idle() -> anyhow::Result<()> {
    let (_tx, mut rx) = mpsc::channel::<Arc<BenchMsg>>(1024);
    let task = tokio::spawn(async move { rx.recv().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    println!("{}", crate::measurement::rss_mb());
    task.abort();
    Ok(())
}
