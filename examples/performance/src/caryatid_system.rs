//! The same scenarios through the published Caryatid 0.14 crates: its `Process`,
//! routing bus and in-memory bus, driven through the `Context` its modules get.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use caryatid_sdk::{Context, Module, ModuleRegistry};

use crate::measurement::{Measurement, gathered};
use crate::message::{BenchMsg, now_ns};
use crate::request_clock::RequestClock;

const SYSTEM: &str = "caryatid";

/// A Caryatid module that hands its context to the benchmark.
struct Harness {
    context: Mutex<Option<Arc<Context<BenchMsg>>>>,
}

#[caryatid_sdk::async_trait]
impl Module<BenchMsg> for Harness {
    async fn init(
        &self,
        context: Arc<Context<BenchMsg>>,
        _config: Arc<config::Config>,
    ) -> anyhow::Result<()> {
        *self.context.lock().expect("harness lock") = Some(context);
        Ok(())
    }

    fn get_name(&self) -> &'static str {
        "harness"
    }

    fn get_description(&self) -> &'static str {
        "benchmark harness"
    }
}

/// `queue: None` keeps Caryatid's own default subscriber queue (10).
async fn start(
    queue: Option<usize>,
) -> anyhow::Result<(
    caryatid_process::RunningProcess<BenchMsg>,
    Arc<Context<BenchMsg>>,
)> {
    let queue = queue.map_or(String::new(), |q| format!("subscriber-queue-size = {q}\n"));
    let toml = format!(
        "[module.harness]\n\n[message-router]\nrequest-timeout = 1\n\n[message-bus.internal]\nclass = \"in-memory\"\n{queue}\n[[message-router.route]]\npattern = \"#\"\nbus = \"internal\"\n"
    );
    start_with(&toml).await
}

async fn start_with(
    toml: &str,
) -> anyhow::Result<(
    caryatid_process::RunningProcess<BenchMsg>,
    Arc<Context<BenchMsg>>,
)> {
    let config = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()?;
    let harness = Arc::new(Harness {
        context: Mutex::new(None),
    });
    let mut process = caryatid_process::Process::<BenchMsg>::create(Arc::new(config)).await;
    process.register(harness.clone());
    let running = process.start().await?;
    let context = harness
        .context
        .lock()
        .expect("harness lock")
        .take()
        .ok_or_else(|| anyhow::anyhow!("caryatid did not initialise the harness"))?;
    Ok((running, context))
}

/// `queue: None` runs Caryatid as configured by default (system `caryatid`);
/// `Some(q)` with Telamon's queue depth (system `caryatid-q1024`).
pub(crate) async fn fan_out(
    scenario: &'static str,
    patterns: &[&str],
    n: u64,
    queue: Option<usize>,
) -> anyhow::Result<Measurement> {
    let system = if queue.is_some() {
        "caryatid-q1024"
    } else {
        SYSTEM
    };
    let (running, ctx) = start(queue).await?;
    let m = fan_out_on(&ctx, scenario, system, patterns, n).await?;
    running.stop().await?;
    Ok(m)
}

