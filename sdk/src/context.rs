//! What a module holds to publish, subscribe, request, answer and run tasks.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;

use crate::bus::MessageBus;
use crate::error::{HandlerError, PublishError, RequestError, SubscribeError};
use crate::lifecycle::Lifecycle;
use crate::pattern::IntoPattern;
use crate::request::{HandleOptions, RequestQueue};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::topic::IntoTopic;

/// A module's handle on the process. Cheap to clone; clone it into tasks.
pub struct Context<M> {
    inner: Arc<Inner<M>>,
}

struct Inner<M> {
    id: String,
    bus: Arc<dyn MessageBus<M>>,
    lifecycle: Arc<Lifecycle>,
}

impl<M> Clone for Context<M> {
    fn clone(&self) -> Self {
        Context {
            inner: self.inner.clone(),
        }
    }
}

impl<M> fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("module", &self.inner.id)
            .finish()
    }
}

impl<M: Send + Sync + 'static> Context<M> {
    /// A context for module instance `id` (the process makes these).
    pub fn new(
        id: impl Into<String>,
        bus: Arc<dyn MessageBus<M>>,
        lifecycle: Arc<Lifecycle>,
    ) -> Self {
        Context {
            inner: Arc::new(Inner {
                id: id.into(),
                bus,
                lifecycle,
            }),
        }
    }

    /// The module instance id (the `<id>` of `[module.<id>]`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Publishes a message to every subscription whose pattern matches `topic`.
    ///
    /// Fails when the topic is invalid, no route matches it, or the bus cannot
    /// take the message; it never reports success for a message that went nowhere.
    pub async fn publish(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
    ) -> Result<(), PublishError> {
        let topic = topic.into_topic()?;
        self.inner.bus.publish(topic, message.into()).await
    }

    /// Subscribes to `pattern` with the bus defaults for queue size and policy.
    pub async fn subscribe(
        &self,
        pattern: impl IntoPattern,
    ) -> Result<Subscription<M>, SubscribeError> {
        self.subscribe_with(pattern, SubscribeOptions::default())
            .await
    }

    /// Subscribes to `pattern` with explicit queue options.
    pub async fn subscribe_with(
        &self,
        pattern: impl IntoPattern,
        options: SubscribeOptions,
    ) -> Result<Subscription<M>, SubscribeError> {
        let pattern = pattern.into_pattern()?;
        self.inner.bus.subscribe(pattern, options).await
    }

    /// Sends a request and waits for the response, up to the configured timeout.
    pub async fn request(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
    ) -> Result<Arc<M>, RequestError> {
        let timeout = self.inner.bus.default_request_timeout();
        self.request_with_timeout(topic, message, timeout).await
    }

    /// Sends a request and waits for the response, up to `timeout`.
    pub async fn request_with_timeout(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
        timeout: Duration,
    ) -> Result<Arc<M>, RequestError> {
        let topic = topic.into_topic()?;
        self.inner.bus.request(topic, message.into(), timeout).await
    }

    /// Answers requests on topics matching `pattern` with `handler`.
    ///
    /// The handler is registered before this returns, so a request made after
    /// it (by any module) finds it. Requests are served at once — not only after
    /// every module is initialised — up to 32 at a time; an `Err` reaches the
    /// requester as [`RequestError::Handler`]; a panic is caught, logged and
    /// answered as a handler error.
    pub async fn handle<F, Fut, R>(
        &self,
        pattern: impl IntoPattern,
        handler: F,
    ) -> Result<(), SubscribeError>
    where
        F: Fn(Arc<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Into<Arc<M>> + Send + 'static,
    {
        self.handle_with(pattern, HandleOptions::default(), handler)
            .await
    }

    /// Like [`handle`](Context::handle), with explicit queue size and concurrency.
    pub async fn handle_with<F, Fut, R>(
        &self,
        pattern: impl IntoPattern,
        options: HandleOptions,
        handler: F,
    ) -> Result<(), SubscribeError>
    where
        F: Fn(Arc<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Into<Arc<M>> + Send + 'static,
    {
        let queue = self.request_queue(pattern, options).await?;
        let concurrency = options.concurrency_or_default();
        let lifecycle = self.inner.lifecycle.clone();
        let id = self.inner.id.clone();
        let handle =
            lifecycle
                .tracker()
                .spawn(serve(queue, concurrency, handler, lifecycle.clone(), id));
        lifecycle.remember(handle.abort_handle());
        Ok(())
    }

    /// Registers for requests on `pattern` and hands back the raw queue, for
    /// modules that want to serve requests their own way.
    pub async fn request_queue(
        &self,
        pattern: impl IntoPattern,
        options: HandleOptions,
    ) -> Result<RequestQueue<M>, SubscribeError> {
        let pattern = pattern.into_pattern()?;
        self.inner.bus.handle(pattern, options).await
    }

    /// Runs `task` once every module is initialised, until it ends or the process stops.
    ///
    /// At stop the task is cancelled at its next `.await`. A panic is caught and
    /// logged with the module id; it does not take the process down. What the
    /// task returns is dropped; use [`run_fallible`](Context::run_fallible) to
    /// have an error logged.
    pub fn run<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn(async move {
            task.await;
        });
    }

    /// Like [`run`](Context::run), for a task that can fail: an `Err` is logged
    /// with the module id.
    pub fn run_fallible<F, E>(&self, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        let id = self.inner.id.clone();
        self.spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(module = %id, error = %e, "module task failed");
            }
        });
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let lifecycle = self.inner.lifecycle.clone();
        let id = self.inner.id.clone();
        let handle = self.inner.lifecycle.tracker().spawn(async move {
            if !lifecycle.wait_ready().await {
                return;
            }
            tokio::select! {
                _ = lifecycle.shutdown_token().cancelled() => {}
                outcome = AssertUnwindSafe(task).catch_unwind() => {
                    if let Err(panic) = outcome {
                        lifecycle.count_panic();
                        tracing::error!(module = %id, panic = panic_text(&*panic), "module task panicked");
                    }
                }
            }
        });
        self.inner.lifecycle.remember(handle.abort_handle());
    }

    /// Asks the process to stop, as Ctrl-C would.
    pub fn request_stop(&self) {
        self.inner.lifecycle.request_stop();
    }

    /// True once the process is stopping.
    pub fn is_stopping(&self) -> bool {
        self.inner.lifecycle.is_cancelled()
    }

    /// Resolves when the process starts stopping.
    pub async fn stopping(&self) {
        self.inner.lifecycle.shutdown_token().cancelled().await
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic)"
    }
}

