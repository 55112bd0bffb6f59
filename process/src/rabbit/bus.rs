//! The RabbitMQ bus: one topic exchange, routing key = topic, CBOR bodies.
//!
//! Fan-out is the in-process bus's: two subscriptions to one topic — in one
//! process or in two — both get every message. The subscriptions of one
//! process share one queue with a binding per pattern and are dispatched
//! locally (`shared_queue`); `shared-queue = false` gives each its own queue.
//! Instances that should share work name a consumer group in config
//! (`consumer-groups`). See the `link`, `publisher`,
//! `shared_queue`, `subscription`, `requester` and `responder` module docs for behaviour
//! under stress; in short: publishes fail (never vanish) while the broker is
//! away, the bus reconnects with back-off and re-declares everything, and
//! at-least-once messages outlive a lost connection.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use lapin::BasicProperties;
use serde::Serialize;
use serde::de::DeserializeOwned;
use telamon_sdk::bus::{BoxFuture, DropGuard, Publish, RequestSender, SubscriptionSender};
use telamon_sdk::{Headers, Pattern, PublishError, RequestError, SubscribeError, Topic};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{Bus, BusClass, BusStats, QueueDefaults};
use crate::codec;
use crate::error::ConfigError;
use crate::loaded_config::BusTable;
use crate::metrics::{BusHealth, Metrics};
use crate::rabbit::config::{DeliveryMode, RabbitMqConfig};
use crate::rabbit::link::{Link, OnConnect};
use crate::rabbit::publisher::{OutMessage, Publisher};
use crate::rabbit::requester::Requester;
use crate::rabbit::responder::run_handler;
use crate::rabbit::shared_queue::SharedQueue;
use crate::rabbit::subscription::{self, QueuePlan};

/// Longest a subscribe waits for its queue to be bound while connected.
const BIND_WAIT: Duration = Duration::from_secs(5);
/// Longest a reconnect waits for subscriptions to re-bind before re-sending.
const REBIND_WAIT: Duration = Duration::from_secs(3);

/// The RabbitMQ bus.
pub struct RabbitMqBus<M> {
    id: String,
    link: Arc<Link>,
    publisher: Arc<Publisher>,
    requester: Arc<Requester<M>>,
    tasks: TaskTracker,
    /// Subscription and handler tasks: stopped first, so they can delete their
    /// queues while the connection is still up.
    consumers: CancellationToken,
    consumer_tasks: TaskTracker,
    instance: String,
    next_id: AtomicU64,
    subscriptions: Arc<AtomicUsize>,
    handlers: Arc<AtomicUsize>,
    /// The queue this process's subscriptions share (`shared-queue`), made
    /// by the first subscription.
    shared: std::sync::OnceLock<SharedQueue<M>>,
    _message: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for RabbitMqBus<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitMqBus")
            .field("id", &self.id)
            .field("config", &self.link.config)
            .finish()
    }
}

/// A name unique to this bus instance, for queue names and message ids.
fn instance_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

