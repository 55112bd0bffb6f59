//! The seam buses implement, apart from what module authors use (as axum-core
//! is apart from axum): the router behind every [`Context`](crate::Context),
//! the sender ends of subscription and handler queues, drop guards, and the
//! lifecycle the process shares with its contexts.
//!
//! A module author never needs anything from here; `telamon-process` and
//! alternative buses do.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use crate::drop_guard::DropGuard;
pub use crate::instrument::{InstrumentKind, Instruments, Series};
pub use crate::lifecycle::Lifecycle;
pub use crate::pattern_index::PatternIndex;
pub use crate::publish::Publish;
pub use crate::request::{RequestSender, request_queue};
pub use crate::subscription::{PushedBatch, QueueCounters, SubscriptionSender, TryDeliver, queue};

use crate::error::{BatchPublishError, PublishError, RequestError, SubscribeError};
use crate::headers::Headers;
use crate::pattern::Pattern;
use crate::request::{HandleOptions, RequestQueue};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::topic::Topic;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a [`Context`](crate::Context) talks to: the process's router.
///
/// Modules do not implement or call this directly; it is the seam that lets the
/// process put any bus (in-process, RabbitMQ …) behind a module without the
/// module changing.
pub trait MessageBus<M>: Send + Sync + 'static {
    /// Publishes `message` on `topic` to every matching subscription.
    fn publish(&self, topic: Topic, message: Arc<M>, headers: Headers) -> Publish<'_>;

    /// Publishes the messages of `batch` on `topic`, in order: each reaches
    /// every matching subscription as its own publish would, but the topic
    /// is routed once and each subscriber queue takes the lot in one go.
    /// One difference: a full `wait` queue does not pace the others — they
    /// are offered the whole batch first (a `drop-oldest` queue smaller than
    /// the batch may drop where message by message it would not have).
    fn publish_batch(
        &self,
        topic: Topic,
        batch: Vec<(Arc<M>, Headers)>,
    ) -> BoxFuture<'_, Result<(), BatchPublishError<M>>>;

    /// Subscribes to every topic matching `pattern`.
    fn subscribe(
        &self,
        pattern: Pattern,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription<M>, SubscribeError>>;

    /// Registers a handler for requests on topics matching `pattern`.
    fn handle(
        &self,
        pattern: Pattern,
        options: HandleOptions,
    ) -> BoxFuture<'_, Result<RequestQueue<M>, SubscribeError>>;

    /// Sends a request and waits up to `timeout` for the response.
    fn request(
        &self,
        topic: Topic,
        message: Arc<M>,
        headers: Headers,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Arc<M>, RequestError>>;

    /// The request timeout from config.
    fn default_request_timeout(&self) -> Duration;

    /// Waits until every message published so far is as safe as the bus can
    /// make it (RabbitMQ at-least-once: confirmed by the broker). In-process
    /// buses are done at once.
    fn flush(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async { Ok(()) })
    }
}
