//! The message bus as modules see it, through [`Context`](crate::Context).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use crate::error::{PublishError, RequestError, SubscribeError};
use crate::pattern::Pattern;
use crate::request::{HandleOptions, RequestQueue};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::topic::Topic;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The future of a publish.
///
/// Finished at once when every subscriber queue took the message (the common
/// case, with no allocation); pending when it must wait (a full queue under the
/// `Wait` policy, a broker confirm).
#[must_use = "a publish does nothing unless awaited"]
pub enum Publish<'a> {
    /// Already done.
    Ready(Option<Result<(), PublishError>>),
    /// Still to do.
    Pending(BoxFuture<'a, Result<(), PublishError>>),
}

impl fmt::Debug for Publish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Publish::Ready(_) => f.write_str("Publish::Ready"),
            Publish::Pending(_) => f.write_str("Publish::Pending"),
        }
    }
}

impl<'a> Publish<'a> {
    /// A publish that already finished.
    pub fn ready(result: Result<(), PublishError>) -> Self {
        Publish::Ready(Some(result))
    }

    /// A publish that still has to wait.
    pub fn pending(fut: impl Future<Output = Result<(), PublishError>> + Send + 'a) -> Self {
        Publish::Pending(Box::pin(fut))
    }
}

impl Future for Publish<'_> {
    type Output = Result<(), PublishError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Publish::Ready(r) => Poll::Ready(r.take().expect("Publish polled after completion")),
            Publish::Pending(f) => f.as_mut().poll(cx),
        }
    }
}

/// What a [`Context`](crate::Context) talks to: the process's router.
///
/// Modules do not implement or call this directly; it is the seam that lets the
/// process put any bus (in-process, RabbitMQ …) behind a module without the
/// module changing.
pub trait MessageBus<M>: Send + Sync + 'static {
    /// Publishes `message` on `topic` to every matching subscription.
    fn publish(&self, topic: Topic, message: Arc<M>) -> Publish<'_>;

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
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Arc<M>, RequestError>>;

    /// The request timeout from config.
    fn default_request_timeout(&self) -> Duration;
}
