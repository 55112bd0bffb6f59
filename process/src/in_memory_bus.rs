//! The in-process bus: zero-copy `Arc<M>` hand-over to bounded subscriber queues.
//!
//! # Under stress
//!
//! - **Full subscriber queue**: under `wait` the publish waits for that queue
//!   only after offering the message to every other matching queue; under
//!   `drop-oldest` it never waits and the loss is counted (subscriber's
//!   `lagged()`, `telamon_dropped_total`).
//! - **A batch** (`publish_batch`): each queue takes it under one lock with
//!   one wake-up; a full `wait` queue takes what fits and the publisher
//!   waits for room for the rest, in order, after offering the whole batch
//!   to every other queue (unlike a loop of publishes, the slow queue does
//!   not pace the others; a `drop-oldest` queue smaller than the batch may
//!   drop more than it would message by message).
//! - **Dropped subscriber**: removed from the table the moment its
//!   `Subscription` is dropped; a publish racing with the drop skips it.
//! - **Full handler queue**: the requester waits, within its timeout.
//! - **A message whose last reference owns a subscription**: under
//!   `drop-oldest`, a publish drops the oldest queued message while it reads
//!   the subscription table; if that message held the last `Arc` of an `M`
//!   that owns a `Subscription` on this bus, the unsubscribe would wait for
//!   the table the same thread is reading. Messages that own subscriptions
//!   are not supported on `drop-oldest` queues.
//! - **Closed bus** (process stopping): subscriptions end after draining,
//!   publishes fail with `PublishError::Closed`, requests with `RequestError::Closed`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, Weak};
use std::time::Duration;

use serde::Deserialize;
use telamon_sdk::bus::{
    BoxFuture, DropGuard, PatternIndex, Publish, RequestSender, SubscriptionSender, TryDeliver,
};
use telamon_sdk::{
    BatchPublishError, Delivery, FullPolicy, Headers, Incoming, Pattern, PublishError, Request,
    RequestError, Responder, SubscribeError, Topic,
};

use crate::bus::{Bus, BusClass, BusStats, QueueDefaults};
use crate::error::ConfigError;
use crate::loaded_config::BusTable;
use crate::metrics::Metrics;

/// Default `subscriber-queue-size`.
pub const DEFAULT_SUBSCRIBER_QUEUE_SIZE: usize = 1024;
/// Default `request-queue-size`.
pub const DEFAULT_REQUEST_QUEUE_SIZE: usize = 1024;

/// `[message-bus.<id>] class = "in-memory"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
#[non_exhaustive]
pub struct InMemoryConfig {
    /// Capacity of each subscription's queue.
    pub subscriber_queue_size: usize,
    /// `"wait"` or `"drop-oldest"`.
    pub full_policy: FullPolicy,
    /// Capacity of each request handler's queue.
    pub request_queue_size: usize,
}

impl Default for InMemoryConfig {
    fn default() -> Self {
        InMemoryConfig {
            subscriber_queue_size: DEFAULT_SUBSCRIBER_QUEUE_SIZE,
            full_policy: FullPolicy::Wait,
            request_queue_size: DEFAULT_REQUEST_QUEUE_SIZE,
        }
    }
}

/// Registrations by pattern ([`PatternIndex`]): a publish reads it under a
/// shared lock, finding the matching registrations without looking at the
/// others; subscribe and unsubscribe change one slot of it under the
/// exclusive lock (O(pattern words), nothing copied).
struct Table<T>(RwLock<PatternIndex<T>>);

impl<T> Table<T> {
    fn new() -> Self {
        Table(RwLock::new(PatternIndex::new()))
    }

    fn read(&self) -> RwLockReadGuard<'_, PatternIndex<T>> {
        // Nothing panics while holding the lock; a poisoned one is still whole.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `target` unless the bus is `closed` — checked under the lock
    /// that [`clear`](Self::clear) takes after closing, so a registration
    /// racing with shutdown is either cleared or refused, never left behind
    /// (its subscriber would wait for an end that never comes).
    fn insert(&self, id: u64, pattern: &Pattern, target: T, closed: &AtomicBool) -> Result<(), T> {
        let mut index = self.0.write().unwrap_or_else(|e| e.into_inner());
        if closed.load(Ordering::Acquire) {
            return Err(target);
        }
        index.insert(id, pattern, target);
        Ok(())
    }

    /// Drops every registration (outside the lock).
    fn clear(&self) {
        let all = std::mem::take(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()));
        drop(all);
    }

    fn remove(&self, id: u64, pattern: &Pattern) {
        let removed = {
            let mut index = self.0.write().unwrap_or_else(|e| e.into_inner());
            index.remove(id, pattern)
        };
        // The sender is dropped outside the lock (it may wake the receiver).
        drop(removed);
    }
}

