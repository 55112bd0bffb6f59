//! Serving a handler's requests, and the handle that can remove it.
//!
//! # Under stress
//!
//! - **Many requests**: up to `concurrency` calls run at once, each its own
//!   task, so a call that blocks its thread holds up only itself; further
//!   requests wait in the handler's queue (and requesters, within their
//!   timeouts, for room in it).
//! - **Panic**: caught, counted, logged, and answered as a handler error with
//!   code `panic`; the handler goes on.
//! - **Stop or removal**: no new request is taken; calls in flight finish
//!   (ones whose requester already gave up are dropped at stop); requests still
//!   queued fail with `Dropped`. Past the process's shutdown deadline the
//!   serving task and its calls are aborted.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::HandlerError;
use crate::lifecycle::Lifecycle;
use crate::pattern::Pattern;
use crate::request::{Incoming, Request, RequestQueue};
use crate::trace_context::{TraceContext, otel};

/// A registered handler. Dropping it leaves the handler registered (like a
/// tokio `JoinHandle`); [`remove`](Self::remove) takes it off the bus.
pub struct HandlerHandle {
    pattern: Pattern,
    remove: CancellationToken,
    task: JoinHandle<()>,
}

impl fmt::Debug for HandlerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerHandle")
            .field("pattern", &self.pattern)
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

impl HandlerHandle {
    /// The pattern handled.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// True once the handler no longer serves (removed, or the process stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Removes the handler: it takes no further request, and the calls in
    /// flight finish first. In-process, a request made after this returns
    /// fails with `NoResponder`; on RabbitMQ the broker drops the handler's
    /// consumer a moment later, and a request that reaches it in between is
    /// answered `Dropped` (never left to time out).
    pub async fn remove(self) {
        self.remove.cancel();
        let _ = self.task.await;
    }
}

/// Starts serving `queue` with `handler`; the handle removes it.
pub(crate) fn spawn<M, F, Fut, R>(
    queue: RequestQueue<M>,
    concurrency: usize,
    handler: F,
    lifecycle: Arc<Lifecycle>,
    module: String,
) -> HandlerHandle
where
    M: Send + Sync + 'static,
    F: Fn(Request<M>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: Into<Arc<M>> + Send + 'static,
{
    let pattern = queue.pattern().clone();
    let remove = CancellationToken::new();
    let serving = Serving {
        handler: Arc::new(handler),
        lifecycle: lifecycle.clone(),
        module: module.into(),
    };
    let task = lifecycle
        .tracker()
        .spawn(serving.run(queue, concurrency, remove.clone()));
    lifecycle.remember(task.abort_handle());
    HandlerHandle {
        pattern,
        remove,
        task,
    }
}

struct Serving<F> {
    handler: Arc<F>,
    lifecycle: Arc<Lifecycle>,
    module: Arc<str>,
}

impl<F> Serving<F> {
    /// Takes requests while there is room for another call, until stop or removal.
    async fn run<M, Fut, R>(
        self,
        mut queue: RequestQueue<M>,
        concurrency: usize,
        remove: CancellationToken,
    ) where
        M: Send + Sync + 'static,
        F: Fn(Request<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Into<Arc<M>> + Send + 'static,
    {
        // Dropped with this task if it is aborted at the deadline, which
        // aborts the calls too.
        let mut calls = JoinSet::new();
        loop {
            tokio::select! {
                biased;
                _ = self.lifecycle.shutdown_token().cancelled() => break,
                _ = remove.cancelled() => break,
                Some(_) = calls.join_next(), if !calls.is_empty() => {}
                incoming = queue.recv(), if calls.len() < concurrency => match incoming {
                    Some(incoming) => {
                        calls.spawn(self.call(incoming));
                    }
                    None => break,
                },
            }
        }
        queue.close();
        while calls.join_next().await.is_some() {}
    }

    /// One call: in the request's trace context, panics caught, answered.
    fn call<M, Fut, R>(&self, incoming: Incoming<M>) -> impl Future<Output = ()> + Send + 'static
    where
        M: Send + Sync + 'static,
        F: Fn(Request<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
        R: Into<Arc<M>> + Send + 'static,
    {
        let (request, mut responder) = incoming.into_parts();
        let topic = request.topic().clone();
        // Only a traced request gets a span: the untraced path stays as cheap
        // as a plain call.
        let traced = TraceContext::from_headers(request.headers()).map(|t| {
            let span = tracing::info_span!("request", topic = %topic, trace_id = %t.trace_id());
            otel::set_parent(&span, &t);
            (t, span)
        });
        let handler = self.handler.clone();
        let lifecycle = self.lifecycle.clone();
        let module = self.module.clone();
        let work = async move {
            // A panic while building the future counts like one while running it.
            let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(request))) {
                Ok(fut) => {
                    // At stop, a call whose requester already gave up is
                    // dropped rather than waited for.
                    let abandoned = async {
                        lifecycle.shutdown_token().cancelled().await;
                        responder.closed().await;
                    };
                    tokio::select! {
                        biased;
                        outcome = AssertUnwindSafe(fut).catch_unwind() => outcome,
                        _ = abandoned => return,
                    }
                }
                Err(panic) => Err(panic),
            };
            let reply = match outcome {
                Ok(r) => r.map(Into::into),
                Err(panic) => {
                    lifecycle.count_panic();
                    let text = panic_text(&*panic).to_owned();
                    tracing::error!(module = %module, topic = %topic, panic = %text, "request handler panicked");
                    Err(HandlerError::new(format!("handler panicked: {text}")).with_code("panic"))
                }
            };
            responder.send(reply);
        };
        async move {
            match traced {
                Some((t, span)) => t.scope(work.instrument(span)).await,
                None => work.await,
            }
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic)"
    }
}
