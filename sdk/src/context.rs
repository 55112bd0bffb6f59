//! What a module holds to publish, subscribe, request, answer and run tasks.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use crate::bus::MessageBus;
use crate::error::{BatchPublishError, HandlerError, PublishError, RequestError, SubscribeError};
use crate::handler::{self, HandlerHandle, panic_text};
use crate::headers::Headers;
use crate::instrument::{Counter, Gauge};
use crate::lifecycle::Lifecycle;
use crate::pattern::IntoPattern;
use crate::request::{HandleOptions, Request, RequestOptions, RequestQueue};
use crate::subscription::{SubscribeOptions, Subscription};
use crate::topic::IntoTopic;
use crate::trace_context::TraceContext;

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
    /// take the message; it never reports success for a message that went
    /// nowhere. What `Ok` promises depends on the bus: in-process, every
    /// matching subscription queue has the message; RabbitMQ at-least-once,
    /// the broker has it or the bus holds it for re-sending until it confirms
    /// (see [`flush`](Self::flush) to wait for the confirms). Inside a trace
    /// ([`TraceContext`]) the message carries its `traceparent`.
    pub async fn publish(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
    ) -> Result<(), PublishError> {
        self.publish_with(topic, message, Headers::new()).await
    }

    /// [`publish`](Self::publish) with headers.
    pub async fn publish_with(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
        headers: Headers,
    ) -> Result<(), PublishError> {
        let topic = topic.into_topic()?;
        // Headers taken from a delivery lose its id here, once, not per subscriber.
        let headers = TraceContext::propagate(headers).without_delivery_id();
        self.inner.bus.publish(topic, message.into(), headers).await
    }

    /// Publishes `messages` on `topic` one after the other, as that many
    /// [`publish_with`](Self::publish_with) calls would: a subscriber receives
    /// each on its own, in order, with its headers. The topic is routed once
    /// and, on the in-process bus, each subscriber queue takes the lot under
    /// one lock with one wake-up, which is what makes it cheaper than a loop
    /// when a module has many messages at hand at once. One difference from
    /// a loop: a full `wait` queue does not hold the batch back from the
    /// other queues, which are offered all of it first (so a `drop-oldest`
    /// queue smaller than the batch may drop where a loop, paced by the
    /// slow queue, would not have).
    ///
    /// On failure the error says how many, from the first, were published,
    /// and gives the rest back, in order, to be published again without a gap.
    ///
    /// ```
    /// # use telamon_sdk::{Context, Headers};
    /// # async fn f(ctx: Context<String>) -> Result<(), telamon_sdk::BatchPublishError<String>> {
    /// let lines = ["a", "b", "c"].map(|l| (l.to_owned().into(), Headers::new()));
    /// ctx.publish_batch("log.lines", lines).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_batch(
        &self,
        topic: impl IntoTopic,
        messages: impl IntoIterator<Item = (Arc<M>, Headers)>,
    ) -> Result<(), BatchPublishError<M>> {
        let current = TraceContext::current();
        let batch: Vec<(Arc<M>, Headers)> = messages
            .into_iter()
            .map(|(m, h)| {
                let h = TraceContext::propagate_from(current, h);
                (m, h.without_delivery_id())
            })
            .collect();
        let topic = match topic.into_topic() {
            Ok(t) => t,
            Err(e) => return Err(BatchPublishError::new(0, batch, e.into())),
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.bus.publish_batch(topic, batch).await
    }

    /// Waits until every message this process published so far is as safe as
    /// its bus makes it: on RabbitMQ at-least-once, confirmed by the broker.
    /// Fails if a bus cannot confirm them now (the broker is away; they are
    /// kept and re-sent on the next connection).
    pub async fn flush(&self) -> Result<(), PublishError> {
        self.inner.bus.flush().await
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
        self.request_with(topic, message, RequestOptions::new())
            .await
    }

    /// Sends a request and waits for the response, up to `timeout`.
    pub async fn request_with_timeout(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
        timeout: Duration,
    ) -> Result<Arc<M>, RequestError> {
        self.request_with(topic, message, RequestOptions::new().timeout(timeout))
            .await
    }

    /// Sends a request with a timeout and headers of its own. Inside a trace
    /// ([`TraceContext`]) the request carries its `traceparent`, so the
    /// handler — in this process or another — continues the trace.
    pub async fn request_with(
        &self,
        topic: impl IntoTopic,
        message: impl Into<Arc<M>>,
        options: RequestOptions,
    ) -> Result<Arc<M>, RequestError> {
        let topic = topic.into_topic()?;
        let (timeout, headers) = options.into_parts();
        let timeout = timeout.unwrap_or_else(|| self.inner.bus.default_request_timeout());
        let headers = TraceContext::propagate(headers);
        self.inner
            .bus
            .request(topic, message.into(), headers, timeout)
            .await
    }

    /// Answers requests on topics matching `pattern` with `handler`, which
    /// sees each [`Request`]: its topic, message and headers.
    ///
    /// The handler is registered before this returns, so a request made after
    /// it (by any module) finds it. Requests are served at once — not only after
    /// every module is initialised — up to 32 at a time, each call its own
    /// task; an `Err` reaches the requester as [`RequestError::Handler`]; a
    /// panic is caught, logged and answered as a handler error. The returned
    /// handle removes the handler; dropping it leaves the handler registered.
    pub async fn handle<F, Fut, R>(
        &self,
        pattern: impl IntoPattern,
        handler: F,
    ) -> Result<HandlerHandle, SubscribeError>
    where
        F: Fn(Request<M>) -> Fut + Send + Sync + 'static,
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
    ) -> Result<HandlerHandle, SubscribeError>
    where
        F: Fn(Request<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Into<Arc<M>> + Send + 'static,
    {
        let queue = self.request_queue(pattern, options).await?;
        Ok(handler::spawn(
            queue,
            options.concurrency_or_default(),
            handler,
            self.inner.lifecycle.clone(),
            self.inner.id.clone(),
        ))
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

    /// Runs `task` at once — during `init` too, before the other modules are
    /// ready — and lets it finish at stop instead of cancelling it.
    ///
    /// For a module's own services (a connection to another system, a stream
    /// that must checkpoint before it ends): the task watches
    /// [`stopping`](Self::stopping), finishes what it has in hand and
    /// returns. The process waits for it, with the handlers, within
    /// `[process] shutdown-timeout`, then aborts it; buses close only after
    /// that, so the task can still publish while it drains. Use
    /// [`started`](Self::started) to wait for the other modules. A panic is
    /// caught and logged with the module id.
    pub fn run_draining<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let lifecycle = self.inner.lifecycle.clone();
        let id = self.inner.id.clone();
        let handle = self.inner.lifecycle.tracker().spawn(async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                lifecycle.count_panic();
                tracing::error!(module = %id, panic = panic_text(&*panic), "module task panicked");
            }
        });
        self.inner.lifecycle.remember(handle.abort_handle());
    }

    /// Resolves when every module is initialised (at once if they are);
    /// `false` when the process stopped first.
    pub async fn started(&self) -> bool {
        self.inner.lifecycle.wait_ready().await
    }

    /// A gauge this module exports on the process's `/metrics` endpoint as
    /// `name{module="<id>", labels…}`; the same name and labels give back the
    /// same gauge. Names use `[a-z0-9_]` (other characters become `_`).
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        self.inner
            .lifecycle
            .instruments()
            .gauge(&self.inner.id, name, help, labels)
    }

    /// A counter this module exports, like [`gauge`](Self::gauge).
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        self.inner
            .lifecycle
            .instruments()
            .counter(&self.inner.id, name, help, labels)
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
