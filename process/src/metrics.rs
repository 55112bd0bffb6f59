//! Per-topic counters and request latency, rendered as Prometheus text.
//!
//! Off unless `[metrics]` is configured; when off, the hot path does one
//! branch and nothing else. When on, each thread keeps the counters of the
//! last topic it counted: publishing on one topic in a loop counts with no
//! lock and no hashing; a new topic costs one read-locked map lookup.
//!
//! # Under stress
//!
//! - **A topic per entity** (`orders.<id>.created`): the first
//!   `max-topics` distinct topics get series of their own; every later one
//!   is counted under `topic="#"` (no topic can be `#`), so memory and the
//!   number of Prometheus series stay bounded however many topics there are.
//! - **Odd topic text**: label values are escaped as the text format says
//!   (backslash, double quote, line feed).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use telamon_sdk::bus::{InstrumentKind, Instruments, QueueCounters};
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
#[derive(Default)]
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
    /// Messages waiting for this process in its shared subscription queue on
    /// the broker, as the broker last said (asked every second).
    pub backlog: AtomicU64,
    /// Published messages whose broker confirm has not come, asked at each scrape.
    pub(crate) unconfirmed: std::sync::OnceLock<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

impl std::fmt::Debug for BusHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusHealth")
            .field("connected", &self.connected)
            .field("reconnects", &self.reconnects)
            .field("malformed", &self.malformed)
            .field("received", &self.received)
            .field("backlog", &self.backlog)
            .finish_non_exhaustive()
    }
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

/// Tells registries apart in the per-thread cache.
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The counters of the topic this thread counted last, per registry: a
    /// publisher sending on one topic in a loop counts with no lock and no
    /// hashing (`Arc<str>` equality checks the pointer first).
    static LAST_TOPIC: std::cell::RefCell<Option<(u64, Topic, Arc<TopicCounters>)>> =
        const { std::cell::RefCell::new(None) };
}

/// The process's metrics registry.
#[derive(Debug)]
pub struct Metrics {
    /// Tells this registry apart in [`LAST_TOPIC`].
    registry: u64,
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// A registry that records (`true`) or ignores everything (`false`).
    pub fn new(enabled: bool) -> Self {
        Metrics {
            registry: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            enabled,
            max_topics: DEFAULT_MAX_TOPICS,
            overflow: Default::default(),
            overflow_requests: Default::default(),
            topics: Default::default(),
            requests: Default::default(),
            subscriptions: Default::default(),
            buses: Default::default(),
            unrouted: Default::default(),
            instruments: Default::default(),
        }
    }

    /// A registry that records, with series for at most `max_topics` topics.
    pub fn with_max_topics(max_topics: usize) -> Self {
        Metrics {
            max_topics,
            ..Metrics::new(true)
        }
    }