impl<M: Serialize + DeserializeOwned + Send + Sync + 'static> RabbitMqBus<M> {
    /// Starts the bus: the connection supervisor runs in the background, so
    /// this returns at once even when the broker is away.
    pub fn start(id: &str, config: RabbitMqConfig, metrics: &Metrics) -> Self {
        let health = Arc::new(BusHealth::default());
        metrics.register_bus(id, health.clone());
        let link = Link::new(id, Arc::new(config), health);
        let instance = instance_name();
        let tasks = TaskTracker::new();
        let (publisher, collector) = Publisher::new(link.clone());
        tasks.spawn(collector);
        let probe = Arc::downgrade(&publisher);
        let _ = link.health.unconfirmed.set(Arc::new(move || {
            probe.upgrade().map_or(0, |p| p.outstanding() as u64)
        }));
        let requester = Requester::new(link.clone(), instance.clone());
        tasks.spawn(requester.clone().run_replies());
        let (resend, resend_link) = (publisher.clone(), link.clone());
        let on_connect: OnConnect = Box::new(move |live| {
            let (resend, link) = (resend.clone(), resend_link.clone());
            Box::pin(async move {
                // Re-sent and new messages must find their subscriptions'
                // bindings again (after a broker restart a transient exchange
                // comes back empty), so publishing waits for them.
                if !link.all_bound(live.generation, REBIND_WAIT).await {
                    tracing::warn!(bus = %link.bus, "not every subscription re-bound in time; publishing anyway");
                }
                resend.resend_all(&live).await
            })
        });
        tasks.spawn(link.clone().supervise(on_connect));
        RabbitMqBus {
            id: id.to_owned(),
            link,
            publisher,
            requester,
            tasks,
            consumers: CancellationToken::new(),
            consumer_tasks: TaskTracker::new(),
            instance,
            next_id: AtomicU64::new(0),
            subscriptions: Arc::new(AtomicUsize::new(0)),
            handlers: Arc::new(AtomicUsize::new(0)),
            shared: std::sync::OnceLock::new(),
            _message: PhantomData,
        }
    }

    /// Waits until the bus is connected and open for publishing (its
    /// subscriptions bound), up to `timeout`: `Ok(true)` if it is, `Ok(false)`
    /// if no broker answered in time, `Err` naming the key the broker refused.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<bool, ConfigError> {
        let waited = tokio::time::timeout(timeout, async {
            tokio::select! {
                open = self.link.publishing_open() => Ok(open),
                (key, reason) = self.link.refused() => Err(ConfigError::invalid(
                    format!("message-bus.{}.{key}", self.id),
                    format!("the broker refused it: {reason}"),
                )),
            }
        });
        waited.await.unwrap_or(Ok(false))
    }

    /// Published at-least-once messages whose confirm has not come yet.
    pub fn unconfirmed(&self) -> usize {
        self.publisher.outstanding()
    }

    /// Requests waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.requester.pending()
    }

    /// The queue of a subscription on `pattern`: `None` for the shared queue.
    fn queue_plan(&self, pattern: &Pattern) -> Option<QueuePlan> {
        let config = &self.link.config;
        if let Some(group) = config.consumer_groups.get(pattern.as_str()) {
            return Some(QueuePlan::Group(format!(
                "{}.group.{group}",
                config.exchange
            )));
        }
        if config.shared_queue {
            return None;
        }
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Some(self.own_plan(Some(n)))
    }

    /// A queue of this bus instance: `n` tells one subscription's from the shared one.
    fn own_plan(&self, n: Option<u64>) -> QueuePlan {
        let config = &self.link.config;
        match config.delivery {
            DeliveryMode::AtMostOnce => QueuePlan::Private,
            DeliveryMode::AtLeastOnce => QueuePlan::Lasting(match n {
                Some(n) => format!("{}.sub.{}.{n}", config.exchange, self.instance),
                None => format!("{}.sub.{}", config.exchange, self.instance),
            }),
        }
    }

    /// Adds a subscription to the shared queue, returned once its pattern is bound.
    fn subscribe_shared(
        &self,
        pattern: Pattern,
        sender: SubscriptionSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>> {
        let text = pattern.to_string();
        let closed = || SubscribeError::Closed {
            bus: self.id.clone(),
        };
        let registered = if self.link.stop.is_cancelled() || self.consumers.is_cancelled() {
            Err(closed())
        } else {
            let shared = self.shared.get_or_init(|| {
                SharedQueue::start(
                    self.link.clone(),
                    self.own_plan(None),
                    self.consumers.child_token(),
                    &self.consumer_tasks,
                )
            });
            shared
                .add(pattern, sender)
                .map_err(|()| closed())
                .map(|(remove, bound)| (self.guard(&self.subscriptions, remove), bound))
        };
        Box::pin(async move { self.when_bound(&text, registered).await })
    }

    /// Starts a consumer task for `pattern` and returns its guard once bound.
    fn register<F, Fut>(
        &self,
        pattern: Pattern,
        count: &Arc<AtomicUsize>,
        task: F,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>>
    where
        F: FnOnce(Pattern, CancellationToken, oneshot::Sender<Result<(), String>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let text = pattern.to_string();
        let result = if self.link.stop.is_cancelled() {
            Err(SubscribeError::Closed {
                bus: self.id.clone(),
            })
        } else {
            let stop = self.consumers.child_token();
            let (ready, bound) = oneshot::channel();
            self.consumer_tasks
                .spawn(task(pattern, stop.clone(), ready));
            Ok((self.guard(count, move || stop.cancel()), bound))
        };
        Box::pin(async move { self.when_bound(&text, result).await })
    }

    /// While connected, a subscription or handler is returned only once its
    /// queue is bound, so nothing published after `subscribe` returns is missed.
    /// While disconnected it is returned at once and binds on connection.
    async fn when_bound(
        &self,
        pattern: &str,
        registered: Result<(DropGuard, oneshot::Receiver<Result<(), String>>), SubscribeError>,
    ) -> Result<DropGuard, SubscribeError> {
        let (guard, bound) = registered?;
        if self.link.current().is_none() {
            return Ok(guard);
        }
        let refused = |reason: String| SubscribeError::Bus {
            bus: self.id.clone(),
            pattern: pattern.to_owned(),
            reason,
        };
        match tokio::time::timeout(BIND_WAIT, bound).await {
            Ok(Ok(Ok(()))) => Ok(guard),
            Ok(Ok(Err(reason))) => Err(refused(reason)),
            Ok(Err(_)) => Err(refused("bus stopped".into())),
            Err(_) => Err(refused(format!("queue not bound within {BIND_WAIT:?}"))),
        }
    }

    /// Counts a registration in `count` while the guard lives; `release` runs when it goes.
    fn guard(
        &self,
        count: &Arc<AtomicUsize>,
        release: impl FnOnce() + Send + Sync + 'static,
    ) -> DropGuard {
        count.fetch_add(1, Ordering::Relaxed);
        let count = count.clone();
        DropGuard::new(move || {
            release();
            count.fetch_sub(1, Ordering::Relaxed);
        })
    }
}

impl<M: Serialize + DeserializeOwned + Send + Sync + 'static> Bus<M> for RabbitMqBus<M> {
    fn id(&self) -> &str {
        &self.id
    }

    fn publish(&self, topic: Topic, message: Arc<M>, headers: Headers) -> Publish<'_> {
        let fail = |reason: String| {
            Publish::ready(Err(PublishError::Bus {
                bus: self.id.clone(),
                topic: topic.to_string(),
                reason,
            }))
        };
        if self.link.stop.is_cancelled() {
            return Publish::ready(Err(PublishError::Closed {
                bus: self.id.clone(),
            }));
        }
        let body = match codec::encode_cbor_with(&*message, self.link.config.cbor_unit) {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let max = self.link.config.max_message_size;
        if body.len() > max {
            return fail(format!(
                "message of {} bytes exceeds max-message-size {max}",
                body.len()
            ));
        }
        let table = match super::headers::encode(&headers) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let persistent = self.link.config.delivery == DeliveryMode::AtLeastOnce;
        let seq = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut properties = BasicProperties::default()
            .with_content_type(crate::rabbit::link::CBOR_CONTENT_TYPE.into())
            .with_message_id(format!("{}-{seq}", self.instance).into())
            .with_timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            )
            .with_delivery_mode(if persistent { 2 } else { 1 });
        if let Some(table) = table {
            properties = properties.with_headers(table);
        }
        let out = OutMessage {
            routing_key: topic.as_str().to_owned(),
            body: Arc::new(body),
            properties,
        };
        Publish::pending(async move {
            self.publisher
                .publish(out)
                .await
                .map_err(|reason| PublishError::Bus {
                    bus: self.id.clone(),
                    topic: topic.to_string(),
                    reason,
                })
        })
    }

    fn subscribe(
        &self,
        pattern: Pattern,
        sender: SubscriptionSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>> {
        let Some(plan) = self.queue_plan(&pattern) else {
            return self.subscribe_shared(pattern, sender);
        };
        let link = self.link.clone();
        self.register(pattern, &self.subscriptions, move |pattern, stop, ready| {
            subscription::run(link, pattern, plan, sender, stop, ready)
        })
    }

    fn handle(
        &self,
        pattern: Pattern,
        sender: RequestSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>> {
        let (link, replies) = (self.link.clone(), self.consumer_tasks.clone());
        self.register(pattern, &self.handlers, move |pattern, stop, ready| {
            run_handler(link, pattern, sender, stop, ready, replies)
        })
    }

    fn request(
        &self,
        topic: Topic,
        message: Arc<M>,
        headers: Headers,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Arc<M>, RequestError>> {
        Box::pin(async move {
            if self.link.stop.is_cancelled() {
                return Err(RequestError::Closed {
                    bus: self.id.clone(),
                });
            }
            self.requester
                .request(topic, message, headers, timeout)
                .await
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            match self.publisher.confirmed_so_far().await {
                Ok(()) => Ok(()),
                Err(n) => Err(PublishError::Bus {
                    bus: self.id.clone(),
                    topic: String::new(),
                    reason: format!(
                        "{n} published messages are not confirmed: the connection is gone (they are re-sent on the next one)"
                    ),
                }),
            }
        })
    }

    fn wait_connected(&self, timeout: Duration) -> BoxFuture<'_, Result<bool, ConfigError>> {
        Box::pin(RabbitMqBus::wait_connected(self, timeout))
    }

    fn defaults(&self) -> QueueDefaults {
        let c = &self.link.config;
        QueueDefaults {
            capacity: c.subscriber_queue_size,
            policy: c.full_policy,
            request_capacity: c.request_queue_size,
        }
    }

    fn stats(&self) -> BusStats {
        let h = &self.link.health;
        BusStats {
            subscriptions: self.subscriptions.load(Ordering::Relaxed),
            handlers: self.handlers.load(Ordering::Relaxed),
            connected: h.connected.load(Ordering::Relaxed),
            reconnects: h.reconnects.load(Ordering::Relaxed),
            malformed: h.malformed.load(Ordering::Relaxed),
            received: h.received.load(Ordering::Relaxed),
            refused: self
                .link
                .refusal()
                .map(|(key, reason)| format!("`{key}`: {reason}")),
        }
    }

    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            // Outstanding confirms get what is left of the shutdown timeout.
            let _ = tokio::time::timeout(deadline, self.publisher.confirmed_so_far()).await;
            self.publisher.close();
            let lost = self.publisher.outstanding();
            if lost > 0 {
                tracing::warn!(
                    bus = %self.id,
                    unconfirmed = lost,
                    "stopping with published messages the broker never confirmed; they may be lost"
                );
            }
            // Subscription tasks delete their queues, then the supervisor closes the connection.
            self.consumers.cancel();
            self.consumer_tasks.close();
            if tokio::time::timeout(Duration::from_secs(3), self.consumer_tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(bus = %self.id, "subscriptions did not close within 3 s of stop");
            }
            self.link.stop.cancel();
            self.tasks.close();
            if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(bus = %self.id, "RabbitMQ tasks did not finish within 5 s of stop");
            }
            lost
        })
    }
}

