//! Tracking event processors: `ListEvents` from the stored token, every
//! event published on a bus topic in token order, the token checkpointed in
//! a [`TokenStore`](crate::TokenStore) only after the bus took the event.
//!
//! Each published event carries headers: `axon-token`, `axon-aggregate-id`,
//! `axon-aggregate-type`, `axon-sequence`, `axon-timestamp`,
//! `axon-message-id`, `axon-payload-type`, `axon-payload-revision`,
//! `axon-processor`, and the event's metadata.
//!
//! # Guarantees
//!
//! - **No gap**: events are published in token order; the events a stream
//!   has already delivered go to the bus as one batch
//!   ([`Context::publish_batch`](telamon_sdk::Context::publish_batch), up to
//!   512 or half the permit window, whichever is less, and never past the
//!   next checkpoint; none is waited for), which
//!   subscribers receive one by one. What the bus does not take is retried
//!   (with back-off) until it is taken, and nothing after it is published
//!   meanwhile; the position moves past each event as the bus takes it.
//! - **No duplicate across a stop, a reconnect, a pause**: the position is
//!   kept in memory across reconnects and written at stop and pause; the
//!   stream resumes at the next token.
//! - **After a crash (`kill -9`)**: it resumes after the last durable
//!   checkpoint, so events published since then are published again —
//!   at most `2 × checkpoint-every` of them (a checkpoint is written after
//!   every `checkpoint-every` events, and at most one write is in flight
//!   while the next events are published), each with its `axon-token`, so a
//!   subscriber can drop what it has seen.
//!
//! # Under stress
//!
//! - **Slow subscriber**: permits are refilled (in batches of `refill`) only
//!   as the bus accepts events, so a slow subscriber slows the stream rather
//!   than piling events up in the bridge. AxonServer fails a stream left at
//!   zero permits for 120 s; it is then reopened at the next token.
//! - **Pause and stop** are noticed between batches: the events already
//!   received when one began (at most 512) are published first.
//! - **Memory**: the headers of one run (at most 512 events) share their
//!   allocations ([`HeaderBlock`]), freed when the last subscriber lets the
//!   last of them go: a subscriber that keeps one event's headers keeps its
//!   run's (about 0.4 KiB an event with the nine headers: some 200 KiB for a
//!   run of 512). Between runs the processor keeps only its run buffers
//!   (three vectors of at most 512 entries, about 20 KiB).
//! - **Undecodable event**: `undecodable = "stop"` (default) stops the
//!   processor at that token in an error state, reported to AxonServer and
//!   counted; a `start` instruction (or a restart) tries again.
//!   `"skip"` logs, counts and dead-letters it, then goes on.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde_json::json;
use telamon_axon_proto::pb::control::EventProcessorInfo;
use telamon_axon_proto::pb::control::event_processor_info::SegmentStatus;
use telamon_axon_proto::pb::event::{Event, EventWithToken, GetEventsRequest, GetLastTokenRequest};
use telamon_sdk::{Counter, Gauge, HeaderBlock, Headers, Message, Topic};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::bridge::Bridge;
use crate::config::{StartAt, TrackingRule, Undecodable};
use crate::connection::{Link, reopen_delay};
use crate::metadata::{self, header_pairs};
use crate::template::Vars;
use crate::token_store::TokenStore;

/// Type of the document published on `caught-up-topic`.
pub const CAUGHT_UP_TYPE: &str = "telamon.axon.CaughtUp";
/// Type of the document published on `dead-letter-topic`.
pub const UNDECODABLE_TYPE: &str = "telamon.axon.UndecodableEvent";

/// What the control stream reports of a processor, and how it steers it.
#[derive(Debug)]
pub(crate) struct ProcessorState {
    name: String,
    store: String,
    wanted: watch::Sender<bool>,
    running: watch::Sender<bool>,
    error: Mutex<Option<String>>,
    caught_up: AtomicBool,
    position: AtomicI64,
}

/// Every tracking processor of one bridge.
#[derive(Debug, Default)]
pub(crate) struct ProcessorRegistry {
    processors: Vec<Arc<ProcessorState>>,
}

