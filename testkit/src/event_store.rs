//! In-memory event store: events with gap-free global tokens from 0,
//! per-aggregate sequence bookkeeping and snapshots.
//!
//! Appends are validated and committed under one lock, so concurrent
//! transactions on one aggregate serialise: whoever commits second gets
//! AXONIQ-2000. Every commit bumps a watch channel that wakes live
//! `ListEvents` trackers. Memory grows without bound; everything is lost when
//! the server stops.

use std::collections::HashMap;
use std::sync::Mutex;

use telamon_axon_proto::pb::event::Event;
use tokio::sync::watch;

use crate::support::lock;

/// Result of a rejected append: the SE message parts of AXONIQ-2000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid sequence number {actual} for aggregate {aggregate}, expected {expected}")]
pub(crate) struct SequenceError {
    pub(crate) actual: i64,
    pub(crate) aggregate: String,
    pub(crate) expected: i64,
}

#[derive(Debug, Default)]
struct Aggregate {
    /// Global tokens of the aggregate's events, in sequence order.
    tokens: Vec<usize>,
    /// Snapshots ordered by sequence number (one per sequence).
    snapshots: Vec<Event>,
}

impl Aggregate {
    fn highest_sequence(&self, events: &[Event]) -> i64 {
        self.tokens
            .last()
            .and_then(|t| events.get(*t))
            .map_or(-1, |e| e.aggregate_sequence_number)
    }
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Event>,
    aggregates: HashMap<String, Aggregate>,
}

/// The event store of one server (single context, see `auth`).
#[derive(Debug)]
pub(crate) struct EventStore {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for EventStore {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            changed: watch::Sender::new(0),
        }
    }
}

impl EventStore {
    /// Validates and commits one transaction (all or nothing); returns the first token.
    ///
    /// Rule (SEMANTICS §8.1): only events with a non-empty `aggregate_type` are
    /// checked; per aggregate, the first event of the transaction must be the
    /// stored highest sequence + 1 (0 for a new aggregate) and the following
    /// ones consecutive.
    pub(crate) fn append(&self, transaction: Vec<Event>) -> Result<i64, SequenceError> {
        let mut inner = lock(&self.inner);
        let mut expected: HashMap<&str, i64> = HashMap::new();
        for event in &transaction {
            if event.aggregate_type.is_empty() {
                continue;
            }
            let aggregate = event.aggregate_identifier.as_str();
            let next = expected.entry(aggregate).or_insert_with(|| {
                inner
                    .aggregates
                    .get(aggregate)
                    .map_or(-1, |a| a.highest_sequence(&inner.events))
                    + 1
            });
            if event.aggregate_sequence_number != *next {
                return Err(SequenceError {
                    actual: event.aggregate_sequence_number,
                    aggregate: aggregate.to_owned(),
                    expected: *next,
                });
            }
            *next += 1;
        }
        let first = inner.events.len();
        for mut event in transaction {
            event.snapshot = false;
            let token = inner.events.len();
            if !event.aggregate_type.is_empty() {
                inner
                    .aggregates
                    .entry(event.aggregate_identifier.clone())
                    .or_default()
                    .tokens
                    .push(token);
            }
            inner.events.push(event);
        }
        let count = inner.events.len();
        drop(inner);
        if count > first {
            self.wake();
        }
        Ok(i64::try_from(first).unwrap_or(i64::MAX))
    }

    /// Stores a snapshot; rejected when its sequence exceeds the aggregate's highest event.
    pub(crate) fn append_snapshot(&self, mut snapshot: Event) -> Result<(), SequenceError> {
        let mut inner = lock(&self.inner);
        let Inner { events, aggregates } = &mut *inner;
        let aggregate = aggregates
            .entry(snapshot.aggregate_identifier.clone())
            .or_default();
        let highest = aggregate.highest_sequence(events);
        if snapshot.aggregate_sequence_number > highest {
            return Err(SequenceError {
                actual: snapshot.aggregate_sequence_number,
                aggregate: snapshot.aggregate_identifier,
                expected: highest,
            });
        }
        snapshot.snapshot = true;
        let sequence = snapshot.aggregate_sequence_number;
        match aggregate
            .snapshots
            .binary_search_by_key(&sequence, |s| s.aggregate_sequence_number)
        {
            Ok(index) => aggregate.snapshots[index] = snapshot,
            Err(index) => aggregate.snapshots.insert(index, snapshot),
        }
        Ok(())
    }

