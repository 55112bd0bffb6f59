//! Per-topic counters and request latency, rendered as Prometheus text.
//!
//! Off unless `[metrics]` is configured; when off, the hot path does one
//! branch and nothing else. When on, each publish does one read-locked map
//! lookup per topic.
//!
//! # Under stress
//!
//! - **A topic per entity** (`orders.<id>.created`): the first
//!   `max-topics` distinct topics get series of their own; every later one
//!   is counted under `topic="#"` (no topic can be `#`), so memory and the
//!   number of Prometheus series stay bounded however many topics there are.
//! - **Odd topic text**: label values are escaped as the text format says
//!   (backslash, double quote, line feed).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use telamon_sdk::bus::{Instruments, QueueCounters};
use telamon_sdk::{Pattern, RequestError, Topic};

/// Counters of one topic.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct TopicCounters {
    /// Publishes accepted by the router.
    pub published: AtomicU64,
    /// Messages placed in subscriber queues.
    pub delivered: AtomicU64,
    /// Messages lost: pushed out of a full drop-oldest queue, or unrouted under `unrouted = "drop"`.
    pub dropped: AtomicU64,
}

/// Upper bounds of the request-latency histogram, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    10, 50, 100, 250, 500, 1_000, 5_000, 10_000, 50_000, 250_000, 1_000_000, 5_000_000,
];

/// Outcomes and latency of the requests on one topic.
#[derive(Debug, Default)]
pub(crate) struct RequestStats {
    ok: AtomicU64,
    handler_error: AtomicU64,
    timed_out: AtomicU64,
    no_responder: AtomicU64,
    other_error: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// Health of a bus that talks to a broker.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BusHealth {
    /// Connected to the broker now.
    pub connected: std::sync::atomic::AtomicBool,
    /// Connections re-established after a loss.
    pub reconnects: AtomicU64,
    /// Bodies rejected because they could not be decoded.
    pub malformed: AtomicU64,
    /// Subscription deliveries received from the broker (one per message per
    /// queue, however many local subscriptions it reached).
    pub received: AtomicU64,
}

/// Default `[metrics] max-topics`.
pub const DEFAULT_MAX_TOPICS: usize = 1000;

/// The label of the series that counts every topic past the cap.
pub const OVERFLOW_TOPIC: &str = "#";

/// The subscriptions whose lag is reported (ended ones until the next sweep).
#[derive(Debug, Default)]
struct Tracked {
    entries: Vec<(Pattern, Weak<QueueCounters>)>,
    /// Length of `entries` after its last sweep.
    swept_at: usize,
}

/// The process's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    enabled: bool,
    max_topics: usize,
    overflow: Arc<TopicCounters>,
    overflow_requests: Arc<RequestStats>,
    topics: RwLock<HashMap<Topic, Arc<TopicCounters>>>,
    requests: RwLock<HashMap<Topic, Arc<RequestStats>>>,
    subscriptions: Mutex<Tracked>,
    buses: Mutex<Vec<(String, Arc<BusHealth>)>>,
    unrouted: AtomicU64,
    instruments: std::sync::OnceLock<Arc<Instruments>>,
}

impl Metrics {
    /// A registry that records (`true`) or ignores everything (`false`).
    pub fn new(enabled: bool) -> Self {
        Metrics {
            enabled,
            max_topics: DEFAULT_MAX_TOPICS,
            ..Default::default()
        }
    }

    /// A registry that records, with series for at most `max_topics` topics.
    pub fn with_max_topics(max_topics: usize) -> Self {
        Metrics {
            enabled: true,
            max_topics,
            ..Default::default()
        }
    }

    /// Whether anything is recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The counters of `topic` (recorded or not).
    pub fn topic(&self, topic: &Topic) -> Arc<TopicCounters> {
        entry(&self.topics, topic, self.max_topics, &self.overflow)
    }