impl ProcessorRegistry {
    pub(crate) fn add(&mut self, name: &str, store: String) -> Arc<ProcessorState> {
        let state = Arc::new(ProcessorState {
            name: name.to_owned(),
            store,
            wanted: watch::channel(true).0,
            running: watch::channel(false).0,
            error: Mutex::new(None),
            caught_up: AtomicBool::new(false),
            position: AtomicI64::new(-1),
        });
        self.processors.push(state.clone());
        state
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn get(&self, name: &str) -> Option<&Arc<ProcessorState>> {
        self.processors.iter().find(|p| p.name == name)
    }

    pub(crate) fn info(&self, name: &str) -> Option<EventProcessorInfo> {
        self.get(name).map(|p| p.info())
    }

    pub(crate) fn infos(&self) -> Vec<EventProcessorInfo> {
        self.processors.iter().map(|p| p.info()).collect()
    }

    /// Asks `name` to run or pause; true once it did, within `timeout`.
    pub(crate) async fn set_running(&self, name: &str, run: bool, timeout: Duration) -> bool {
        let Some(p) = self.get(name) else {
            return false;
        };
        if run {
            // A start also clears an error state: the processor tries again.
            *p.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        p.wanted.send_replace(run);
        let mut running = p.running.subscribe();
        tokio::time::timeout(timeout, running.wait_for(|r| *r == run))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl ProcessorState {
    fn info(&self) -> EventProcessorInfo {
        let running = *self.running.borrow();
        let error = self.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        EventProcessorInfo {
            processor_name: self.name.clone(),
            mode: "Tracking".to_owned(),
            active_threads: i32::from(running),
            running,
            error: error.is_some(),
            segment_status: vec![SegmentStatus {
                segment_id: 0,
                caught_up: self.caught_up.load(Ordering::Relaxed),
                replaying: false,
                one_part_of: 1,
                token_position: self.position.load(Ordering::Relaxed),
                error_state: error.unwrap_or_default(),
            }],
            available_threads: i32::from(!running),
            token_store_identifier: self.store.clone(),
            is_streaming_processor: true,
            load_balancing_strategy_name: "disabled".to_owned(),
        }
    }

    fn fail(&self, why: String) {
        tracing::error!(processor = %self.name, error = %why, "tracking processor stopped");
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        self.wanted.send_replace(false);
    }
}

/// Writes checkpoints: every `every` events and every `interval`, at most
/// one write in flight.
struct Checkpointer {
    store: Arc<dyn TokenStore>,
    processor: String,
    every: u32,
    interval: Duration,
    since: u32,
    last_write: Instant,
    written: i64,
    in_flight: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn new(store: Arc<dyn TokenStore>, rule: &TrackingRule, written: i64) -> Self {
        Checkpointer {
            store,
            processor: rule.processor.clone(),
            every: rule.checkpoint_every,
            interval: rule.checkpoint_interval,
            since: 0,
            last_write: Instant::now(),
            written,
            in_flight: None,
        }
    }

    /// `events` more, up to `token`, are published (or passed over).
    async fn passed(&mut self, token: i64, events: u32) {
        self.since = self.since.saturating_add(events);
        if self.since >= self.every || self.last_write.elapsed() >= self.interval {
            self.write(token, false).await;
        }
    }

    /// Events still to publish before the next checkpoint is due by count.
    fn due_in(&self) -> usize {
        self.every.saturating_sub(self.since).max(1) as usize
    }

    /// A quiet moment: write what is not written yet, if it is time.
    async fn tick(&mut self, position: i64) {
        if position > self.written && self.last_write.elapsed() >= self.interval {
            self.write(position, false).await;
        }
    }

    /// Writes `token` (waiting for the previous write first); with `wait`,
    /// returns once it is durable.
    async fn write(&mut self, token: i64, wait: bool) {
        if let Some(previous) = self.in_flight.take() {
            self.finished(previous.await);
        }
        self.since = 0;
        self.last_write = Instant::now();
        if token <= self.written || token < 0 {
            return;
        }
        self.written = token;
        let (store, processor) = (self.store.clone(), self.processor.clone());
        let mut write = Box::pin(async move {
            if let Err(e) = store.store(&processor, token).await {
                tracing::warn!(processor = %processor, token, error = %e, "checkpoint not written; events since the last one may be published again after a crash");
            }
        });
        // A store that is done at once (in memory) gets no task: a task
        // spawned per checkpoint made the runtime wake its other thread
        // for it each time (the subscriber woken next pushes it out of
        // this thread's next-task slot). A store that panics does not stop
        // the processor, as it did not when every write was a task.
        match AssertUnwindSafe(write.as_mut())
            .catch_unwind()
            .now_or_never()
        {
            Some(Ok(())) => return,
            Some(Err(_)) => return self.panicked(token),
            None => {}
        }
        let write = tokio::spawn(write);
        if wait {
            self.finished(write.await);
        } else {
            self.in_flight = Some(write);
        }
    }

    /// Looks at how a write made by a task ended.
    fn finished(&self, ended: Result<(), tokio::task::JoinError>) {
        if ended.is_err_and(|e| e.is_panic()) {
            self.panicked(self.written);
        }
    }

    fn panicked(&self, token: i64) {
        tracing::error!(processor = %self.processor, token, "the token store panicked writing a checkpoint; events since the last one may be published again after a crash");
    }
}

/// Metrics of one processor.
struct ProcessorMetrics {
    position: Gauge,
    lag: Gauge,
    caught_up: Gauge,
    permits: Gauge,
    undecodable: Counter,
    published: Counter,
}

/// Why one stream ended.
enum Ended {
    Stopping,
    Paused,
    Reopen(Option<tonic::Code>, String),
}

/// Runs one tracking processor until the bridge stops.
pub(crate) async fn run<M: Message>(
    b: Arc<Bridge<M>>,
    rule_index: usize,
    state: Arc<ProcessorState>,
    store: Arc<dyn TokenStore>,
) {
    let rule = &b.settings.tracking[rule_index];
    let labels = [("processor", rule.processor.as_str())];
    let metrics = ProcessorMetrics {
        position: b.ctx.gauge("telamon_axon_tracking_position", "Token of the last event a tracking processor published on the bus (-1: none).", &labels),
        lag: b.ctx.gauge("telamon_axon_tracking_lag", "Events in the store that a tracking processor has not published yet.", &labels),
        caught_up: b.ctx.gauge("telamon_axon_tracking_caught_up", "1 while a tracking processor has published every event in the store.", &labels),
        permits: b.ctx.gauge("telamon_axon_permits_available", "Permits AxonServer may still use on a stream (messages it may send before the bridge grants more).", &[("stream", &format!("events:{}", rule.processor))]),
        undecodable: b.counter("undecodable_events_total", "Events a tracking processor could not turn into a bus message.", &labels),
        published: b.counter("tracked_events_total", "Events a tracking processor published on the bus.", &labels),
    };
    if !b.ctx.started().await {
        return;
    }
    let stored = loop {
        match store.load(&rule.processor).await {
            Ok(t) => break t,
            Err(e) => {
                state.fail(format!("token store: {e}"));
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                    () = b.drain.cancelled() => return,
                }
            }
        }
    };
    *state.error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    state.wanted.send_replace(true);
    let mut next = match stored {
        Some(t) => t + 1,
        None => match rule.start {
            StartAt::Tail => 0,
            StartAt::Head => match head(&b).await {
                Some(h) => h + 1,
                None => return,
            },
        },
    };
    let position = next - 1;
    state.position.store(position, Ordering::Relaxed);
    metrics.position.set(position);
    tracing::info!(processor = %rule.processor, next_token = next, stored = ?stored, store = %store.describe(), "tracking processor starting");
    let mut checkpoints = Checkpointer::new(store, rule, stored.unwrap_or(-1));
    let mut attempt = 0u32;
    loop {
        if b.drain.is_cancelled() {
            break;
        }
        let wanted_now = *state.wanted.borrow();
        if !wanted_now {
            state.running.send_replace(false);
            let mut wanted = state.wanted.subscribe();
            tokio::select! {
                _ = async { wanted.wait_for(|w| *w).await.is_ok() } => continue,
                () = b.drain.cancelled() => break,
            }
        }
        let Some(link) = b.conn.next_link_or(&b.drain).await else {
            break;
        };
        let ended = stream(
            &b,
            rule,
            &state,
            &metrics,
            &link,
            &mut next,
            &mut checkpoints,
        )
        .await;
        metrics.permits.set(0);
        match ended {
            Ended::Stopping => break,
            Ended::Paused => {
                // Stored before it reports itself paused.
                checkpoints.write(next - 1, true).await;
                state.running.send_replace(false);
                tracing::info!(processor = %rule.processor, position = next - 1, "tracking processor paused");
            }
            Ended::Reopen(code, why) => {
                state.running.send_replace(false);
                let delay = reopen_delay(code).max(b.conn.backoff(attempt));
                attempt = attempt.saturating_add(1);
                if !link.lost.is_cancelled() {
                    tracing::warn!(processor = %rule.processor, reason = %why, retry_in = ?delay, "event stream lost; reopening at the next token");
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = b.drain.cancelled() => break,
                }
            }
        }
    }
    checkpoints.write(next - 1, true).await;
    state.running.send_replace(false);
    tracing::info!(processor = %rule.processor, position = next - 1, "tracking processor stopped; position stored");
}

/// The token of the newest event (−1 for an empty store); `None` when stopping.
async fn head<M: Message>(b: &Bridge<M>) -> Option<i64> {
    loop {
        let asked = b
            .call(
                "get-last-token",
                b.settings.raw.call_timeout,
                |link| async move {
                    Ok(link
                        .events()
                        .get_last_token(GetLastTokenRequest {})
                        .await?
                        .into_inner()
                        .token)
                },
            )
            .await;
        match asked {
            Ok(t) => return Some(t),
            Err(e) => {
                tracing::debug!(error = %e, "head token not read yet");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = b.drain.cancelled() => return None,
                }
            }
        }
    }
}

fn permits_request(
    b_client: &str,
    component: &str,
    processor: &str,
    token: i64,
    permits: i64,
) -> GetEventsRequest {
    GetEventsRequest {
        tracking_token: token,
        number_of_permits: permits,
        client_id: b_client.to_owned(),
        component_name: component.to_owned(),
        processor: processor.to_owned(),
        blacklist: Vec::new(),
        force_read_from_leader: false,
    }
}

/// One `ListEvents` call, from `next` on.
async fn stream<M: Message>(
    b: &Bridge<M>,
    rule: &TrackingRule,
    state: &ProcessorState,
    metrics: &ProcessorMetrics,
    link: &Link,
    next: &mut i64,
    checkpoints: &mut Checkpointer,
) -> Ended {
    let client = &b.settings.client_id;
    let component = &b.settings.raw.component;
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(permits_request(
        client,
        component,
        &rule.processor,
        *next,
        i64::from(rule.permits),
    ));
    let mut events = link.events();
    let opened = tokio::select! {
        r = events.list_events(UnboundedReceiverStream::new(rx)) => r,
        () = link.lost.cancelled() => return Ended::Reopen(None, "connection lost".into()),
        () = b.drain.cancelled() => return Ended::Stopping,
    };
    let mut inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(s) => return Ended::Reopen(Some(s.code()), s.to_string()),
    };
    state.running.send_replace(true);
    metrics.permits.set(i64::from(rule.permits));
    let mut wanted = state.wanted.subscribe();
    let mut head = Head::new(head_now(b, link).await.unwrap_or(-1));
    let mut probe = tokio::time::interval(
        b.settings
            .raw
            .processor_info_interval
            .min(Duration::from_secs(1)),
    );
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut used = 0u32;
    let mut topics = Topics::default();
    // A message read ahead while checking whether more are waiting.
    let mut ahead = None;
    let batch = batch_size(rule.permits);
    let mut run = Run::with_capacity(batch);
    head.quiet();
    loop {
        // Checked before a message read ahead too, so a stream that always
        // has more waiting still stops, pauses and notices a lost link.
        if b.drain.is_cancelled() {
            return Ended::Stopping;
        }
        if !*wanted.borrow_and_update() {
            return Ended::Paused;
        }
        if link.lost.is_cancelled() {
            return Ended::Reopen(None, "connection lost".into());
        }
        let first = match ahead.take() {
            Some(m) => m,
            None => tokio::select! {
                biased;
                () = b.drain.cancelled() => return Ended::Stopping,
                _ = async { wanted.wait_for(|w| !*w).await.is_ok() } => return Ended::Paused,
                () = link.lost.cancelled() => return Ended::Reopen(None, "connection lost".into()),
                () = tokio::time::sleep_until(head.probe_at().into()), if head.probe_due() => {
                    head.probed(head_now(b, link).await);
                    update_lag(b, rule, state, metrics, *next - 1, &head).await;
                    continue;
                }
                _ = probe.tick() => {
                    head.probed(head_now(b, link).await);
                    update_lag(b, rule, state, metrics, *next - 1, &head).await;
                    checkpoints.tick(*next - 1).await;
                    continue;
                }
                m = inbound.message() => m,
            },
        };
        // The events already received join the first, so the bus takes them
        // in one go; none is waited for. Each is decoded as it is read, so
        // what decoding allocates is freed before the next is read.
        let mut message = first;
        let mut consumed = 0u32;
        let mut track = Track {
            b,
            rule,
            state,
            metrics,
            next,
            checkpoints,
        };
        loop {
            consumed += 1;
            // Borrowed, not moved: an event is a few hundred bytes.
            let (token, event) = match &message {
                Ok(Some(EventWithToken { token, event })) => (*token, event.as_ref()),
                other => {
                    let ended = match other {
                        Err(s) => Ended::Reopen(Some(s.code()), s.to_string()),
                        Ok(_) => {
                            Ended::Reopen(None, "the server completed the event stream".into())
                        }
                    };
                    return match track.flush(&mut run).await {
                        Ok(()) => ended,
                        Err(e) => e,
                    };
                }
            };
            if let Err(e) = track.take(&mut run, &mut topics, token, event).await {
                return e;
            }
            if consumed as usize >= batch {
                break;
            }
            match inbound.message().now_or_never() {
                Some(m) => message = m,
                None => break,
            }
        }
        if let Err(e) = track.flush(&mut run).await {
            return e;
        }
        // Permits come back only for what the bus took (or passed over).
        metrics.permits.add(-i64::from(consumed));
        used += consumed;
        while used >= rule.refill {
            used -= rule.refill;
            metrics.permits.add(i64::from(rule.refill));
            let _ = tx.send(permits_request(
                client,
                component,
                &rule.processor,
                0,
                i64::from(rule.refill),
            ));
        }
        // More already waiting: behind. Nothing waiting: ask the store soon.
        match inbound.message().now_or_never() {
            Some(m) => {
                head.behind(*next - 1);
                ahead = Some(m);
            }
            None => head.quiet(),
        }
        update_lag(b, rule, state, metrics, *next - 1, &head).await;
    }
}

/// Most events published in one bus batch: those already received when the
/// first of them is handled, never more than this or half the permit window
/// (so the server has permits left to go on sending while a batch is
/// published), and never past the next checkpoint (so the crash bound stays
/// what it was for single events).
const MAX_BATCH: usize = 512;

/// The batch size for a permit window of `permits`.
fn batch_size(permits: u32) -> usize {
    (permits as usize / 2).clamp(1, MAX_BATCH)
}

/// Events ready for the bus, all on one topic, in token order.
struct Run<M> {
    topic: Option<Topic>,
    tokens: Vec<i64>,
    messages: Vec<Arc<M>>,
    /// The messages' headers, one set each, sharing the run's allocations.
    headers: HeaderBlock,
    /// Messages paired with their headers while the bus is taking them.
    pending: Vec<(Arc<M>, Headers)>,
}

impl<M> Run<M> {
    fn with_capacity(batch: usize) -> Self {
        Run {
            topic: None,
            tokens: Vec::with_capacity(batch),
            messages: Vec::with_capacity(batch),
            headers: HeaderBlock::new(),
            pending: Vec::with_capacity(batch),
        }
    }
}

/// What publishing a run and moving the position on needs.
struct Track<'a, M> {
    b: &'a Bridge<M>,
    rule: &'a TrackingRule,
    state: &'a ProcessorState,
    metrics: &'a ProcessorMetrics,
    next: &'a mut i64,
    checkpoints: &'a mut Checkpointer,
}