struct Shared<M> {
    id: String,
    config: InMemoryConfig,
    subs: Table<SubscriptionSender<M>>,
    handlers: Table<RequestSender<M>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    metrics: Arc<Metrics>,
}

/// The in-process bus.
pub struct InMemoryBus<M> {
    shared: Arc<Shared<M>>,
}

impl<M> std::fmt::Debug for InMemoryBus<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBus")
            .field("id", &self.shared.id)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<M: Send + Sync + 'static> InMemoryBus<M> {
    /// A bus with the given id and config.
    pub fn new(id: impl Into<String>, config: InMemoryConfig, metrics: Arc<Metrics>) -> Self {
        InMemoryBus {
            shared: Arc::new(Shared {
                id: id.into(),
                config,
                subs: Table::new(),
                handlers: Table::new(),
                next_id: AtomicU64::new(1),
                closed: AtomicBool::new(false),
                metrics,
            }),
        }
    }

    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Adds `target` to one of the tables; the guard removes it again.
    fn register<T: Send + Sync + 'static>(
        &self,
        table: fn(&Shared<M>) -> &Table<T>,
        pattern: Pattern,
        target: T,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        // A refused target is dropped after the lock is released: the
        // subscriber sees its end.
        let result = if table(&self.shared)
            .insert(id, &pattern, target, &self.shared.closed)
            .is_err()
        {
            Err(SubscribeError::Closed {
                bus: self.shared.id.clone(),
            })
        } else {
            let weak: Weak<Shared<M>> = Arc::downgrade(&self.shared);
            Ok(DropGuard::new(move || {
                if let Some(shared) = weak.upgrade() {
                    table(&shared).remove(id, &pattern);
                }
            }))
        };
        Box::pin(async move { result })
    }
}

