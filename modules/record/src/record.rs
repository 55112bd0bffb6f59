//! `record`: appends every message on some patterns to a file.
//!
//! # Under stress
//!
//! - **A fast publisher**: the recorder's queue (`queue-size`) uses
//!   `drop-oldest` by default, so recording never slows production; what it
//!   misses is logged at `warn` with a count. `full-policy = "wait"` records
//!   everything and slows publishers down to the disk instead.
//! - **Stop**: the recorder drains its queue and flushes the file before the
//!   buses close. Writes are buffered and flushed every `flush-interval`
//!   (1 s): a crash loses at most that much, and leaves a last record that
//!   playback reports as cut short.
//! - **Several patterns**: one subscription each, taken in turn (a busy
//!   pattern cannot starve the others; the file keeps each pattern's order,
//!   not the exact interleaving between patterns); patterns that overlap are
//!   refused at start (a message matching both would be recorded twice).
//! - **A damaged end** (a crash mid-write): cut back to the last whole record,
//!   with a warning, before appending (JSON lines: only the tail is read;
//!   CBOR: the file is read once at start). A message that cannot be encoded is
//!   skipped with a warning.
//! - **Disk full or file unwritable**: opening fails `init` naming the file;
//!   a failed write later is logged at `error` and recording stops.

use std::fs::OpenOptions;
use std::io::BufWriter;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use telamon_sdk::{
    Context, Delivery, FullPolicy, Message, Module, ModuleError, Pattern, SubscribeOptions,
    Subscription,
};

use crate::recording::{Entry, Format, Writer};

/// `[module.<id>]` of a recorder.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RecordConfig {
    /// Patterns to record.
    pub patterns: Vec<String>,
    /// The file; created, or appended to when it exists.
    pub file: PathBuf,
    /// `"json-lines"` or `"cbor"`.
    pub format: Format,
    /// The recorder's queue.
    pub queue_size: usize,
    /// `"drop-oldest"` (never slows a publisher) or `"wait"` (records everything).
    pub full_policy: FullPolicy,
    /// How often buffered records reach the file.
    #[serde(deserialize_with = "telamon_sdk::duration::deserialize")]
    pub flush_interval: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            patterns: vec!["#".to_owned()],
            file: PathBuf::from("recording.jsonl"),
            format: Format::JsonLines,
            queue_size: 4096,
            full_policy: FullPolicy::DropOldest,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// The recorder, for message type `M`.
#[derive(Debug)]
pub struct Record<M> {
    config: RecordConfig,
    patterns: Vec<Pattern>,
    _message: PhantomData<fn() -> M>,
}

impl<M: Message> Module<M> for Record<M> {
    const NAME: &'static str = "record";
    const DESCRIPTION: &'static str = "records the messages on some patterns to a file";
    type Config = RecordConfig;

    fn new(config: RecordConfig) -> Result<Self, ModuleError> {
        if config.patterns.is_empty() {
            return Err(ModuleError::new("`patterns` names no pattern"));
        }
        if config.queue_size == 0 || config.flush_interval.is_zero() {
            return Err(ModuleError::new(
                "`queue-size` and `flush-interval` must be more than 0",
            ));
        }
        let patterns: Vec<Pattern> = config
            .patterns
            .iter()
            .map(Pattern::new)
            .collect::<Result<_, _>>()?;
        // A message matching two patterns would be recorded twice.
        let mut index = telamon_sdk::bus::PatternIndex::new();
        for (i, p) in patterns.iter().enumerate() {
            if let Some((_, other)) = index.overlapping(p).first() {
                return Err(ModuleError::new(format!(
                    "patterns `{other}` and `{p}` overlap: a message matching both would be recorded twice; record with one of them"
                )));
            }
            index.insert(i as u64, p, p.clone());
        }
        Ok(Record {
            config,
            patterns,
            _message: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let cannot = |e: std::io::Error| {
            ModuleError::new(format!("cannot open `{}`: {e}", self.config.file.display()))
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&self.config.file)
            .map_err(cannot)?;
        // A recording cut short by a crash would swallow what is appended now.
        let cut = crate::recording::repair(&file, self.config.format).map_err(cannot)?;
        if cut > 0 {
            tracing::warn!(module = %ctx.id(), file = %self.config.file.display(), bytes = cut, "the recording ended in a damaged record; cut it off before appending");
        }
        let mut writer = Writer::new(BufWriter::new(file), self.config.format);
        let options = SubscribeOptions::new()
            .capacity(self.config.queue_size)
            .policy(self.config.full_policy);
        let mut subs = Vec::new();
        for pattern in &self.patterns {
            subs.push(ctx.subscribe_with(pattern, options).await?);
        }
        let id = ctx.id().to_owned();
        let path = self.config.file.display().to_string();
        let interval = self.config.flush_interval;
        let task_ctx = ctx.clone();
        ctx.run_draining(async move {
            let mut flush = tokio::time::interval(interval);
            let mut reported = 0;
            let mut written = 0u64;
            loop {
                let d = tokio::select! {
                    d = recv_any(&mut subs) => match d {
                        Some(d) => d,
                        None => break,
                    },
                    _ = flush.tick() => {
                        if let Err(e) = writer.flush() {
                            tracing::error!(module = %id, file = %path, error = %e, "cannot write the recording; recording stops");
                            return;
                        }
                        continue;
                    }
                    _ = task_ctx.stopping() => {
                        // What is queued already is recorded too.
                        for sub in &mut subs {
                            while let Some(d) = sub.try_recv() {
                                if write(&mut writer, &d).is_ok() {
                                    written += 1;
                                }
                            }
                        }
                        break;
                    }
                };
                let lagged: u64 = subs.iter().map(Subscription::lagged).sum();
                if lagged > reported {
                    tracing::warn!(module = %id, missed = lagged - reported, "the recorder fell behind; messages were not recorded");
                    reported = lagged;
                }
                match write(&mut writer, &d) {
                    Ok(()) => written += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        tracing::warn!(module = %id, topic = %d.topic(), error = %e, "a message cannot be encoded; not recorded");
                    }
                    Err(e) => {
                        tracing::error!(module = %id, file = %path, error = %e, "cannot write the recording; recording stops");
                        return;
                    }
                }
            }
            match writer.flush() {
                Ok(()) => tracing::info!(module = %id, file = %path, records = written, "recording closed"),
                Err(e) => tracing::error!(module = %id, file = %path, error = %e, "cannot write the end of the recording"),
            }
        });
        Ok(())
    }
}

fn write<M: Message, W: std::io::Write>(
    writer: &mut Writer<W>,
    d: &Delivery<M>,
) -> std::io::Result<()> {
    let at_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.as_micros() as u64);
    writer.write(&Entry {
        at_micros,
        topic: d.topic().as_str().to_owned(),
        payload: &**d.message(),
    })
}

/// The next message of any of `subs`; `None` once all have ended. The
/// subscription asked first turns with every call, so a busy pattern cannot
/// starve the others.
async fn recv_any<M: Message>(subs: &mut Vec<Subscription<M>>) -> Option<Delivery<M>> {
    loop {
        match subs.len() {
            0 => return None,
            1 => return subs[0].recv().await,
            _ => subs.rotate_left(1),
        }
        let (next, i, _) =
            futures_util::future::select_all(subs.iter_mut().map(|s| Box::pin(s.recv()))).await;
        match next {
            Some(d) => return Some(d),
            None => {
                subs.remove(i);
            }
        }
    }
}