impl<M: Message> Track<'_, M> {
    /// Publishes the run, retrying (with back-off) what the bus did not take
    /// until it takes it; the position moves past each event as it is taken.
    async fn flush(&mut self, run: &mut Run<M>) -> Result<(), Ended> {
        let Some(topic) = run.topic.take() else {
            return Ok(());
        };
        run.pending
            .extend(run.messages.drain(..).zip(run.headers.finish()));
        let mut attempt = 0u32;
        loop {
            // Drained (not moved) so the run's buffer is kept for the next.
            match self
                .b
                .ctx
                .publish_batch(&topic, run.pending.drain(..))
                .await
            {
                Ok(()) => {
                    if let Some(&last) = run.tokens.last() {
                        let n = run.tokens.len();
                        self.passed(last, n, n).await;
                    }
                    run.tokens.clear();
                    return Ok(());
                }
                Err(e) => {
                    let taken = e.published().min(run.tokens.len());
                    if taken > 0 {
                        self.passed(run.tokens[taken - 1], taken, taken).await;
                        run.tokens.drain(..taken);
                    }
                    if e.is_closed() {
                        return Err(Ended::Stopping);
                    }
                    let delay = self.b.conn.backoff(attempt);
                    attempt = attempt.saturating_add(1);
                    tracing::warn!(processor = %self.rule.processor, next = *self.next, topic = %topic, error = %e, retry_in = ?delay, "events not taken by the bus; trying again (nothing after them is published meanwhile)");
                    run.pending.extend(e.into_unpublished());
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.b.drain.cancelled() => return Err(Ended::Stopping),
                    }
                }
            }
        }
    }

    /// Adds the event at `token` to `run` — publishing the run first when
    /// it is full or on another topic — or, when it cannot be published,
    /// handles it as `undecodable` says and moves past it; an event seen
    /// before is skipped.
    async fn take(
        &mut self,
        run: &mut Run<M>,
        topics: &mut Topics,
        token: i64,
        event: Option<&Event>,
    ) -> Result<(), Ended> {
        let (b, rule) = (self.b, self.rule);
        let expected = run.tokens.last().map_or(*self.next, |t| t + 1);
        if token < expected {
            tracing::debug!(processor = %rule.processor, token, next = expected, "event seen before skipped");
            return Ok(());
        }
        if token > expected {
            tracing::warn!(processor = %rule.processor, expected, got = token, "the event store skipped tokens");
        }
        let prepared = match event {
            Some(event) => prepare(b, rule, topics, event).map(|(topic, m)| (topic, m, event)),
            None => Err(None),
        };
        match prepared {
            Ok((topic, message, event)) => {
                let full = run.messages.len() >= self.checkpoints.due_in();
                let other = run.topic.as_ref().is_some_and(|t| !same_topic(t, topic));
                if full || other {
                    self.flush(run).await?;
                }
                if run.topic.is_none() {
                    run.topic = Some(topic.clone());
                }
                run.tokens.push(token);
                run.messages.push(Arc::new(message));
                push_headers(&mut run.headers, rule, token, event);
            }
            Err(bad) => {
                self.flush(run).await?;
                if let Some(bad) = bad {
                    match undecodable(b, rule, self.state, self.metrics, token, bad).await {
                        Undecoded::Skipped => {}
                        Undecoded::Stopped => return Err(Ended::Paused),
                        Undecoded::Stopping => return Err(Ended::Stopping),
                    }
                }
                // Not published, but passed: the position moves on.
                self.passed(token, 1, 0).await;
            }
        }
        Ok(())
    }

    /// `events` more, up to `token`, are behind the processor, `published`
    /// of them on the bus.
    async fn passed(&mut self, token: i64, events: usize, published: usize) {
        *self.next = token + 1;
        self.state.position.store(token, Ordering::Relaxed);
        self.metrics.position.set(token);
        self.metrics.published.add(published as u64);
        self.checkpoints.passed(token, events as u32).await;
    }
}

