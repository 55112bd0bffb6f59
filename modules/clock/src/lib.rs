//! The clock module: publishes a [`ClockTick`] on a topic at a fixed interval.
//!
//! ```toml
//! [module.clock]
//! topic = "clock.tick"   # default
//! interval = "1s"        # default; number of seconds or "250ms", "2m" …
//! count = 10             # optional: stop ticking after this many
//! ```
//!
//! The process's message type must implement `From<ClockTick>`:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use telamon_module_clock::{Clock, ClockTick};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Msg { Tick(ClockTick), Other(String) }
//! impl From<ClockTick> for Msg {
//!     fn from(t: ClockTick) -> Self { Msg::Tick(t) }
//! }
//! # fn register(p: telamon_process::Process<Msg>) -> telamon_process::Process<Msg> {
//! p.module::<Clock<Msg>>()
//! # }
//! ```
//!
//! # Under stress
//!
//! A tick whose publish is slow (a full subscriber queue under `wait`) delays
//! the next ones; missed ticks are skipped, not sent in a burst. A failed
//! publish is logged and the clock goes on.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use telamon_sdk::{Context, Message, Module, ModuleError, Topic};
use tokio::time::MissedTickBehavior;

/// One tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockTick {
    /// 1 for the first tick, then 2, 3 …
    pub number: u64,
    /// Wall-clock time of the tick, milliseconds since the Unix epoch.
    pub unix_millis: u64,
}

/// `[module.<id>]` of a clock.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClockConfig {
    /// Topic to publish on.
    pub topic: String,
    /// Time between ticks.
    #[serde(deserialize_with = "telamon_sdk::duration::deserialize")]
    pub interval: Duration,
    /// Stop after this many ticks; `None` ticks until the process stops.
    pub count: Option<u64>,
}

/// Default topic.
pub const DEFAULT_TOPIC: &str = "clock.tick";

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            topic: DEFAULT_TOPIC.to_owned(),
            interval: Duration::from_secs(1),
            count: None,
        }
    }
}

/// The clock module, for message type `M`.
#[derive(Debug)]
pub struct Clock<M> {
    topic: Topic,
    interval: Duration,
    count: Option<u64>,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message + From<ClockTick>> Module<M> for Clock<M> {
    const NAME: &'static str = "clock";
    const DESCRIPTION: &'static str = "publishes a tick at a fixed interval";
    type Config = ClockConfig;

    fn new(config: ClockConfig) -> Result<Self, ModuleError> {
        if config.interval.is_zero() {
            return Err(ModuleError::new("interval must be greater than zero"));
        }
        Ok(Clock {
            topic: Topic::new(&config.topic)?,
            interval: config.interval,
            count: config.count,
            _message: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let publisher = ctx.clone();
        ctx.run(async move {
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut number = 0;
            while self.count.is_none_or(|c| number < c) {
                ticker.tick().await;
                number += 1;
                let tick = ClockTick {
                    number,
                    unix_millis: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                };
                if let Err(e) = publisher.publish(&self.topic, M::from(tick)).await {
                    tracing::warn!(module = publisher.id(), error = %e, "tick not published");
                }
            }
        });
        Ok(())
    }
}