async fn fan_out_on(
    ctx: &Arc<Context<BenchMsg>>,
    scenario: &'static str,
    system: &'static str,
    patterns: &[&str],
    n: u64,
) -> anyhow::Result<Measurement> {
    let mut receivers = Vec::new();
    for p in patterns {
        let mut sub = ctx.subscribe(p).await?;
        receivers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(n as usize);
            while let Ok((_topic, m)) = sub.read().await {
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
        ctx.publish("perf.test", Arc::new(BenchMsg::new(i))).await?;
    }
    gathered(scenario, system, started, n, receivers).await
}

/// `inproc-many-subs-N` through Caryatid (its default queue depth): `idle`
/// subscriptions on `other.<i>.x`, then one publisher and one subscriber on
/// `perf.test`.
pub(crate) async fn many_subs(
    scenario: &'static str,
    idle: u64,
    n: u64,
) -> anyhow::Result<Measurement> {
    let (running, ctx) = start(None).await?;
    let started = Instant::now();
    let subs = idle_subscriptions(&ctx, idle).await?;
    let created = started.elapsed();
    let mut m = fan_out_on(&ctx, scenario, SYSTEM, &["perf.test"], n).await?;
    m.idle_subs = Some(crate::measurement::IdleSubs {
        n: idle,
        created_ms: created.as_secs_f64() * 1000.0,
        bytes_each: if idle > 0 {
            Some(crate::bytes_per_subscription(SYSTEM, idle)?)
        } else {
            None
        },
        broker_queues: None,
    });
    drop(subs);
    running.stop().await?;
    Ok(m)
}

/// `n` Caryatid subscriptions on distinct exact topics `other.<i>.x`, made one by one.
async fn idle_subscriptions(
    ctx: &Context<BenchMsg>,
    n: u64,
) -> anyhow::Result<Vec<Box<dyn caryatid_sdk::Subscription<BenchMsg>>>> {
    let mut subs = Vec::with_capacity(n as usize);
    for i in 0..n {
        subs.push(ctx.subscribe(&format!("other.{i}.x")).await?);
    }
    Ok(subs)
}

/// In a fresh process: the resident memory `n` idle Caryatid
/// subscriptions add, per subscription.
pub(crate) async fn idle_subscriptions_memory(n: u64) -> anyhow::Result<f64> {
    let (running, ctx) = start(None).await?;
    let before = crate::measurement::rss_bytes();
    let subs = idle_subscriptions(&ctx, n).await?;
    let after = crate::measurement::rss_bytes();
    drop(subs);
    running.stop().await?;
    Ok((after - before) / n.max(1) as f64)
}

pub(crate) async fn request(n: u64, in_flight: usize) -> anyhow::Result<Measurement> {
    let (running, ctx) = start(None).await?;
    let _handler = ctx.handle("perf.request", |m| async move { m });
    // Caryatid's handler subscribes from a spawned task, so the first requests
    // may go unheard (each then times out after 1 s): probe until one is answered.
    let mut answered = false;
    for _ in 0..5 {
        if ctx
            .request("perf.request", Arc::new(BenchMsg::new(0)))
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    anyhow::ensure!(answered, "caryatid handler never answered");
    let ctx = &ctx;
    let clock = RequestClock::new(n)
        .drive(in_flight, |i| {
            ctx.request("perf.request", Arc::new(BenchMsg::new(i)))
        })
        .await?;
    let m = clock.finish("inproc-request", SYSTEM);
    running.stop().await?;
    Ok(m)
}

pub(crate) async fn idle() -> anyhow::Result<()> {
    let (running, ctx) = start(None).await?;
    let _sub = ctx.subscribe("idle.#").await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    println!("{}", crate::measurement::rss_mb());
    running.stop().await?;
    Ok(())
}

async fn start_rabbit(
    exchange: &str,
) -> anyhow::Result<(
    caryatid_process::RunningProcess<BenchMsg>,
    Arc<Context<BenchMsg>>,
)> {
    let toml = format!(
        "[module.harness]\n\n[message-router]\nrequest-timeout = 5\n\n[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"{}\"\nexchange = \"{exchange}\"\n\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n",
        crate::broker::url()
    );
    start_with(&toml).await
}

/// Caryatid names its queues after topics: a per-run topic prefix keeps them apart.
fn topic_prefix() -> String {
    format!("perf{}", std::process::id())
}

pub(crate) async fn rabbit_one_to_one(n: u64) -> anyhow::Result<Measurement> {
    let (running, ctx) = start_rabbit(&crate::broker::unique("caryatid")).await?;
    let topic = format!("{}.test", topic_prefix());
    let mut sub = ctx.subscribe(&topic).await?;
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(n as usize);
        while let Ok((_t, m)) = sub.read().await {
            latencies.push(now_ns() - m.sent_ns);
            if latencies.len() as u64 == n {
                break;
            }
        }
        (latencies, Instant::now())
    });
    let started = Instant::now();
    for i in 0..n {
        ctx.publish(&topic, Arc::new(BenchMsg::new(i))).await?;
    }
    let m = gathered("rabbit-1to1", SYSTEM, started, n, vec![receiver]).await?;
    running.stop().await?;
    crate::broker::delete_queues(&topic_prefix()).await?;
    Ok(m)
}

pub(crate) async fn rabbit_request(n: u64) -> anyhow::Result<Measurement> {
    let (running, ctx) = start_rabbit(&crate::broker::unique("caryatidreq")).await?;
    let topic = format!("{}.request", topic_prefix());
    let _handler = ctx.handle(&topic, |m| async move { m });
    let mut answered = false;
    for _ in 0..5 {
        if ctx
            .request(&topic, Arc::new(BenchMsg::new(0)))
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    anyhow::ensure!(answered, "caryatid handler never answered");
    let (ctx, topic) = (&ctx, &topic);
    let clock = RequestClock::new(n)
        .drive(1, |i| ctx.request(topic, Arc::new(BenchMsg::new(i))))
        .await?;
    let m = clock.finish("rabbit-request", SYSTEM);
    running.stop().await?;
    let deleted = crate::broker::delete_queues(&topic_prefix()).await?;
    eprintln!("(caryatid left {deleted} queues on the broker; deleted)");
    Ok(m)
}
