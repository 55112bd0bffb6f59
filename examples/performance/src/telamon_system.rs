//! The scenarios through Telamon's public API: `Process` → `Context` → router → in-memory bus.

use std::time::Instant;

use telamon_process::{ConfigLoader, Process, RunningProcess};
use telamon_sdk::{HandlerError, Topic};

use crate::measurement::{Measurement, gathered};
use crate::message::{BenchMsg, now_ns};
use crate::request_clock::RequestClock;

const SYSTEM: &str = "telamon";

async fn start(queue: usize) -> anyhow::Result<RunningProcess<BenchMsg>> {
    let config = ConfigLoader::new()
        .embedded(format!(
            "[message-bus.internal]\nclass = \"in-memory\"\nsubscriber-queue-size = {queue}\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"internal\"\n"
        ))
        .env_prefix(None)
        .load()?;
    Ok(Process::<BenchMsg>::new(config).start().await?)
}

/// One publisher, one subscriber per pattern; every subscriber gets all `n` messages.
pub(crate) async fn fan_out(
    scenario: &'static str,
    patterns: &[&str],
    n: u64,
    queue: usize,
) -> anyhow::Result<Measurement> {
    let process = start(queue).await?;
    let ctx = process.context("bench");
    let mut receivers = Vec::new();
    for p in patterns {
        let mut sub = ctx.subscribe(*p).await?;
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n as usize);
            while let Some(d) = sub.recv().await {
                latencies.push(now_ns() - d.message().sent_ns);
                if latencies.len() as u64 == n {
                    break;
                }
            }
            (latencies, Instant::now())
        }));
    }
    let topic = Topic::new("perf.test")?;
    let started = Instant::now();
    for i in 0..n {
        ctx.publish(&topic, BenchMsg::new(i)).await?;
    }
    let m = gathered(scenario, SYSTEM, started, n, receivers).await?;
    process.stop().await;
    Ok(m)
}

/// One requester keeping `in_flight` echo requests outstanding.
pub(crate) async fn request(n: u64, in_flight: usize) -> anyhow::Result<Measurement> {
    let process = start(1024).await?;
    let ctx = process.context("bench");
    ctx.handle("perf.request", |r| async move {
        Ok::<_, HandlerError>(r.into_message())
    })
    .await?;
    let topic = Topic::new("perf.request")?;
    let (ctx, topic) = (&ctx, &topic);
    let clock = RequestClock::new(n)
        .drive(in_flight, |i| ctx.request(topic, BenchMsg::new(i)))
        .await?;
    let m = clock.finish("inproc-request", SYSTEM);
    process.stop().await;
    Ok(m)
}

/// Starts a process with one idle subscriber, for the idle-RSS figure.
pub(crate) async fn idle() -> anyhow::Result<()> {
    let process = start(1024).await?;
    let ctx = process.context("idle");
    let _sub = ctx.subscribe("idle.#").await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    println!("{}", crate::measurement::rss_mb());
    process.stop().await;
    Ok(())
}

async fn start_rabbit(exchange: &str, delivery: &str) -> anyhow::Result<RunningProcess<BenchMsg>> {
    let config = ConfigLoader::new()
        .embedded(format!(
            "[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"{}\"\nexchange = \"{exchange}\"\ndelivery = \"{delivery}\"\nprefetch = 256\nconfirm-window = 1024\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n",
            crate::broker::url()
        ))
        .env_prefix(None)
        .load()?;
    let process = Process::<BenchMsg>::new(config).start().await?;
    anyhow::ensure!(
        process.bus_stats()[0].1.connected,
        "RabbitMQ is not reachable"
    );
    Ok(process)
}

/// Publish → consume through RabbitMQ: at-least-once (confirms, persistent,
/// acked; system `telamon`) or at-most-once (Caryatid's guarantee; system
/// `telamon-at-most-once`).
pub(crate) async fn rabbit_one_to_one(n: u64, at_least_once: bool) -> anyhow::Result<Measurement> {
    let (delivery, system) = if at_least_once {
        ("at-least-once", SYSTEM)
    } else {
        ("at-most-once", "telamon-at-most-once")
    };
    let process = start_rabbit(&crate::broker::unique("telamon"), delivery).await?;
    let ctx = process.context("bench");
    let mut sub = ctx.subscribe("perf.#").await?;
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        while let Some(d) = sub.recv().await {
            latencies.push(now_ns() - d.message().sent_ns);
            if latencies.len() as u64 == n {
                break;
            }
        }
        (latencies, Instant::now())
    });
    let topic = Topic::new("perf.test")?;
    let started = Instant::now();
    for i in 0..n {
        ctx.publish(&topic, BenchMsg::new(i)).await?;
    }
    let m = gathered("rabbit-1to1", system, started, n, vec![receiver]).await?;
    process.stop().await;
    Ok(m)
}

/// Sequential requests (one in flight) through RabbitMQ to a handler.
pub(crate) async fn rabbit_request(n: u64) -> anyhow::Result<Measurement> {
    let process = start_rabbit(&crate::broker::unique("telamonreq"), "at-least-once").await?;
    let ctx = process.context("bench");
    ctx.handle("perf.request", |r| async move {
        Ok::<_, HandlerError>(r.into_message())
    })
    .await?;
    let topic = Topic::new("perf.request")?;
    let (ctx, topic) = (&ctx, &topic);
    let clock = RequestClock::new(n)
        .drive(1, |i| ctx.request(topic, BenchMsg::new(i)))
        .await?;
    let m = clock.finish("rabbit-request", SYSTEM);
    process.stop().await;
    Ok(m)
}