    /// Events of an aggregate (SEMANTICS §8.3); `max_sequence` is exclusive, 0 = unbounded.
    pub(crate) fn aggregate_events(
        &self,
        aggregate_id: &str,
        initial_sequence: i64,
        max_sequence: i64,
        allow_snapshots: bool,
    ) -> Vec<Event> {
        let inner = lock(&self.inner);
        let Some(aggregate) = inner.aggregates.get(aggregate_id) else {
            return Vec::new();
        };
        let upper = if max_sequence > 0 {
            max_sequence
        } else {
            i64::MAX
        };
        let mut result = Vec::new();
        let mut from = initial_sequence;
        if allow_snapshots
            && let Some(snapshot) = aggregate.snapshots.iter().rev().find(|s| {
                s.aggregate_sequence_number >= initial_sequence
                    && s.aggregate_sequence_number < upper
            })
        {
            from = snapshot.aggregate_sequence_number + 1;
            result.push(snapshot.clone());
        }
        result.extend(
            aggregate
                .tokens
                .iter()
                .filter_map(|t| inner.events.get(*t))
                .filter(|e| {
                    e.aggregate_sequence_number >= from && e.aggregate_sequence_number < upper
                })
                .cloned(),
        );
        result
    }

    /// Snapshots, highest sequence first; `max_sequence` inclusive (0 = unbounded), `max_results` 0 = all.
    pub(crate) fn snapshots(
        &self,
        aggregate_id: &str,
        initial_sequence: i64,
        max_sequence: i64,
        max_results: i32,
    ) -> Vec<Event> {
        let inner = lock(&self.inner);
        let Some(aggregate) = inner.aggregates.get(aggregate_id) else {
            return Vec::new();
        };
        let upper = if max_sequence > 0 {
            max_sequence
        } else {
            i64::MAX
        };
        let limit = usize::try_from(max_results)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(usize::MAX);
        aggregate
            .snapshots
            .iter()
            .rev()
            .filter(|s| {
                s.aggregate_sequence_number >= initial_sequence
                    && s.aggregate_sequence_number <= upper
            })
            .take(limit)
            .cloned()
            .collect()
    }

    /// Highest sequence number of an aggregate, −1 when it has no events.
    pub(crate) fn highest_sequence(&self, aggregate_id: &str) -> i64 {
        let inner = lock(&self.inner);
        inner
            .aggregates
            .get(aggregate_id)
            .map_or(-1, |a| a.highest_sequence(&inner.events))
    }

    /// Number of stored events (= the next token).
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).events.len()
    }

    /// Up to `max` events starting at token `from`.
    pub(crate) fn read(&self, from: usize, max: usize) -> Vec<Event> {
        let inner = lock(&self.inner);
        inner.events.iter().skip(from).take(max).cloned().collect()
    }

    /// All events with their tokens.
    pub(crate) fn all(&self) -> Vec<(i64, Event)> {
        lock(&self.inner)
            .events
            .iter()
            .enumerate()
            .map(|(t, e)| (i64::try_from(t).unwrap_or(i64::MAX), e.clone()))
            .collect()
    }

    /// Token of the first event with `timestamp >= instant`; the head when all are older.
    pub(crate) fn token_at(&self, instant: i64) -> i64 {
        let inner = lock(&self.inner);
        let position = inner
            .events
            .iter()
            .position(|e| e.timestamp >= instant)
            .unwrap_or(inner.events.len());
        i64::try_from(position).unwrap_or(i64::MAX)
    }

    /// Receiver that changes on every commit or fault release.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Wakes every tracker.
    pub(crate) fn wake(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
