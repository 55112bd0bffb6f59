//! Times a run of requests: overall rate, RTT percentiles, first and last tenth.

use std::future::Future;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::measurement::{Measurement, percentiles, rss_mb};
use crate::message::now_ns;

pub(crate) struct RequestClock {
    n: u64,
    started: Instant,
    rtts: Vec<u64>,
    tenth: Option<Instant>,
    ninth: Option<Instant>,
}

impl RequestClock {
    pub(crate) fn new(n: u64) -> Self {
        RequestClock {
            n,
            started: Instant::now(),
            rtts: Vec::with_capacity(n as usize),
            tenth: None,
            ninth: None,
        }
    }

    /// Makes `n` requests, `in_flight` at a time (`request(i)` makes number
    /// `i`), timing each round trip.
    pub(crate) async fn drive<F, Fut, T, E>(
        mut self,
        in_flight: usize,
        mut request: F,
    ) -> anyhow::Result<Self>
    where
        F: FnMut(u64) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<anyhow::Error>,
    {
        let mut pending = FuturesUnordered::new();
        let mut sent = 0;
        while self.done() < self.n {
            while sent < self.n && pending.len() < in_flight {
                let call = request(sent);
                pending.push(async move {
                    let t = now_ns();
                    call.await.map(|_| now_ns() - t)
                });
                sent += 1;
            }
            if let Some(rtt) = pending.next().await {
                self.record(rtt.map_err(Into::into)?);
            }
        }
        Ok(self)
    }

    pub(crate) fn done(&self) -> u64 {
        self.rtts.len() as u64
    }

    pub(crate) fn record(&mut self, rtt_ns: u64) {
        self.rtts.push(rtt_ns);
        let done = self.done();
        if done == self.n / 10 {
            self.tenth = Some(Instant::now());
        }
        if done == self.n - self.n / 10 {
            self.ninth = Some(Instant::now());
        }
    }

    pub(crate) fn finish(mut self, scenario: &'static str, system: &'static str) -> Measurement {
        let end = Instant::now();
        let tenth_n = (self.n / 10) as f64;
        let first = self
            .tenth
            .map(|t| tenth_n / (t - self.started).as_secs_f64());
        let last = self.ninth.map(|t| tenth_n / (end - t).as_secs_f64());
        let (p50, p99) = percentiles(&mut self.rtts);
        Measurement {
            scenario,
            system,
            msgs_per_s: Some(self.n as f64 / (end - self.started).as_secs_f64()),
            p50_us: p50,
            p99_us: p99,
            rss_mb: Some(rss_mb()),
            first_tenth_per_s: first,
            last_tenth_per_s: last,
            count: Some(self.n),
            idle_subs: None,
        }
    }
}
