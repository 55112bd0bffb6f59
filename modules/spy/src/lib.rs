//! The spy module: logs every message on a pattern, as JSON, at `info`.
//!
//! ```toml
//! [module.spy]
//! pattern = "#"        # default: everything
//! queue-size = 1024    # default
//! ```
//!
//! # Under stress
//!
//! The spy subscribes with the `drop-oldest` policy: it never slows a
//! publisher. When it falls behind it skips messages and logs how many it
//! missed.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Deserialize;
use telamon_sdk::{Context, FullPolicy, Message, Module, ModuleError, Pattern, SubscribeOptions};

/// `[module.<id>]` of a spy.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpyConfig {
    /// Pattern to watch.
    pub pattern: String,
    /// Queue capacity; beyond it the oldest messages are skipped.
    pub queue_size: usize,
}

impl Default for SpyConfig {
    fn default() -> Self {
        SpyConfig {
            pattern: "#".to_owned(),
            queue_size: 1024,
        }
    }
}

/// The spy module, for message type `M`.
#[derive(Debug)]
pub struct Spy<M> {
    pattern: Pattern,
    queue_size: usize,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Module<M> for Spy<M> {
    const NAME: &'static str = "spy";
    const DESCRIPTION: &'static str = "logs every message on a pattern";
    type Config = SpyConfig;

    fn new(config: SpyConfig) -> Result<Self, ModuleError> {
        Ok(Spy {
            pattern: Pattern::new(&config.pattern)?,
            queue_size: config.queue_size,
            _message: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let options = SubscribeOptions::new()
            .capacity(self.queue_size)
            .policy(FullPolicy::DropOldest);
        let mut sub = ctx.subscribe_with(&self.pattern, options).await?;
        let id = ctx.id().to_owned();
        ctx.run(async move {
            let mut reported_lag = 0;
            while let Some(d) = sub.recv().await {
                if sub.lagged() > reported_lag {
                    tracing::warn!(module = %id, missed = sub.lagged() - reported_lag, "spy fell behind");
                    reported_lag = sub.lagged();
                }
                match serde_json::to_string(&**d.message()) {
                    Ok(json) => tracing::info!(module = %id, topic = %d.topic(), "{json}"),
                    Err(e) => tracing::info!(module = %id, topic = %d.topic(), error = %e, "(not JSON-printable)"),
                }
            }
        });
        Ok(())
    }
}
