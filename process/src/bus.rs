//! The trait every bus implements, and the class that builds buses from config.

use std::sync::Arc;
use std::time::Duration;

use telamon_sdk::bus::{BoxFuture, DropGuard, Publish, RequestSender, SubscriptionSender};
use telamon_sdk::{
    BatchPublishError, FullPolicy, Headers, Pattern, PublishError, RequestError, SubscribeError,
    Topic,
};

use crate::error::ConfigError;
use crate::loaded_config::BusTable;
use crate::metrics::Metrics;

/// Queue defaults a bus gives subscriptions and handlers that set none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueDefaults {
    /// Subscription queue capacity.
    pub capacity: usize,
    /// What happens when a subscription queue is full.
    pub policy: FullPolicy,
    /// Handler queue capacity.
    pub request_capacity: usize,
}

impl QueueDefaults {
    /// Defaults with these capacities and policy.
    pub fn new(capacity: usize, policy: FullPolicy, request_capacity: usize) -> Self {
        QueueDefaults {
            capacity,
            policy,
            request_capacity,
        }
    }
}

/// What a bus reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusStats {
    /// Live subscriptions.
    pub subscriptions: usize,
    /// Live request handlers.
    pub handlers: usize,
    /// Whether the bus can carry messages now (always true in-process).
    pub connected: bool,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Bodies that could not be decoded and were rejected.
    pub malformed: u64,
    /// Subscription deliveries received from a broker: once per message per
    /// queue, so a message that reached three subscriptions through one
    /// shared queue counts once (always 0 in-process).
    pub received: u64,
    /// Set while the broker refuses this bus's config: the key and what the
    /// broker said (the bus keeps retrying).
    pub refused: Option<String>,
}

/// A bus: carries messages and requests for the topics the router gives it.
///
/// Subscriptions and handlers are registered with the *sender* side of a queue
/// the router made, so one subscriber can listen on several buses through one
/// queue; the returned [`DropGuard`] removes the registration when the
/// subscriber goes away.
pub trait Bus<M>: Send + Sync + 'static {
    /// The id from `[message-bus.<id>]`.
    fn id(&self) -> &str;

    /// Publishes to every matching subscription on this bus.
    fn publish(&self, topic: Topic, message: Arc<M>, headers: Headers) -> Publish<'_>;

    /// Publishes the messages of `batch` on `topic`, in order. This default
    /// publishes them one by one and stops at the first failure; a bus that
    /// can hand them over in one go overrides it.
    fn publish_batch(
        &self,
        topic: Topic,
        batch: Vec<(Arc<M>, Headers)>,
    ) -> BoxFuture<'_, Result<(), BatchPublishError<M>>>
    where
        M: Send + Sync + 'static,
    {
        Box::pin(async move {
            for (published, (message, headers)) in batch.iter().enumerate() {
                let p = self.publish(topic.clone(), message.clone(), headers.clone());
                if let Err(e) = p.await {
                    return Err(BatchPublishError::stopped_at(published, batch, e));
                }
            }
            Ok(())
        })
    }

    /// Registers a subscription queue for `pattern`.
    fn subscribe(
        &self,
        pattern: Pattern,
        sender: SubscriptionSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>>;

    /// Registers a handler queue for `pattern`.
    fn handle(
        &self,
        pattern: Pattern,
        sender: RequestSender<M>,
    ) -> BoxFuture<'_, Result<DropGuard, SubscribeError>>;

    /// Sends a request to a handler on this bus. Must fail at once with
    /// `NoResponder` when this bus knows no handler can take it.
    fn request(
        &self,
        topic: Topic,
        message: Arc<M>,
        headers: Headers,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Arc<M>, RequestError>>;

    /// Queue defaults from this bus's config.
    fn defaults(&self) -> QueueDefaults;

    /// Current counts.
    fn stats(&self) -> BusStats;

    /// Waits up to `timeout` until the bus can carry messages: `Ok(true)` if
    /// it can, `Ok(false)` if its broker is not there yet, `Err` naming the key
    /// if its broker refuses the config. In-process buses always can.
    fn wait_connected(&self, timeout: Duration) -> BoxFuture<'_, Result<bool, ConfigError>> {
        let _ = timeout;
        Box::pin(async { Ok(true) })
    }

    /// Waits until everything published on this bus so far is confirmed
    /// (RabbitMQ at-least-once); done at once where there is nothing to wait for.
    fn flush(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async { Ok(()) })
    }

    /// Closes the bus: subscriptions end, later publishes fail with `Closed`.
    /// Waits up to `deadline` for what is in flight (RabbitMQ: publisher
    /// confirms) and returns how many published messages were never
    /// confirmed (0 where nothing is confirmed).
    fn shutdown(&self, deadline: Duration) -> BoxFuture<'_, usize>;
}

/// Builds buses of one `class` from their `[message-bus.<id>]` tables.
pub trait BusClass<M>: Send + Sync + 'static {
    /// The `class = "…"` value this builds.
    fn name(&self) -> &'static str;

    /// Checks bus `id`'s table (without `class`) without building anything.
    /// The default accepts every table; `build` still checks it.
    fn check(&self, id: &str, table: BusTable) -> Result<(), ConfigError> {
        let _ = (id, table);
        Ok(())
    }

    /// Builds bus `id` from its table (without `class`). Must not block on a
    /// broker: a bus whose broker is away starts, reports, and connects later.
    fn build(
        &self,
        id: &str,
        table: BusTable,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<dyn Bus<M>>, ConfigError>;
}