/// What a processor knows of the head of the event store.
struct Head {
    /// The newest token the store reported (or one known to exist past it).
    token: i64,
    /// Known to be behind the head.
    behind: bool,
    /// When to ask the store again (after a quiet moment).
    probe_at: Option<Instant>,
}

/// How long the stream must be quiet before the head is asked for.
const QUIET: Duration = Duration::from_millis(50);

impl Head {
    fn new(token: i64) -> Self {
        Head {
            token,
            behind: false,
            probe_at: None,
        }
    }

    /// More events were waiting after `position`: not at the head.
    fn behind(&mut self, position: i64) {
        self.token = self.token.max(position + 1);
        self.behind = true;
        self.probe_at = None;
    }

    /// Nothing waiting: ask the store after a quiet moment.
    fn quiet(&mut self) {
        self.probe_at = Some(Instant::now() + QUIET);
    }

    fn probe_due(&self) -> bool {
        self.probe_at.is_some()
    }

    fn probe_at(&self) -> Instant {
        self.probe_at.unwrap_or_else(Instant::now)
    }

    /// The store's answer (`None`: no answer; nothing changes).
    fn probed(&mut self, head: Option<i64>) {
        self.probe_at = None;
        if let Some(h) = head {
            self.token = h;
            self.behind = false;
        }
    }

