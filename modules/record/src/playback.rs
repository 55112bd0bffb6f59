//! `playback`: publishes the messages of a recording again, on their topics,
//! in their order — as fast as the bus takes them, or at the recorded pace
//! (optionally N× faster).
//!
//! # Under stress
//!
//! - **A truncated or corrupt recording**: everything valid before the
//!   damage is played; then an `error` line says at which byte and record it
//!   stopped (`telamon_playback_damaged` = 1), and playback ends.
//! - **A slow bus**: publishing waits as any publisher does; at the recorded
//!   pace a late message is sent at once and the pace is kept from the
//!   recording's start, so delays do not add up.
//! - **A record that does not fit the message type or names no valid
//!   topic**: counted as damage too — playback stops there and says so.
//! - **Done**: logged with the number of records; with `stop-when-done` the
//!   process is asked to stop.

use std::fs::File;
use std::io::BufReader;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use telamon_sdk::{Context, Message, Module, ModuleError, Topic};

use crate::recording::{Format, Reader};

/// How fast a recording is played.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pace {
    /// As fast as the bus takes the messages.
    #[default]
    Fast,
    /// With the gaps between messages as recorded, divided by `speed`.
    Recorded,
}

/// `[module.<id>]` of a playback.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PlaybackConfig {
    /// The recording.
    pub file: PathBuf,
    /// `"json-lines"` or `"cbor"`.
    pub format: Format,
    /// `"fast"` or `"recorded"`.
    pub pace: Pace,
    /// With `pace = "recorded"`: how many times faster than recorded (> 0).
    pub speed: f64,
    /// Ask the process to stop once everything is played.
    pub stop_when_done: bool,
}

impl Default for PlaybackConfig {
    fn default() -> Self {
        PlaybackConfig {
            file: PathBuf::from("recording.jsonl"),
            format: Format::JsonLines,
            pace: Pace::Fast,
            speed: 1.0,
            stop_when_done: false,
        }
    }
}

/// The playback, for message type `M`.
#[derive(Debug)]
pub struct Playback<M> {
    config: PlaybackConfig,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Module<M> for Playback<M> {
    const NAME: &'static str = "playback";
    const DESCRIPTION: &'static str = "publishes the messages of a recording again";
    type Config = PlaybackConfig;

    fn new(config: PlaybackConfig) -> Result<Self, ModuleError> {
        if !(config.speed.is_finite() && config.speed >= 1e-3) {
            return Err(ModuleError::new(
                "`speed` must be a number of at least 0.001",
            ));
        }
        Ok(Playback {
            config,
            _message: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let path = self.config.file.display().to_string();
        let file = File::open(&self.config.file)
            .map_err(|e| ModuleError::new(format!("cannot open `{path}`: {e}")))?;
        let reader = Reader::<_, M>::new(BufReader::new(file), self.config.format);
        let damaged = ctx.gauge(
            "telamon_playback_damaged",
            "1 when the recording is damaged and playback stopped before its end.",
            &[],
        );
        let played = ctx.counter(
            "telamon_playback_records_total",
            "Records published again.",
            &[],
        );
        let config = self.config.clone();
        let task_ctx = ctx.clone();
        ctx.run(async move {
            let id = task_ctx.id().to_owned();
            let started = tokio::time::Instant::now();
            let mut first_at = None;
            let mut count = 0u64;
            for next in reader {
                let entry = match next {
                    Ok(entry) => entry,
                    Err(e) => {
                        damaged.set(1);
                        tracing::error!(module = %id, file = %path, offset = e.offset, record = e.record, played = count, "{e}; playback stops here");
                        break;
                    }
                };
                let topic = match Topic::new(&entry.topic) {
                    Ok(t) => t,
                    Err(e) => {
                        damaged.set(1);
                        tracing::error!(module = %id, file = %path, record = count + 1, topic = %entry.topic, error = %e, "a record names no valid topic; playback stops here");
                        break;
                    }
                };
                if config.pace == Pace::Recorded {
                    let first = *first_at.get_or_insert(entry.at_micros);
                    let offset = entry.at_micros.saturating_sub(first) as f64 / config.speed;
                    tokio::time::sleep_until(started + Duration::from_secs_f64(offset / 1e6)).await;
                }
                if let Err(e) = task_ctx.publish(topic, entry.payload).await {
                    tracing::warn!(module = %id, record = count + 1, error = %e, "a played message was not published");
                }
                count += 1;
                played.inc();
                if count.is_multiple_of(64) {
                    // Fast pace on an in-memory bus never waits: let the
                    // subscribers (and a stop) run.
                    tokio::task::yield_now().await;
                }
            }
            tracing::info!(module = %id, file = %path, records = count, "playback done");
            if config.stop_when_done {
                task_ctx.request_stop();
            }
        });
        Ok(())
    }
}