    /// Counts a publish accepted by the router.
    #[inline]
    pub fn published(&self, topic: &Topic) {
        if self.enabled {
            self.topic(topic).published.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts deliveries into subscriber queues, and messages pushed out of full ones.
    #[inline]
    pub fn delivered(&self, topic: &Topic, delivered: u64, dropped: u64) {
        if self.enabled && (delivered | dropped) != 0 {
            let c = self.topic(topic);
            c.delivered.fetch_add(delivered, Ordering::Relaxed);
            c.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Counts a publish that matched no route.
    pub fn unrouted(&self, topic: &Topic) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
        if self.enabled {
            self.topic(topic).dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes that matched no route (counted even when metrics are off).
    pub fn unrouted_total(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Reports a broker-backed bus's health (always, even with metrics off).
    pub fn register_bus(&self, id: &str, health: Arc<BusHealth>) {
        self.buses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id.to_owned(), health));
    }

    /// Renders the gauges and counters modules register through their
    /// contexts (`Context::gauge`, `Context::counter`) with the rest.
    pub fn attach_instruments(&self, instruments: Arc<Instruments>) {
        let _ = self.instruments.set(instruments);
    }

    /// Follows a subscription's lag counter while it lives.
    pub fn track_subscription(&self, pattern: &Pattern, counters: &Arc<QueueCounters>) {
        if self.enabled {
            let mut subs = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
            // Ended subscriptions are swept when the list has doubled since the
            // last sweep: amortised O(1) per subscription, not a scan each.
            if subs.entries.len() >= 2 * subs.swept_at.max(16) {
                subs.entries.retain(|(_, w)| w.strong_count() > 0);
                subs.swept_at = subs.entries.len();
            }
            subs.entries
                .push((pattern.clone(), Arc::downgrade(counters)));
        }
    }

    /// Records one request's outcome and latency.
    pub fn request<T>(&self, topic: &Topic, elapsed: Duration, outcome: &Result<T, RequestError>) {
        if !self.enabled {
            return;
        }
        let stats = entry(
            &self.requests,
            topic,
            self.max_topics,
            &self.overflow_requests,
        );
        let counter = match outcome {
            Ok(_) => &stats.ok,
            Err(RequestError::Handler { .. }) => &stats.handler_error,
            Err(RequestError::TimedOut { .. }) => &stats.timed_out,
            Err(e) if e.is_no_responder() => &stats.no_responder,
            Err(_) => &stats.other_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|b| us <= *b) {
            stats.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        stats.sum_us.fetch_add(us, Ordering::Relaxed);
        stats.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<(&str, &TopicCounters)> =
            topics.iter().map(|(t, c)| (t.as_str(), &**c)).collect();
        names.sort_by_key(|(t, _)| *t);
        if topics.len() >= self.max_topics {
            names.push((OVERFLOW_TOPIC, &self.overflow));
        }
        for (metric, help, pick) in [
            (
                "telamon_published_total",
                "Publishes accepted by the router.",
                0,
            ),
            (
                "telamon_delivered_total",
                "Messages placed in subscriber queues.",
                1,
            ),
            (
                "telamon_dropped_total",
                "Messages lost to full drop-oldest queues or unrouted drops.",
                2,
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (t, c) in &names {
                let v = [&c.published, &c.delivered, &c.dropped][pick].load(Ordering::Relaxed);
                let _ = writeln!(out, "{metric}{{topic=\"{}\"}} {v}", escape(t));
            }
        }
        drop(names);
        drop(topics);
        let _ = writeln!(
            out,
            "# HELP telamon_unrouted_total Publishes that matched no route.\n# TYPE telamon_unrouted_total counter\ntelamon_unrouted_total {}",
            self.unrouted_total()
        );
        let buses = self.buses.lock().unwrap_or_else(|e| e.into_inner());
        for (metric, help, kind) in [
            (
                "telamon_bus_connected",
                "1 while the bus is connected to its broker.",
                "gauge",
            ),
            (
                "telamon_bus_reconnects_total",
                "Broker connections re-established after a loss.",
                "counter",
            ),
            (
                "telamon_bus_malformed_total",
                "Bodies rejected because they could not be decoded.",
                "counter",
            ),
            (
                "telamon_bus_received_total",
                "Subscription deliveries received from the broker (once per message per queue).",
                "counter",
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} {kind}");
            for (id, h) in buses.iter() {
                let v = match metric {
                    "telamon_bus_connected" => u64::from(h.connected.load(Ordering::Relaxed)),
                    "telamon_bus_reconnects_total" => h.reconnects.load(Ordering::Relaxed),
                    "telamon_bus_received_total" => h.received.load(Ordering::Relaxed),
                    _ => h.malformed.load(Ordering::Relaxed),
                };
                let _ = writeln!(out, "{metric}{{bus=\"{}\"}} {v}", escape(id));
            }
        }
        drop(buses);
        let mut lag: std::collections::BTreeMap<String, u64> = Default::default();
        for (p, w) in self
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .iter()
        {
            if let Some(c) = w.upgrade() {
                *lag.entry(p.as_str().to_owned()).or_default() += c.lagged();
            }
        }
        let _ = writeln!(
            out,
            "# HELP telamon_lagged Messages live drop-oldest subscriptions missed, by pattern.\n# TYPE telamon_lagged gauge"
        );
        for (p, v) in lag {
            let _ = writeln!(out, "telamon_lagged{{pattern=\"{}\"}} {v}", escape(&p));
        }
        let requests = self.requests.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<(&str, &RequestStats)> =
            requests.iter().map(|(t, s)| (t.as_str(), &**s)).collect();
        names.sort_by_key(|(t, _)| *t);
        if requests.len() >= self.max_topics {
            names.push((OVERFLOW_TOPIC, &self.overflow_requests));
        }
        let _ = writeln!(
            out,
            "# HELP telamon_requests_total Requests by topic and outcome.\n# TYPE telamon_requests_total counter"
        );
        for (t, s) in &names {
            for (outcome, c) in [
                ("ok", &s.ok),
                ("handler-error", &s.handler_error),
                ("timed-out", &s.timed_out),
                ("no-responder", &s.no_responder),
                ("error", &s.other_error),
            ] {
                let _ = writeln!(
                    out,
                    "telamon_requests_total{{topic=\"{}\",outcome=\"{outcome}\"}} {}",
                    escape(t),
                    c.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP telamon_request_latency_seconds Request round-trip time.\n# TYPE telamon_request_latency_seconds histogram"
        );
        for (t, s) in &names {
            let topic = escape(t);
            let mut cumulative = 0;
            for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
                cumulative += s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "telamon_request_latency_seconds_bucket{{topic=\"{topic}\",le=\"{}\"}} {cumulative}",
                    *bound as f64 / 1e6
                );
            }
            let count = s.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "telamon_request_latency_seconds_bucket{{topic=\"{topic}\",le=\"+Inf\"}} {count}\ntelamon_request_latency_seconds_sum{{topic=\"{topic}\"}} {}\ntelamon_request_latency_seconds_count{{topic=\"{topic}\"}} {count}",
                s.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        drop(names);
        drop(requests);
        if let Some(instruments) = self.instruments.get() {
            render_instruments(&mut out, instruments);
        }
        out
    }
}

/// The value for `topic`, made on first use (a read lock normally, a write
/// lock once); past `max` topics, the shared `overflow`.
fn entry<T: Default>(
    map: &RwLock<HashMap<Topic, Arc<T>>>,
    topic: &Topic,
    max: usize,
    overflow: &Arc<T>,
) -> Arc<T> {
    let read = map.read().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = read.get(topic) {
        return v.clone();
    }
    if read.len() >= max {
        return overflow.clone();
    }
    drop(read);
    let mut write = map.write().unwrap_or_else(|e| e.into_inner());
    if write.len() >= max && !write.contains_key(topic) {
        return overflow.clone();
    }
    write.entry(topic.clone()).or_default().clone()
}

/// Module instruments, grouped by name: one `# HELP`/`# TYPE` per name.
fn render_instruments(out: &mut String, instruments: &Instruments) {
    let mut series = instruments.snapshot();
    // Stable: registration order within a name.
    series.sort_by(|a, b| a.name.cmp(&b.name));
    let mut last: Option<&str> = None;
    for s in &series {
        if last != Some(s.name.as_str()) {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} {}",
                s.name,
                s.help.replace('\\', "\\\\").replace('\n', "\\n"),
                s.name,
                s.kind().as_str()
            );
            last = Some(s.name.as_str());
        }
        let labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(out, "{}{{{}}} {}", s.name, labels.join(","), s.value());
    }
}

/// A label value as the text format wants it: `\`, `"` and line feed escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