    /// Events not published yet, as far as is known.
    fn lag(&self, position: i64) -> i64 {
        (self.token - position).max(i64::from(self.behind))
    }
}

async fn head_now<M: Message>(b: &Bridge<M>, link: &Link) -> Option<i64> {
    tokio::time::timeout(
        b.settings.raw.call_timeout,
        link.events().get_last_token(GetLastTokenRequest {}),
    )
    .await
    .ok()?
    .ok()
    .map(|r| r.into_inner().token)
}

async fn update_lag<M: Message>(
    b: &Bridge<M>,
    rule: &TrackingRule,
    state: &ProcessorState,
    metrics: &ProcessorMetrics,
    position: i64,
    head: &Head,
) {
    let lag = head.lag(position).max(0);
    metrics.lag.set(lag);
    let now = lag == 0;
    let was = state.caught_up.swap(now, Ordering::Relaxed);
    metrics.caught_up.set(i64::from(now));
    if now && !was {
        tracing::info!(processor = %rule.processor, position, "tracking processor caught up with the head of the event store");
        if let Some(topic) = &rule.caught_up_topic {
            let doc = json!({ "processor": rule.processor, "token": position });
            publish_document(b, topic, CAUGHT_UP_TYPE, doc, "caught-up signal").await;
        }
    }
}

