//! A Telamon process and a Caryatid 0.14 process on one RabbitMQ exchange.
//!
//! Caryatid's wire format is a topic exchange, routing key = topic, CBOR body
//! (minicbor-serde). Telamon writes the same CBOR (fixed-width floats; `()` as
//! `[]` with `cbor-unit = "empty-array"`), so with the exchange name set to
//! Caryatid's the two exchange pub-sub messages both ways. Requests do not cross: Caryatid correlates them through
//! `<topic>._request.<id>` topics, Telamon through AMQP `reply-to` and
//! `correlation-id` on a separate request exchange.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use caryatid_sdk::{Context as CaryatidContext, Module, ModuleRegistry};
use serde::{Deserialize, Serialize};
use telamon_process::{ConfigLoader, Process};

/// What both sides exchange. `Default` and `Clone` are Caryatid's bounds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Which sensor.
    pub sensor: String,
    /// A value that fits in an f16 — the case ciborium would shorten.
    pub value: f64,
    /// Whether the reading is valid.
    pub ok: bool,
}

struct Harness(Mutex<Option<Arc<CaryatidContext<Reading>>>>);

#[caryatid_sdk::async_trait]
impl Module<Reading> for Harness {
    async fn init(
        &self,
        context: Arc<CaryatidContext<Reading>>,
        _config: Arc<config::Config>,
    ) -> anyhow::Result<()> {
        *self.0.lock().expect("harness lock") = Some(context);
        Ok(())
    }
    fn get_name(&self) -> &'static str {
        "harness"
    }
    fn get_description(&self) -> &'static str {
        "interop harness"
    }
}

/// What each side received from the other.
#[derive(Debug)]
pub struct Exchanged {
    /// Published by Telamon, read by Caryatid.
    pub caryatid_got: Reading,
    /// Published by Caryatid, read by Telamon.
    pub telamon_got: Reading,
}

/// Runs both processes on `exchange` and sends one reading each way.
/// `prefix` keeps the topics (Caryatid names its queues after them) unique.
pub async fn exchange_both_ways(
    url: &str,
    exchange: &str,
    prefix: &str,
) -> anyhow::Result<Exchanged> {
    let t2c = format!("{prefix}.t2c");
    let c2t = format!("{prefix}.c2t");

    // Caryatid, as its users configure it.
    let toml = format!(
        "[module.harness]\n[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"{url}\"\nexchange = \"{exchange}\"\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n"
    );
    let config = config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()?;
    let harness = Arc::new(Harness(Mutex::new(None)));
    let mut caryatid = caryatid_process::Process::<Reading>::create(Arc::new(config)).await;
    caryatid.register(harness.clone());
    let caryatid = caryatid.start().await?;
    let cctx = harness
        .0
        .lock()
        .expect("harness lock")
        .take()
        .ok_or_else(|| anyhow::anyhow!("caryatid did not initialise"))?;
    let mut caryatid_sub = cctx.subscribe(&t2c).await?;

    // Telamon, with the exchange set to Caryatid's (declared non-durable, as Caryatid does).
    let config = ConfigLoader::new()
        .embedded(format!(
            "[message-bus.external]\nclass = \"rabbit-mq\"\nurl = \"{url}\"\nexchange = \"{exchange}\"\nexchange-durable = false\ncbor-unit = \"empty-array\"\ndelivery = \"at-least-once\"\n[[message-router.route]]\npattern = \"#\"\nbus = \"external\"\n"
        ))
        .env_prefix(None)
        .load()?;
    let telamon = Process::<Reading>::new(config).start().await?;
    let tctx = telamon.context("interop");
    let mut telamon_sub = tctx.subscribe(c2t.as_str()).await?;

    let to_caryatid = Reading {
        sensor: "telamon".into(),
        value: 1.5,
        ok: true,
    };
    tctx.publish(t2c.as_str(), to_caryatid).await?;
    let (_, caryatid_got) =
        tokio::time::timeout(Duration::from_secs(10), caryatid_sub.read()).await??;

    let to_telamon = Reading {
        sensor: "caryatid".into(),
        value: -0.25,
        ok: false,
    };
    cctx.publish(&c2t, Arc::new(to_telamon)).await?;
    let telamon_got = tokio::time::timeout(Duration::from_secs(10), telamon_sub.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("telamon subscription closed"))?;

    telamon.stop().await;
    caryatid.stop().await?;
    // Caryatid names its queues after the topic and never deletes them.
    let raw = lapin::Connection::connect(url, Default::default()).await?;
    let channel = raw.create_channel().await?;
    channel
        .queue_delete(t2c.as_str().into(), Default::default())
        .await?;
    let _ = raw.close(200, "done".into()).await;
    Ok(Exchanged {
        caryatid_got: (*caryatid_got).clone(),
        telamon_got: (**telamon_got.message()).clone(),
    })
}
