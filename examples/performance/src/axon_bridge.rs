//! The AxonServer scenarios through the bridge, against the in-process
//! test server: `axon-command` (bus request → bridge → server → bridge →
//! handler module and back), `axon-append` (batches of 100 events as bus
//! requests) and `axon-track` (a tracking processor publishing the store's
//! events on the bus). The message is the benchmark's `BenchMsg`, as JSON.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use telamon_module_axon::Axon;
use telamon_process::{ConfigLoader, Process, RunningProcess};
use telamon_sdk::{
    Context, HandlerError, Message, Module, ModuleError, SubscribeOptions, Subscription, Topic,
};
use telamon_testkit::RunningAxonServer;

use crate::measurement::{Measurement, WarmClock};
use crate::message::BenchMsg;
use crate::request_clock::RequestClock;

const SYSTEM: &str = "telamon";

async fn start<M: Message>(
    server: &RunningAxonServer,
    mappings: &str,
) -> anyhow::Result<RunningProcess<M>> {
    let config = ConfigLoader::new()
        .embedded(format!(
            "[module.axon]\nclass = \"axon\"\nservers = [\"{}\"]\ncomponent = \"bench\"\n{mappings}",
            server.address()
        ))
        .env_prefix(None)
        .load()?;
    Ok(Process::<M>::new(config)
        .module::<Axon<M>>()
        .start()
        .await?)
}

/// `n` commands, `in_flight` at a time, echoed by a module behind the bridge.
pub(crate) async fn command(
    server: &RunningAxonServer,
    n: u64,
    in_flight: usize,
) -> anyhow::Result<Measurement> {
    let process = start::<BenchMsg>(
        server,
        r#"
[[module.axon.send-command]]
pattern = "perf.command"
command = "Echo"
payload-type = "perf.BenchMsg"

[[module.axon.handle-command]]
command = "Echo"
topic = "perf.echo"
response-type = "perf.BenchMsg"
"#,
    )
    .await?;
    let ctx = process.context("bench");
    ctx.handle("perf.echo", |r| async move {
        Ok::<_, HandlerError>(r.into_message())
    })
    .await?;
    let topic = Topic::new("perf.command")?;
    let (ctx, topic) = (&ctx, &topic);
    let clock = RequestClock::new(n)
        .drive(in_flight, |i| async move {
            let echo = ctx.request(topic, BenchMsg::new(i)).await?;
            anyhow::ensure!(echo.seq == i, "wrong echo");
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    let m = clock.finish("axon-command", SYSTEM);
    process.stop().await;
    Ok(m)
}

/// `batches` requests of 100 events each, `in_flight` at a time; the rate is events/s.
pub(crate) async fn append(
    server: &RunningAxonServer,
    batches: u64,
    in_flight: usize,
) -> anyhow::Result<Measurement> {
    let process = start::<Value>(
        server,
        r#"
[[module.axon.append-events]]
pattern = "perf.append"
payload-type = "perf.BenchMsg"
"#,
    )
    .await?;
    let ctx = process.context("bench");
    let topic = Topic::new("perf.append")?;
    let (ctx, topic) = (&ctx, &topic);
    let clock = RequestClock::new(batches)
        .drive(in_flight, |b| async move {
            let batch: Vec<BenchMsg> = (0..crate::AXON_BATCH)
                .map(|i| BenchMsg::new(b * crate::AXON_BATCH + i))
                .collect();
            ctx.request(topic, serde_json::to_value(batch)?).await?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    let mut m = clock.finish("axon-append", SYSTEM);
    m.msgs_per_s = m.msgs_per_s.map(|r| r * crate::AXON_BATCH as f64);
    m.count = Some(batches * crate::AXON_BATCH);
    process.stop().await;
    Ok(m)
}

/// The subscription the `tracked` module made during `init`, so nothing
/// the processor publishes at start-up is missed.
static TRACKED: Mutex<Option<Subscription<BenchMsg>>> = Mutex::new(None);

/// Subscribes to `perf.tracked` before any module runs.
struct Tracked;

impl Module<BenchMsg> for Tracked {
    const NAME: &'static str = "tracked";
    type Config = serde::de::IgnoredAny;

    fn new(_: serde::de::IgnoredAny) -> Result<Self, ModuleError> {
        Ok(Tracked)
    }

    async fn init(self: Arc<Self>, ctx: Context<BenchMsg>) -> Result<(), ModuleError> {
        let sub = ctx
            .subscribe_with("perf.tracked", SubscribeOptions::new().capacity(4096))
            .await?;
        *TRACKED.lock().unwrap_or_else(|e| e.into_inner()) = Some(sub);
        Ok(())
    }
}

/// The first `warm_up + n` events of the store onto the bus through a
/// tracking processor started for this round: the time from event
/// `warm_up` received to the last and the CPU time the process spent
/// meanwhile, as the baseline's (the process start and the warm-up are not
/// counted).
pub(crate) async fn track(
    server: &RunningAxonServer,
    warm_up: u64,
    n: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let config = ConfigLoader::new()
        .embedded(format!(
            r#"
[module.axon]
class = "axon"
servers = ["{}"]
component = "bench"

[[module.axon.tracking]]
processor = "bench"
topic = "perf.tracked"
token-store = "memory"

[module.tracked]
class = "tracked"
"#,
            server.address()
        ))
        .env_prefix(None)
        .load()?;
    let process = Process::<BenchMsg>::new(config)
        .module::<Tracked>()
        .module::<Axon<BenchMsg>>()
        .start()
        .await?;
    let mut events = TRACKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| anyhow::anyhow!("the tracked module did not subscribe"))?;
    // The subscriber is a task on the runtime, as a module's is.
    let elapsed = tokio::spawn(async move {
        let mut clock = WarmClock::new(warm_up);
        while clock.seen() < warm_up + n {
            let Some(d) = events.recv().await else {
                anyhow::bail!("the subscription closed after {} events", clock.seen());
            };
            anyhow::ensure!(d.message().seq == clock.saw(), "out of order");
        }
        Ok(clock.elapsed())
    })
    .await??;
    process.stop().await;
    Ok(elapsed)
}
