//! Gauges and counters a module exports next to the process's own metrics.
//!
//! A module asks its [`Context`](crate::Context) for a [`Gauge`] or a
//! [`Counter`] once, keeps it, and sets or bumps it on its hot path (one
//! relaxed atomic operation). The process renders every instrument on its
//! `/metrics` endpoint with the label `module="<id>"` added, and a module can
//! read its own values back (tests do).
//!
//! # Under stress
//!
//! - **Many label values**: each distinct (name, labels) pair is one series,
//!   kept for the life of the process; label values should come from config
//!   (a processor name, a mapping), never from message contents.
//! - **Asked twice**: the same name and labels give back the same instrument,
//!   so two tasks of one module can share it without passing it around.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A value that goes up and down (a state, a count of things in flight).
#[derive(Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds `delta` (negative to subtract).
    #[inline]
    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gauge({})", self.get())
    }
}

/// A count that only goes up (events seen, failures).
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counter({})", self.get())
    }
}

/// Which kind an instrument is, as the Prometheus text format names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstrumentKind {
    /// Goes up and down.
    Gauge,
    /// Only goes up.
    Counter,
}

impl InstrumentKind {
    /// `"gauge"` or `"counter"`.
    pub fn as_str(self) -> &'static str {
        match self {
            InstrumentKind::Gauge => "gauge",
            InstrumentKind::Counter => "counter",
        }
    }
}

#[derive(Clone)]
enum Value {
    Gauge(Gauge),
    Counter(Counter),
}

/// One registered series, as the process renders it.
#[derive(Clone)]
pub struct Series {
    /// The metric name (`[a-z_][a-z0-9_]*`; other characters become `_`).
    pub name: String,
    /// The help text of the metric.
    pub help: String,
    /// Labels: `module` first, then the module's own, in the order given.
    pub labels: Vec<(String, String)>,
    value: Value,
}

impl Series {
    /// Gauge or counter.
    pub fn kind(&self) -> InstrumentKind {
        match self.value {
            Value::Gauge(_) => InstrumentKind::Gauge,
            Value::Counter(_) => InstrumentKind::Counter,
        }
    }

    /// The current value (a counter's fits an `i64` in practice; it saturates).
    pub fn value(&self) -> i64 {
        match &self.value {
            Value::Gauge(g) => g.get(),
            Value::Counter(c) => i64::try_from(c.get()).unwrap_or(i64::MAX),
        }
    }
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Series")
            .field("name", &self.name)
            .field("labels", &self.labels)
            .field("value", &self.value())
            .finish()
    }
}

/// Every instrument the modules of one process registered.
#[derive(Default)]
pub struct Instruments {
    series: Mutex<Vec<Series>>,
}

impl fmt::Debug for Instruments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instruments")
            .field("series", &self.lock().len())
            .finish()
    }
}

impl Instruments {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Series>> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gauge `name` of `module` with `labels`, made on first use.
    pub fn gauge(&self, module: &str, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.find_or_insert(
            module,
            name,
            help,
            labels,
            || Value::Gauge(Gauge::default()),
        ) {
            Value::Gauge(g) => g,
            // The same name was registered as a counter: a separate, unexported value.
            Value::Counter(_) => Gauge::default(),
        }
    }

    /// The counter `name` of `module` with `labels`, made on first use.
    pub fn counter(
        &self,
        module: &str,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Counter {
        match self.find_or_insert(module, name, help, labels, || {
            Value::Counter(Counter::default())
        }) {
            Value::Counter(c) => c,
            Value::Gauge(_) => Counter::default(),
        }
    }

    fn find_or_insert(
        &self,
        module: &str,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Value,
    ) -> Value {
        let name = metric_name(name);
        let mut all: Vec<(String, String)> = vec![("module".to_owned(), module.to_owned())];
        all.extend(
            labels
                .iter()
                .map(|(k, v)| (metric_name(k), (*v).to_owned())),
        );
        let mut series = self.lock();
        if let Some(s) = series.iter().find(|s| s.name == name && s.labels == all) {
            return s.value.clone();
        }
        let value = make();
        series.push(Series {
            name,
            help: help.to_owned(),
            labels: all,
            value: value.clone(),
        });
        value
    }

    /// A snapshot of every series, in registration order.
    pub fn snapshot(&self) -> Vec<Series> {
        self.lock().clone()
    }
}

/// `name` with every character outside `[a-zA-Z0-9_]` replaced by `_`, and
/// a leading digit prefixed with `_`.
fn metric_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_and_labels_share_one_value() {
        let set = Instruments::default();
        let a = set.gauge("m", "x_state", "h", &[("k", "v")]);
        let b = set.gauge("m", "x_state", "h", &[("k", "v")]);
        let other = set.gauge("m", "x_state", "h", &[("k", "w")]);
        a.set(3);
        assert_eq!((b.get(), other.get()), (3, 0));
        let c = set.counter("m", "bad name-1", "h", &[]);
        c.add(2);
        let names: Vec<String> = set.snapshot().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["x_state", "x_state", "bad_name_1"]);
        assert_eq!(set.snapshot()[2].value(), 2);
        assert_eq!(set.snapshot()[0].labels[0], ("module".into(), "m".into()));
    }
}
