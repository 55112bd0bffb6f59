//! The scenarios through Telamon's public API: `Process` → `Context` → router → in-memory bus.

use std::time::Instant;

use telamon_process::{ConfigLoader, Process, RunningProcess};
use telamon_sdk::{HandlerError, Topic};

use crate::measurement::{IdleSubs, Measurement, gathered};
use crate::message::{BenchMsg, now_ns};
use crate::request_clock::RequestClock;

const SYSTEM: &str = "telamon";

async fn start(queue: usize) -> anyhow::Result<RunningProcess<BenchMsg>> {
    start_with(queue, "").await
}

/// As [`start`], with `extra` top-level TOML (a `[metrics]` section).
async fn start_with(queue: usize, extra: &str) -> anyhow::Result<RunningProcess<BenchMsg>> {
    let config = ConfigLoader::new()
        .embedded(format!(
            "[message-bus.internal]\nclass = \"in-memory\"\nsubscriber-queue-size = {queue}\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"internal\"\n{extra}"
        ))
        .env_prefix(None)
        .load()?;
    Ok(Process::<BenchMsg>::new(config).start().await?)
}

/// [`fan_out`] with metrics recorded (system `telamon-metrics-on`: a
/// `[metrics]` section, served on a free port) or not (`telamon-metrics-off`:
/// the same process as `telamon`, measured again in the same run).
pub(crate) async fn fan_out_metrics(
    scenario: &'static str,
    patterns: &[&str],
    n: u64,
    queue: usize,
    on: bool,
) -> anyhow::Result<Measurement> {
    let (extra, system) = if on {
        (
            "[metrics]\naddress = \"127.0.0.1:0\"\n",
            "telamon-metrics-on",
        )
    } else {
        ("", "telamon-metrics-off")
    };
    fan_out_with(scenario, patterns, n, queue, extra, system).await
}

/// One publisher, one subscriber per pattern; every subscriber gets all `n` messages.
pub(crate) async fn fan_out(
    scenario: &'static str,
    patterns: &[&str],
    n: u64,
    queue: usize,
) -> anyhow::Result<Measurement> {
    fan_out_with(scenario, patterns, n, queue, "", SYSTEM).await
}

/// [`fan_out`] on a process with `extra` config, measured as `system`.
async fn fan_out_with(
    scenario: &'static str,
    patterns: &[&str],
    n: u64,
    queue: usize,
    extra: &str,
    system: &'static str,
) -> anyhow::Result<Measurement> {
    let process = start_with(queue, extra).await?;
    let ctx = process.context("bench");
    let m = fan_out_on(&ctx, scenario, system, patterns, n).await?;
    process.stop().await;
    Ok(m)
}

/// One publisher on `perf.test`, one subscriber per pattern, on a running process.
async fn fan_out_on(
    ctx: &telamon_sdk::Context<BenchMsg>,
    scenario: &'static str,
    system: &'static str,
    patterns: &[&str],
    n: u64,
) -> anyhow::Result<Measurement> {
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
    gathered(scenario, system, started, n, receivers).await
}

/// Where `many_subs` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ManySubsBus {
    InProcess,
    /// RabbitMQ at-least-once; `shared_queue = false` is system
    /// `telamon-queue-per-sub` (a queue and a consumer per subscription).
    Rabbit {
        shared_queue: bool,
    },
}

/// `inproc-many-subs-N` / `rabbit-many-subs-N`: `idle` subscriptions on
/// distinct exact topics `other.<i>.x` that no message matches, then one
/// publisher and one subscriber on `perf.test` beside them.
pub(crate) async fn many_subs(
    scenario: &'static str,
    idle: u64,
    n: u64,
    bus: ManySubsBus,
) -> anyhow::Result<Measurement> {
    let rabbit = bus != ManySubsBus::InProcess;
    let system = match bus {
        ManySubsBus::Rabbit {
            shared_queue: false,
        } => "telamon-queue-per-sub",
        _ => SYSTEM,
    };
    let exchange = crate::broker::unique(&format!("{system}-many-{idle}"));
    let process = match bus {
        ManySubsBus::Rabbit { shared_queue } => {
            let extra = format!("shared-queue = {shared_queue}\n");
            start_rabbit_with(&exchange, "at-least-once", &extra).await?
        }
        ManySubsBus::InProcess => start(1024).await?,
    };
    let ctx = process.context("bench");
    let started = Instant::now();
    let subs = idle_subscriptions(&ctx, idle).await?;
    let created = started.elapsed();
    // Every queue this process declares is named after its exchange; counted
    // while the idle subscriptions exist (the reply queue included).
    let broker_queues = if rabbit {
        Some(crate::broker::queue_count(&format!("{exchange}."))?)
    } else {
        None
    };
    let mut m = fan_out_on(&ctx, scenario, system, &["perf.test"], n).await?;
    m.idle_subs = Some(IdleSubs {
        n: idle,
        created_ms: created.as_secs_f64() * 1000.0,
        bytes_each: if idle > 0 && !rabbit {
            Some(crate::bytes_per_subscription(SYSTEM, idle)?)
        } else {
            None
        },
        broker_queues,
    });
    drop(subs);
    process.stop().await;
    Ok(m)
}

/// `n` subscriptions on distinct exact topics `other.<i>.x`, made one by one.
async fn idle_subscriptions(
    ctx: &telamon_sdk::Context<BenchMsg>,
    n: u64,
) -> anyhow::Result<Vec<telamon_sdk::Subscription<BenchMsg>>> {
    let mut subs = Vec::with_capacity(n as usize);
    for i in 0..n {
        subs.push(ctx.subscribe(format!("other.{i}.x")).await?);
    }
    Ok(subs)
}

/// In a fresh process: the resident memory `n` idle in-process
/// subscriptions add, per subscription.
pub(crate) async fn idle_subscriptions_memory(n: u64) -> anyhow::Result<f64> {
    let process = start(1024).await?;
    let ctx = process.context("bench");
    let before = crate::measurement::rss_bytes();
    let subs = idle_subscriptions(&ctx, n).await?;
    let after = crate::measurement::rss_bytes();
    drop(subs);
    process.stop().await;
    Ok((after - before) / n.max(1) as f64)
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
    start_rabbit_with(exchange, delivery, "").await
}

/// As [`start_rabbit`], with `extra` lines in the bus table.
async fn start_rabbit_with(
    exchange: &str,
    delivery: &str,
    extra: &str,
) -> anyhow::Result<RunningProcess<BenchMsg>> {
    let config = ConfigLoader::new()
        .embedded(format!(
            "[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"{}\"\nexchange = \"{exchange}\"\ndelivery = \"{delivery}\"\nprefetch = 256\nconfirm-window = 1024\n{extra}\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n",
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
/// acked; system `telamon`, or `telamon-queue-per-sub` with
/// `shared-queue = false`) or at-most-once (Caryatid's guarantee; system
/// `telamon-at-most-once`).
pub(crate) async fn rabbit_one_to_one(n: u64, system: &'static str) -> anyhow::Result<Measurement> {
    let delivery = match system {
        "telamon-at-most-once" => "at-most-once",
        _ => "at-least-once",
    };
    let extra = match system {
        "telamon-queue-per-sub" => "shared-queue = false\n",
        _ => "",
    };
    let exchange = crate::broker::unique(system);
    let process = start_rabbit_with(&exchange, delivery, extra).await?;
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