impl<M: Send + Sync + 'static> Bus<M> for InMemoryBus<M> {
    fn id(&self) -> &str {
        &self.shared.id
    }

    fn publish(&self, topic: Topic, message: Arc<M>, headers: Headers) -> Publish<'_> {
        if self.closed() {
            return Publish::ready(Err(PublishError::Closed {
                bus: self.shared.id.clone(),
            }));
        }
        let subs = self.shared.subs.read();
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        let mut waiting: Vec<(SubscriptionSender<M>, Delivery<M>)> = Vec::new();
        let mut offer = |s: &SubscriptionSender<M>, d: Delivery<M>| match s.try_deliver(d) {
            TryDeliver::Delivered => delivered += 1,
            TryDeliver::DeliveredDroppingOldest => {
                delivered += 1;
                dropped += 1;
            }
            TryDeliver::Full(d) => waiting.push((s.clone(), d)),
            TryDeliver::Closed => {}
        };
        // Every match but the last gets clones; the last gets the originals, so
        // a single subscriber costs no reference-count traffic at all here.
        let mut previous: Option<&SubscriptionSender<M>> = None;
        subs.for_each_match(topic.as_str(), |_, s| {
            if let Some(p) = previous.replace(s) {
                offer(
                    p,
                    Delivery::new(topic.clone(), message.clone()).with_headers(headers.clone()),
                );
            }
        });
        let metrics_topic = if self.shared.metrics.enabled() {
            Some(topic.clone())
        } else {
            None
        };
        if let Some(last) = previous {
            offer(last, Delivery::new(topic, message).with_headers(headers));
        }
        drop(subs);
        if waiting.is_empty() {
            if let Some(t) = &metrics_topic {
                self.shared.metrics.delivered(t, delivered, dropped);
            }
            return Publish::ready(Ok(()));
        }
        let metrics = self.shared.metrics.clone();
        Publish::pending(async move {
            for (s, d) in waiting {
                if s.deliver(d).await.is_ok() {
                    delivered += 1;
                }
            }
            if let Some(t) = &metrics_topic {
                metrics.delivered(t, delivered, dropped);
            }
            Ok(())
        })
    }

    /// Each matching queue takes the whole batch under one lock with one
    /// wake-up; under `wait` a full queue takes what fits and the rest waits,
    /// in order, after every other queue was offered the batch.
    fn publish_batch(
        &self,
        topic: Topic,
        batch: Vec<(Arc<M>, Headers)>,
    ) -> BoxFuture<'_, Result<(), BatchPublishError<M>>> {
        if self.closed() {
            return Box::pin(std::future::ready(Err(BatchPublishError::new(
                0,
                batch,
                PublishError::Closed {
                    bus: self.shared.id.clone(),
                },
            ))));
        }
        let subs = self.shared.subs.read();
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        let mut waiting: Vec<(SubscriptionSender<M>, VecDeque<Delivery<M>>)> = Vec::new();
        let mut offer = |s: &SubscriptionSender<M>, mut ds: VecDeque<Delivery<M>>| {
            if let Some(pushed) = s.try_deliver_batch(&mut ds) {
                delivered += pushed.queued as u64;
                dropped += pushed.dropped_oldest as u64;
                if !ds.is_empty() {
                    waiting.push((s.clone(), ds));
                }
            }
        };
        // As in `publish`: every match but the last gets clones, the last the originals.
        let mut previous: Option<&SubscriptionSender<M>> = None;
        subs.for_each_match(topic.as_str(), |_, s| {
            if let Some(p) = previous.replace(s) {
                let clones = batch
                    .iter()
                    .map(|(m, h)| Delivery::new(topic.clone(), m.clone()).with_headers(h.clone()))
                    .collect();
                offer(p, clones);
            }
        });
        if let Some(last) = previous {
            let originals = batch
                .into_iter()
                .map(|(m, h)| Delivery::new(topic.clone(), m).with_headers(h))
                .collect();
            offer(last, originals);
        }
        drop(subs);
        if waiting.is_empty() {
            self.shared.metrics.delivered(&topic, delivered, dropped);
            return Box::pin(std::future::ready(Ok(())));
        }
        let metrics = self.shared.metrics.clone();
        Box::pin(async move {
            for (s, ds) in waiting {
                if let Ok(pushed) = s.deliver_batch(ds).await {
                    delivered += pushed.queued as u64;
                    dropped += pushed.dropped_oldest as u64;
                }
            }
            metrics.delivered(&topic, delivered, dropped);
            Ok(())
        })
    }

    fn subscribe(
        &self,
        pattern: Pattern,
        sender: SubscriptionSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>> {
        self.register(|s| &s.subs, pattern, sender)
    }

    fn handle(
        &self,
        pattern: Pattern,
        sender: RequestSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>> {
        self.register(|s| &s.handlers, pattern, sender)
    }

    fn request(
        &self,
        topic: Topic,
        message: Arc<M>,
        headers: Headers,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Arc<M>, RequestError>> {
        let closed = self.closed();
        // First registered live handler whose pattern matches.
        let handler = self
            .shared
            .handlers
            .read()
            .first_match(topic.as_str(), |h| !h.is_closed())
            .cloned();
        Box::pin(async move {
            if closed {
                return Err(RequestError::Closed {
                    bus: self.shared.id.clone(),
                });
            }
            let Some(handler) = handler else {
                return Err(RequestError::NoResponder {
                    topic: topic.to_string(),
                });
            };
            let (responder, reply) = Responder::channel();
            let exchange = async {
                if handler
                    .send(Incoming::new(
                        Request::new(topic.clone(), message, headers),
                        responder,
                    ))
                    .await
                    .is_err()
                {
                    return Err(RequestError::NoResponder {
                        topic: topic.to_string(),
                    });
                }
                match reply.await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(error)) => Err(RequestError::Handler {
                        topic: topic.to_string(),
                        error,
                    }),
                    Err(_) => Err(RequestError::Dropped {
                        topic: topic.to_string(),
                    }),
                }
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(RequestError::TimedOut {
                    topic: topic.to_string(),
                    after: timeout,
                }),
            }
        })
    }

    fn defaults(&self) -> QueueDefaults {
        QueueDefaults {
            capacity: self.shared.config.subscriber_queue_size,
            policy: self.shared.config.full_policy,
            request_capacity: self.shared.config.request_queue_size,
        }
    }

    fn stats(&self) -> BusStats {
        BusStats {
            subscriptions: self.shared.subs.read().len(),
            handlers: self.shared.handlers.read().len(),
            connected: !self.closed(),
            reconnects: 0,
            malformed: 0,
            received: 0,
            refused: None,
        }
    }

    fn shutdown(&self, _deadline: Duration) -> BoxFuture<'_, usize> {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.subs.clear();
        self.shared.handlers.clear();
        Box::pin(async { 0 })
    }
}

/// Builds `class = "in-memory"` buses.
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemoryClass;

/// `[message-bus.<id>]` of class `in-memory`, checked.
fn in_memory_config(table: BusTable) -> Result<InMemoryConfig, ConfigError> {
    let key = table.key().to_owned();
    let config: InMemoryConfig = table.parse()?;
    if config.subscriber_queue_size == 0 || config.request_queue_size == 0 {
        return Err(ConfigError::invalid(key, "queue sizes must be at least 1"));
    }
    Ok(config)
}

impl<M: Send + Sync + 'static> BusClass<M> for InMemoryClass {
    fn name(&self) -> &'static str {
        "in-memory"
    }

    fn check(&self, _id: &str, table: BusTable) -> Result<(), ConfigError> {
        in_memory_config(table).map(|_| ())
    }

    fn build(
        &self,
        id: &str,
        table: BusTable,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<dyn Bus<M>>, ConfigError> {
        let config = in_memory_config(table)?;
        Ok(Arc::new(InMemoryBus::new(id, config, metrics)))
    }
}
