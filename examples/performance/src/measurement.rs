//! One result line, latency percentiles and the process's memory.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use serde::Serialize;

/// One scenario × system result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    pub(crate) scenario: &'static str,
    pub(crate) system: &'static str,
    pub(crate) msgs_per_s: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    pub(crate) rss_mb: Option<f64>,
    /// Request scenarios: rate over the first and the last 10 % of requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) first_tenth_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_tenth_per_s: Option<f64>,
    /// How many messages or requests the figure is over.
    pub(crate) count: Option<u64>,
    /// `*-many-subs-N`: the idle subscriptions, how long making them took,
    /// what each added to the resident set, and (RabbitMQ) how many queues
    /// the broker held for the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) idle_subs: Option<IdleSubs>,
}

/// What `N` idle subscriptions cost.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct IdleSubs {
    pub(crate) n: u64,
    pub(crate) created_ms: f64,
    pub(crate) bytes_each: Option<f64>,
    pub(crate) broker_queues: Option<u64>,
}

impl Measurement {
    pub(crate) fn throughput(
        scenario: &'static str,
        system: &'static str,
        count: u64,
        elapsed: Duration,
        latencies_ns: &mut [u64],
    ) -> Self {
        let (p50, p99) = percentiles(latencies_ns);
        Measurement {
            scenario,
            system,
            msgs_per_s: Some(count as f64 / elapsed.as_secs_f64()),
            p50_us: p50,
            p99_us: p99,
            rss_mb: Some(rss_mb()),
            first_tenth_per_s: None,
            last_tenth_per_s: None,
            count: Some(count),
            idle_subs: None,
        }
    }
}

/// p50 and p99 in microseconds.
pub(crate) fn percentiles(latencies_ns: &mut [u64]) -> (Option<f64>, Option<f64>) {
    if latencies_ns.is_empty() {
        return (None, None);
    }
    latencies_ns.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies_ns.len() as f64 - 1.0) * q).round() as usize;
        Some(latencies_ns[i] as f64 / 1000.0)
    };
    (at(0.50), at(0.99))
}

/// Resident set size of this process, in MB (Linux; 0 elsewhere).
pub(crate) fn rss_mb() -> f64 {
    rss_bytes() / 1_000_000.0
}

/// A span of time, on the wall clock and in the CPU time of this process.
#[derive(Clone, Copy)]
struct Span {
    at: Instant,
    cpu: Duration,
}

impl Span {
    fn start() -> Self {
        Span {
            at: Instant::now(),
            cpu: process_cpu(),
        }
    }

    /// Wall time and CPU time since [`start`](Self::start).
    fn elapsed(&self) -> (Duration, Duration) {
        (self.at.elapsed(), process_cpu().saturating_sub(self.cpu))
    }
}

/// Counts the events of a stream and times those after the first
/// `warm_up`: [`saw`](Self::saw) each one as it arrives.
pub(crate) struct WarmClock {
    warm_up: u64,
    seen: u64,
    span: Option<Span>,
}

impl WarmClock {
    pub(crate) fn new(warm_up: u64) -> Self {
        WarmClock {
            warm_up,
            seen: 0,
            span: None,
        }
    }

    /// Counts one more event and gives its place (from 0); the clock starts
    /// at event `warm_up`.
    pub(crate) fn saw(&mut self) -> u64 {
        if self.seen == self.warm_up {
            self.span = Some(Span::start());
        }
        self.seen += 1;
        self.seen - 1
    }

    /// Events seen so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Wall time and CPU time since event `warm_up` (zero before it).
    pub(crate) fn elapsed(&self) -> (Duration, Duration) {
        self.span.map(|s| s.elapsed()).unwrap_or_default()
    }
}

/// CPU time all threads of this process have run so far (Linux: the sum of
/// `/proc/self/task/*/schedstat`, in nanoseconds; zero elsewhere). Threads
/// that ended are not counted, so compare it across a span in which the
/// runtime's threads live throughout.
fn process_cpu() -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

/// Resident set size of this process, in bytes (Linux; 0 elsewhere).
pub(crate) fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        })
        .map_or(0.0, |pages| pages * 4096.0)
}

/// What one subscriber task saw: publish→receive latencies, and when the last arrived.
pub(crate) type Received = (Vec<u64>, Instant);

/// Waits for every subscriber task, checks that each got all `n` messages, and
/// measures the deliveries from `started` to the last receipt.
pub(crate) async fn gathered(
    scenario: &'static str,
    system: &'static str,
    started: Instant,
    n: u64,
    receivers: Vec<JoinHandle<Received>>,
) -> anyhow::Result<Measurement> {
    let subscribers = receivers.len() as u64;
    let mut all = Vec::new();
    let mut end = started;
    for r in receivers {
        let (latencies, at) = r.await?;
        anyhow::ensure!(
            latencies.len() as u64 == n,
            "{system}: a subscriber got {} of {n}",
            latencies.len()
        );
        all.extend(latencies);
        end = end.max(at);
    }
    Ok(Measurement::throughput(
        scenario,
        system,
        n * subscribers,
        end - started,
        &mut all,
    ))
}