/// Publishes a document the bridge writes itself (`what`: for the log);
/// a failure is logged, and `false` returned when the bus is closed.
async fn publish_document<M: Message>(
    b: &Bridge<M>,
    topic: &Topic,
    type_name: &str,
    doc: serde_json::Value,
    what: &str,
) -> bool {
    match b.codec.document(type_name, doc) {
        Ok(m) => match b.ctx.publish(topic, m).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "{what} not published");
                !e.is_closed()
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "{what} cannot be made");
            true
        }
    }
}

/// What became of an event that cannot be published.
enum Undecoded {
    Skipped,
    Stopped,
    Stopping,
}

/// Bus topics already rendered for a payload type: the topic depends only
/// on the type (and the processor), so each is rendered and checked once.
/// Bounded: a store with more distinct types than this starts over.
#[derive(Default)]
struct Topics {
    by_type: std::collections::HashMap<String, Topic>,
    /// The last type asked for, looked at before hashing (events of one
    /// type often come in a row).
    last: Option<(String, Topic)>,
}

/// Most payload types [`Topics`] remembers.
const TOPIC_CACHE: usize = 1024;

impl Topics {
    /// The topic for `type_name`, borrowed: the same type gives the same
    /// `Topic` (one allocation), so callers tell topics apart by address
    /// and clone one only when it changes — a clone per event would bump a
    /// count that subscribers' threads are decrementing at the same time.
    fn get(&mut self, rule: &TrackingRule, type_name: &str) -> Result<&Topic, String> {
        if self.last.as_ref().is_none_or(|(t, _)| t != type_name) {
            let topic = match self.by_type.get(type_name) {
                Some(t) => t.clone(),
                None => {
                    let text = rule
                        .topic
                        .render(Vars {
                            topic: None,
                            named: &[("type", type_name), ("processor", &rule.processor)],
                        })
                        .map_err(|e| e.to_string())?;
                    let topic = Topic::new(&text).map_err(|e| format!("topic `{text}`: {e}"))?;
                    if self.by_type.len() >= TOPIC_CACHE {
                        self.by_type.clear();
                    }
                    self.by_type.insert(type_name.to_owned(), topic.clone());
                    topic
                }
            };
            self.last = Some((type_name.to_owned(), topic));
        }
        match &self.last {
            Some((_, topic)) => Ok(topic),
            None => Err(format!("no topic for type `{type_name}`")),
        }
    }
}