/// The loop behind [`Context::handle`]: up to `concurrency` handler calls at once;
/// at stop, takes no more requests and finishes the ones in flight (dropping
/// those whose requester already stopped waiting).
async fn serve<M, F, Fut, R>(
    mut queue: RequestQueue<M>,
    concurrency: usize,
    handler: F,
    lifecycle: Arc<Lifecycle>,
    id: String,
) where
    M: Send + Sync + 'static,
    F: Fn(Arc<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: Into<Arc<M>> + Send + 'static,
{
    let mut in_flight = FuturesUnordered::new();
    let call = |request: crate::request::Request<M>| {
        let (topic, message, mut responder) = request.into_parts();
        // A panic while building the future counts like one while running it.
        let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(message))) {
            Ok(fut) => Either::Left(AssertUnwindSafe(fut).catch_unwind()),
            Err(panic) => Either::Right(std::future::ready(Err(panic))),
        };
        let lifecycle = lifecycle.clone();
        let id = id.as_str();
        async move {
            // At stop, a call whose requester already gave up is dropped
            // rather than waited for; otherwise calls run to completion.
            let abandoned = async {
                lifecycle.shutdown_token().cancelled().await;
                responder.closed().await;
            };
            let outcome = tokio::select! {
                biased;
                outcome = fut => Some(outcome),
                _ = abandoned => None,
            };
            let reply = match outcome {
                None => return,
                Some(Ok(r)) => r.map(Into::into),
                Some(Err(panic)) => {
                    lifecycle.count_panic();
                    let text = panic_text(&*panic).to_owned();
                    tracing::error!(module = %id, topic = %topic, panic = %text, "request handler panicked");
                    Err(HandlerError::new(format!("handler panicked: {text}")).with_code("panic"))
                }
            };
            responder.send(reply);
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = lifecycle.shutdown_token().cancelled() => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            request = queue.recv(), if in_flight.len() < concurrency => match request {
                Some(request) => in_flight.push(call(request)),
                None => break,
            },
        }
    }
    queue.close();
    while in_flight.next().await.is_some() {}
}