impl<M> Drop for RabbitMqBus<M> {
    fn drop(&mut self) {
        // A bus dropped without `shutdown` (a failed start) must not keep
        // reconnecting in the background.
        self.consumers.cancel();
        self.link.stop.cancel();
    }
}

/// Builds `class = "rabbit-mq"` buses.
#[derive(Debug, Clone, Copy, Default)]
pub struct RabbitMqClass;

/// `[message-bus.<id>]` of class `rabbit-mq`, checked.
fn rabbit_config(table: BusTable) -> Result<RabbitMqConfig, ConfigError> {
    let key = table.key().to_owned();
    let config: RabbitMqConfig = table.parse()?;
    config
        .check()
        .map_err(|problem| ConfigError::invalid(key, problem))?;
    Ok(config)
}

impl<M: Serialize + DeserializeOwned + Send + Sync + 'static> BusClass<M> for RabbitMqClass {
    fn name(&self) -> &'static str {
        "rabbit-mq"
    }

    fn check(&self, _id: &str, table: BusTable) -> Result<(), ConfigError> {
        rabbit_config(table).map(|_| ())
    }

    fn build(
        &self,
        id: &str,
        table: BusTable,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<dyn Bus<M>>, ConfigError> {
        let config = rabbit_config(table)?;
        tracing::info!(bus = id, config = ?config, "starting RabbitMQ bus");
        Ok(Arc::new(RabbitMqBus::<M>::start(id, config, &metrics)))
    }
}