/// The same `Topic` allocation (compared without reading it).
fn same_topic(a: &Topic, b: &Topic) -> bool {
    std::ptr::eq(a.as_str(), b.as_str())
}

/// An event that cannot become a bus message, and why.
struct Bad {
    event: Event,
    why: String,
}

/// Decodes one event and finds its topic (a copy of the event goes with
/// one that cannot be published).
fn prepare<'t, M: Message>(
    b: &Bridge<M>,
    rule: &TrackingRule,
    topics: &'t mut Topics,
    event: &Event,
) -> Result<(&'t Topic, M), Option<Box<Bad>>> {
    let type_name = event.payload.as_ref().map_or("", |p| p.r#type.as_str());
    let decoded = b
        .codec
        .decode(event.payload.as_ref())
        .map_err(|e| e.to_string())
        .and_then(|m| Ok((topics.get(rule, type_name)?, m)));
    decoded.map_err(|why| {
        Some(Box::new(Bad {
            why,
            event: event.clone(),
        }))
    })
}

/// Adds the headers of the event at `token` to `block`: its metadata, then
/// the bridge's own.
fn push_headers(block: &mut HeaderBlock, rule: &TrackingRule, token: i64, event: &Event) {
    let (mut token_text, mut timestamp, mut sequence) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let type_name = event.payload.as_ref().map_or("", |p| p.r#type.as_str());
    // On the stack: nine pairs at most.
    let mut extra = [("", ""); 9];
    extra[..5].copy_from_slice(&[
        (metadata::TOKEN, token_text.format(token)),
        (metadata::MESSAGE_ID, event.message_identifier.as_str()),
        (metadata::TIMESTAMP, timestamp.format(event.timestamp)),
        (metadata::PROCESSOR, rule.processor.as_str()),
        (metadata::PAYLOAD_TYPE, type_name),
    ]);
    let mut n = 5;
    if let Some(p) = &event.payload {
        extra[n] = (metadata::PAYLOAD_REVISION, p.revision.as_str());
        n += 1;
    }
    if !event.aggregate_type.is_empty() || !event.aggregate_identifier.is_empty() {
        extra[n..n + 3].copy_from_slice(&[
            (metadata::AGGREGATE_ID, event.aggregate_identifier.as_str()),
            (metadata::AGGREGATE_TYPE, event.aggregate_type.as_str()),
            (
                metadata::SEQUENCE,
                sequence.format(event.aggregate_sequence_number),
            ),
        ]);
        n += 3;
    }
    if event.meta_data.is_empty() {
        // Most events carry no metadata: the plain pairs, without the
        // metadata conversion's iterator.
        block.push(extra[..n].iter().copied());
    } else {
        block.push(header_pairs(&event.meta_data, &extra[..n]));
    }
}

/// Handles an event that cannot be published, as `undecodable` says.
async fn undecodable<M: Message>(
    b: &Bridge<M>,
    rule: &TrackingRule,
    state: &ProcessorState,
    metrics: &ProcessorMetrics,
    token: i64,
    bad: Box<Bad>,
) -> Undecoded {
    let Bad { event, why } = *bad;
    let type_name = event.payload.as_ref().map_or("", |p| p.r#type.as_str());
    metrics.undecodable.inc();
    let why = format!(
        "event {token} (type `{type_name}`, message {}): {why}",
        event.message_identifier
    );
    match rule.undecodable {
        Undecodable::Stop => {
            state.fail(why);
            Undecoded::Stopped
        }
        Undecodable::Skip => {
            tracing::error!(processor = %rule.processor, error = %why, "undecodable event skipped");
            if let Some(dead) = &rule.dead_letter_topic {
                let doc = json!({
                    "processor": rule.processor,
                    "token": token,
                    "messageId": event.message_identifier,
                    "payloadType": type_name,
                    "aggregateId": event.aggregate_identifier,
                    "sequence": event.aggregate_sequence_number,
                    "error": why,
                });
                if !publish_document(b, dead, UNDECODABLE_TYPE, doc, "dead letter").await {
                    return Undecoded::Stopping;
                }
            }
            Undecoded::Skipped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token_store::{MemoryTokenStore, TokenStoreError};
    use telamon_sdk::bus::BoxFuture;

    fn checkpointer(store: Arc<dyn TokenStore>) -> Checkpointer {
        Checkpointer {
            store,
            processor: "p".into(),
            every: 100,
            interval: Duration::from_secs(3600),
            since: 0,
            last_write: Instant::now(),
            written: -1,
            in_flight: None,
        }
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_done_at_once_is_written_without_a_task() {
        let store = MemoryTokenStore::default();
        let mut c = checkpointer(Arc::new(store.clone()));
        let before = alive_tasks();
        c.passed(98, 99).await;
        assert_eq!(store.load("p").await.unwrap(), None, "not due yet");
        c.passed(99, 1).await;
        assert_eq!(alive_tasks(), before, "no task for an in-memory write");
        assert!(c.in_flight.is_none());
        // Written before `passed` returned: nothing else has run meanwhile.
        assert_eq!(store.load("p").now_or_never().unwrap().unwrap(), Some(99));
    }

    /// A store whose writes finish only after the task has yielded, the
    /// more often the older the token (so writes made at once would land
    /// out of order); it records the order in which they land.
    #[derive(Default)]
    struct Slow {
        tokens: MemoryTokenStore,
        landed: Mutex<Vec<i64>>,
    }

    impl TokenStore for Slow {
        fn load<'a>(
            &'a self,
            processor: &'a str,
        ) -> BoxFuture<'a, Result<Option<i64>, TokenStoreError>> {
            self.tokens.load(processor)
        }

        fn store<'a>(
            &'a self,
            processor: &'a str,
            token: i64,
        ) -> BoxFuture<'a, Result<(), TokenStoreError>> {
            Box::pin(async move {
                for _ in 0..(200 - token) / 50 {
                    tokio::task::yield_now().await;
                }
                self.landed.lock().unwrap().push(token);
                self.tokens.store(processor, token).await
            })
        }

        fn describe(&self) -> String {
            "slow".into()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_that_waits_is_written_by_a_task_one_at_a_time() {
        let store = Arc::new(Slow::default());
        let mut c = checkpointer(store.clone());
        c.passed(99, 100).await;
        let first = c.in_flight.as_ref().expect("a write in flight");
        assert!(!first.is_finished());
        // The next write waits for the first, then is made and waited for.
        c.write(150, true).await;
        assert!(c.in_flight.is_none());
        assert_eq!(*store.landed.lock().unwrap(), [99, 150]);
        assert_eq!(store.load("p").await.unwrap(), Some(150));
    }

    /// A store that panics when told to write.
    struct Panicking;

    impl TokenStore for Panicking {
        fn load<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<i64>, TokenStoreError>> {
            Box::pin(async { Ok(None) })
        }

        fn store<'a>(&'a self, _: &'a str, _: i64) -> BoxFuture<'a, Result<(), TokenStoreError>> {
            panic!("a token store that panics")
        }

        fn describe(&self) -> String {
            "panicking".into()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_store_that_panics_does_not_stop_the_processor() {
        let mut c = checkpointer(Arc::new(Panicking));
        c.passed(99, 100).await;
        c.write(150, true).await;
        assert!(c.in_flight.is_none());
        // Counted as written: the next checkpoint is not tried again at once.
        assert_eq!(c.written, 150);
    }
}
