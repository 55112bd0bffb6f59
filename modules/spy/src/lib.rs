//! The spy module: logs every message on a pattern, as JSON, at `info`.
//!
//! ```toml
//! [module.spy]
//! pattern = "#"          # default: everything
//! queue-size = 1024      # default
//! max-per-second = 100   # default: 0, no limit
//! max-length = 1024      # default: 0, whole payloads
//! ```
//!
//! # Under stress
//!
//! - **A fast publisher**: the spy subscribes with the `drop-oldest` policy,
//!   so it never slows a publisher; when it falls behind it skips messages
//!   and logs how many it missed.
//! - **A flood**: with `max-per-second = N` it logs at most N messages in
//!   each second (counted from the first message of the second) and then one
//!   line saying how many it did not log, so a busy topic cannot fill the
//!   disk.
//! - **Huge payloads**: with `max-length = N` a payload's JSON is cut at N
//!   bytes (on a character boundary) and the line says how long it was.

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
    /// Messages logged per second at most; 0: no limit.
    pub max_per_second: u32,
    /// Bytes of a payload's JSON logged at most; 0: all of it.
    pub max_length: usize,
}

impl Default for SpyConfig {
    fn default() -> Self {
        SpyConfig {
            pattern: "#".to_owned(),
            queue_size: 1024,
            max_per_second: 0,
            max_length: 0,
        }
    }
}

/// The spy module, for message type `M`.
#[derive(Debug)]
pub struct Spy<M> {
    pattern: Pattern,
    queue_size: usize,
    max_per_second: u32,
    max_length: usize,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Module<M> for Spy<M> {
    const NAME: &'static str = "spy";
    const DESCRIPTION: &'static str = "logs every message on a pattern";
    type Config = SpyConfig;

    fn new(config: SpyConfig) -> Result<Self, ModuleError> {
        if config.queue_size == 0 {
            return Err(ModuleError::new("`queue-size` must be at least 1"));
        }
        Ok(Spy {
            pattern: Pattern::new(&config.pattern)?,
            queue_size: config.queue_size,
            max_per_second: config.max_per_second,
            max_length: config.max_length,
            _message: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let options = SubscribeOptions::new()
            .capacity(self.queue_size)
            .policy(FullPolicy::DropOldest);
        let mut sub = ctx.subscribe_with(&self.pattern, options).await?;
        let id = ctx.id().to_owned();
        let mut limit = RateLimit::new(self.max_per_second);
        let max_length = self.max_length;
        ctx.run(async move {
            let mut reported_lag = 0;
            loop {
                let d = tokio::select! {
                    d = sub.recv() => match d {
                        Some(d) => d,
                        None => break,
                    },
                    // The end of a limited second: say what was not logged.
                    _ = limit.window_end() => {
                        limit.report(&id);
                        continue;
                    }
                };
                if sub.lagged() > reported_lag {
                    tracing::warn!(module = %id, missed = sub.lagged() - reported_lag, "spy fell behind");
                    reported_lag = sub.lagged();
                }
                if !limit.admit() {
                    continue;
                }
                match serde_json::to_string(&**d.message()) {
                    Ok(json) => {
                        let json = truncated(&json, max_length);
                        tracing::info!(module = %id, topic = %d.topic(), "{json}");
                    }
                    Err(e) => tracing::info!(module = %id, topic = %d.topic(), error = %e, "(not JSON-printable)"),
                }
            }
            limit.report(&id);
        });
        Ok(())
    }
}

/// `json` cut to at most `max` bytes on a character boundary, saying how long
/// it was; whole when `max` is 0 or it fits.
fn truncated(json: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if max == 0 || json.len() <= max {
        return json.into();
    }
    let mut end = max;
    while !json.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &json[..end], json.len()).into()
}

/// At most `max` messages per second, counted from the first message of each
/// second; what is skipped is counted and reported once the second is over.
#[derive(Debug)]
struct RateLimit {
    max: u32,
    window: Option<tokio::time::Instant>,
    logged: u32,
    skipped: u64,
}

impl RateLimit {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

    fn new(max: u32) -> Self {
        RateLimit {
            max,
            window: None,
            logged: 0,
            skipped: 0,
        }
    }

    /// Whether this message is logged.
    fn admit(&mut self) -> bool {
        if self.max == 0 {
            return true;
        }
        let now = tokio::time::Instant::now();
        if self.window.is_none_or(|start| now >= start + Self::WINDOW) {
            self.window = Some(now);
            self.logged = 0;
        }
        if self.logged < self.max {
            self.logged += 1;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// Resolves when a second in which messages were skipped is over (never otherwise).
    async fn window_end(&self) {
        match self.window {
            Some(start) if self.skipped > 0 => tokio::time::sleep_until(start + Self::WINDOW).await,
            _ => std::future::pending().await,
        }
    }

    /// Logs how many messages were not logged, and starts counting again.
    fn report(&mut self, id: &str) {
        if self.skipped > 0 {
            tracing::info!(module = %id, skipped = self.skipped, max_per_second = self.max, "{} messages not logged (max-per-second)", self.skipped);
            self.skipped = 0;
        }
        self.window = None;
    }
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn truncation_keeps_whole_characters_and_says_how_long_it_was() {
        assert_eq!(truncated("\"abc\"", 0), "\"abc\"");
        assert_eq!(truncated("\"abc\"", 5), "\"abc\"");
        assert_eq!(truncated("\"abcdef\"", 4), "\"abc… (8 bytes)");
        // `é` is two bytes: a cut inside it moves back to before it.
        assert_eq!(truncated("\"éé\"", 2), "\"… (6 bytes)");
    }
}