    /// Runs `f` on the counters of `topic`: from this thread's cache when it
    /// was the last topic counted here, else from the map (and cached).
    #[inline]
    fn count(&self, topic: &Topic, f: impl FnOnce(&TopicCounters)) {
        LAST_TOPIC.with(|last| {
            let mut last = last.borrow_mut();
            match &*last {
                Some((registry, t, c)) if *registry == self.registry && t == topic => f(c),
                _ => {
                    let counters = self.topic(topic);
                    f(&counters);
                    *last = Some((self.registry, topic.clone(), counters));
                }
            }
        });
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
            self.count(topic, |c| {
                c.published.fetch_add(1, Ordering::Relaxed);
            });
        }
    }

    /// Counts `n` publishes on `topic` at once.
    pub fn published_many(&self, topic: &Topic, n: u64) {
        if self.enabled {
            self.count(topic, |c| {
                c.published.fetch_add(n, Ordering::Relaxed);
            });
        }
    }

    /// Counts deliveries into subscriber queues, and messages pushed out of full ones.
    #[inline]
    pub fn delivered(&self, topic: &Topic, delivered: u64, dropped: u64) {
        if self.enabled && (delivered | dropped) != 0 {
            self.count(topic, |c| {
                c.delivered.fetch_add(delivered, Ordering::Relaxed);
                if dropped != 0 {
                    c.dropped.fetch_add(dropped, Ordering::Relaxed);
                }
            });
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

    /// Everything recorded, in the OpenMetrics text format (which Prometheus
    /// scrapes; served with [`CONTENT_TYPE`]), written by `prometheus-client`.
    pub fn render(&self) -> String {
        let scrape = self.snapshot();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The values of this moment, to be encoded.
    fn snapshot(&self) -> Scrape {
        let mut scrape = Scrape::default();
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<(&str, &TopicCounters)> =
            topics.iter().map(|(t, c)| (t.as_str(), &**c)).collect();
        names.sort_by_key(|(t, _)| *t);
        if topics.len() >= self.max_topics {
            names.push((OVERFLOW_TOPIC, &self.overflow));
        }
        for (metric, help, pick) in [
            ("telamon_published", "Publishes accepted by the router.", 0),
            (
                "telamon_delivered",
                "Messages placed in subscriber queues.",
                1,
            ),
            (
                "telamon_dropped",
                "Messages lost to full drop-oldest queues or unrouted drops.",
                2,
            ),
        ] {
            let family = scrape.builtin(metric, help, MetricType::Counter);
            for (t, c) in &names {
                let v = [&c.published, &c.delivered, &c.dropped][pick].load(Ordering::Relaxed);
                family.push(vec![("topic", t.to_string())], Sample::Counter(v));
            }
        }
        drop(names);
        drop(topics);
        scrape
            .builtin(
                "telamon_unrouted",
                "Publishes that matched no route.",
                MetricType::Counter,
            )
            .push(
                Vec::<(&str, String)>::new(),
                Sample::Counter(self.unrouted_total()),
            );
        let buses = self.buses.lock().unwrap_or_else(|e| e.into_inner());
        for (metric, help, kind) in [
            (
                "telamon_bus_connected",
                "1 while the bus is connected to its broker.",
                MetricType::Gauge,
            ),
            (
                "telamon_bus_reconnects",
                "Broker connections re-established after a loss.",
                MetricType::Counter,
            ),
            (
                "telamon_bus_malformed",
                "Bodies rejected because they could not be decoded.",
                MetricType::Counter,
            ),
            (
                "telamon_bus_received",
                "Subscription deliveries received from the broker (once per message per queue).",
                MetricType::Counter,
            ),
            (
                "telamon_bus_backlog",
                "Messages waiting for this process in its shared subscription queue, as the broker last said.",
                MetricType::Gauge,
            ),
            (
                "telamon_bus_unconfirmed",
                "Published messages whose broker confirm has not come yet.",
                MetricType::Gauge,
            ),
        ] {
            let family = scrape.builtin(metric, help, kind);
            for (id, h) in buses.iter() {
                let sample = match metric {
                    "telamon_bus_connected" => {
                        Sample::Gauge(i64::from(h.connected.load(Ordering::Relaxed)))
                    }
                    "telamon_bus_reconnects" => {
                        Sample::Counter(h.reconnects.load(Ordering::Relaxed))
                    }
                    "telamon_bus_received" => Sample::Counter(h.received.load(Ordering::Relaxed)),
                    "telamon_bus_backlog" => Sample::Gauge(
                        i64::try_from(h.backlog.load(Ordering::Relaxed)).unwrap_or(i64::MAX),
                    ),
                    "telamon_bus_unconfirmed" => Sample::Gauge(
                        h.unconfirmed
                            .get()
                            .map_or(0, |probe| i64::try_from(probe()).unwrap_or(i64::MAX)),
                    ),
                    _ => Sample::Counter(h.malformed.load(Ordering::Relaxed)),
                };
                family.push(vec![("bus", id.clone())], sample);
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
        let family = scrape.builtin(
            "telamon_lagged",
            "Messages live drop-oldest subscriptions missed, by pattern.",
            MetricType::Gauge,
        );
        for (p, v) in lag {
            family.push(
                vec![("pattern", p)],
                Sample::Gauge(i64::try_from(v).unwrap_or(i64::MAX)),
            );
        }
        let requests = self.requests.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<(&str, &RequestStats)> =
            requests.iter().map(|(t, s)| (t.as_str(), &**s)).collect();
        names.sort_by_key(|(t, _)| *t);
        if requests.len() >= self.max_topics {
            names.push((OVERFLOW_TOPIC, &self.overflow_requests));
        }
        let family = scrape.builtin(
            "telamon_requests",
            "Requests by topic and outcome.",
            MetricType::Counter,
        );
        for (t, s) in &names {
            for (outcome, c) in [
                ("ok", &s.ok),
                ("handler-error", &s.handler_error),
                ("timed-out", &s.timed_out),
                ("no-responder", &s.no_responder),
                ("error", &s.other_error),
            ] {
                family.push(
                    vec![("topic", t.to_string()), ("outcome", outcome.to_owned())],
                    Sample::Counter(c.load(Ordering::Relaxed)),
                );
            }
        }
        let family = scrape.builtin(
            "telamon_request_latency_seconds",
            "Request round-trip time.",
            MetricType::Histogram,
        );
        for (t, s) in &names {
            let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
                .iter()
                .zip(&s.buckets)
                .map(|(bound, n)| (*bound as f64 / 1e6, n.load(Ordering::Relaxed)))
                .collect();
            let counted: u64 = buckets.iter().map(|(_, n)| n).sum();
            // Read after the buckets (a request counts its bucket first), and
            // never below them: `+Inf` and `_count` always agree.
            let count = s.count.load(Ordering::Relaxed).max(counted);
            // f64::MAX is the encoder's `+Inf`.
            buckets.push((f64::MAX, count.saturating_sub(counted)));
            family.push(
                vec![("topic", t.to_string())],
                Sample::Histogram {
                    sum: s.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
                    count,
                    buckets,
                },
            );
        }
        drop(names);
        drop(requests);
        if let Some(instruments) = self.instruments.get() {
            add_instruments(&mut scrape, instruments);
        }
        scrape
    }
}

/// The content type of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One scrape's values, handed to `prometheus-client` to encode.
#[derive(Debug, Default)]
struct Scrape {
    families: Vec<Family>,
}

/// Label names and (escaped) values of one series.
type Labels = Vec<(Cow<'static, str>, String)>;

/// One metric and its series.
#[derive(Debug)]
struct Family {
    /// For counters without the `_total` the encoder adds.
    name: String,
    help: String,
    kind: MetricType,
    series: Vec<(Labels, Sample)>,
}

#[derive(Debug)]
enum Sample {
    Counter(u64),
    Gauge(i64),
    Histogram {
        sum: f64,
        count: u64,
        /// Per bucket, not cumulative: (upper bound, count).
        buckets: Vec<(f64, u64)>,
    },
}

impl Scrape {
    /// The family `name` of type `kind`, made on first use; `None` when the
    /// name is taken by another type (two types under one name would make
    /// the whole scrape invalid).
    fn family(&mut self, name: &str, help: &str, kind: MetricType) -> Option<&mut Family> {
        let name = match kind {
            MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            let same = self.families[i].kind.as_str() == kind.as_str();
            return same.then(|| &mut self.families[i]);
        }
        self.families.push(Family {
            name: name.to_owned(),
            help: escape(help),
            kind,
            series: Vec::new(),
        });
        self.families.last_mut()
    }

    /// The family of a built-in metric (its name is Telamon's; it cannot clash).
    fn builtin(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Family {
        self.family(name, help, kind)
            .expect("built-in metric names are distinct")
    }
}

impl Family {
    /// Adds a series; label values are escaped here (the encoder writes them as given).
    fn push<K: Into<Cow<'static, str>>>(&mut self, labels: Vec<(K, String)>, sample: Sample) {
        let labels = labels
            .into_iter()
            .map(|(k, v)| (k.into(), escape(&v)))
            .collect();
        self.series.push((labels, sample));
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for family in &self.families {
            let mut metric =
                encoder.encode_descriptor(&family.name, &family.help, None, family.kind)?;
            for (labels, sample) in &family.series {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_str()))
                    .collect();
                let mut series = metric.encode_family(&labels)?;
                match sample {
                    Sample::Counter(v) => series.encode_counter::<NoLabelSet, _, u64>(v, None)?,
                    Sample::Gauge(v) => series.encode_gauge(v)?,
                    Sample::Histogram {
                        sum,
                        count,
                        buckets,
                    } => series.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None)?,
                }
            }
        }
        Ok(())
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

/// Module instruments, one family per name, series in registration order.
fn add_instruments(scrape: &mut Scrape, instruments: &Instruments) {
    let mut series = instruments.snapshot();
    series.sort_by(|a, b| a.name.cmp(&b.name));
    for s in series {
        let (kind, sample) = match s.kind() {
            InstrumentKind::Counter => (
                MetricType::Counter,
                Sample::Counter(u64::try_from(s.value()).unwrap_or(0)),
            ),
            InstrumentKind::Gauge => (MetricType::Gauge, Sample::Gauge(s.value())),
        };
        match scrape.family(&s.name, &s.help, kind) {
            Some(family) => family.push(s.labels, sample),
            None => tracing::warn!(
                metric = %s.name,
                "a metric of this name exists with another type; series left out of /metrics"
            ),
        }
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
