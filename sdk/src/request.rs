//! Requests as a handler receives them, and the queue they arrive on.
//!
//! # Under stress
//!
//! - **Full handler queue**: the requester waits for room; the wait counts
//!   against its timeout, so a flooded handler shows up as `TimedOut`, never as
//!   unbounded memory.
//! - **Handler gone**: a request to a topic whose handler was dropped fails at
//!   once with `NoResponder`; one that was queued when the handler went away
//!   fails with `Dropped`.
//! - **Timeout**: the requester stops waiting; the handler may still finish, and
//!   its late answer is discarded without error (nothing is kept per request).

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::drop_guard::DropGuard;
use crate::error::HandlerError;
use crate::headers::Headers;
use crate::pattern::Pattern;
use crate::topic::Topic;

/// What a handler answers: a response, or an error that reaches the requester.
pub type Reply<M> = Result<Arc<M>, HandlerError>;

/// The way back to one requester. Answer with [`send`](Responder::send); dropping
/// it unanswered makes the request fail with `Dropped`.
pub struct Responder<M>(oneshot::Sender<Reply<M>>);

impl<M> Responder<M> {
    /// A responder and the receiver its answer arrives on (for bus implementations).
    pub fn channel() -> (Self, oneshot::Receiver<Reply<M>>) {
        let (tx, rx) = oneshot::channel();
        (Responder(tx), rx)
    }

    /// Sends the answer. Returns `false` if the requester stopped waiting.
    pub fn send(self, reply: Reply<M>) -> bool {
        self.0.send(reply).is_ok()
    }

    /// True once the requester stopped waiting (timed out or dropped).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Resolves when the requester stops waiting.
    pub async fn closed(&mut self) {
        self.0.closed().await
    }
}

impl<M> fmt::Debug for Responder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A request as its handler sees it: the topic it was made on (a handler
/// registered on a pattern answers many), the message, and its headers.
pub struct Request<M> {
    topic: Topic,
    message: Arc<M>,
    headers: Headers,
}

impl<M> Clone for Request<M> {
    fn clone(&self) -> Self {
        Request {
            topic: self.topic.clone(),
            message: self.message.clone(),
            headers: self.headers.clone(),
        }
    }
}

impl<M> fmt::Debug for Request<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("topic", &self.topic)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl<M> Request<M> {
    /// A request on `topic` (buses build these).
    pub fn new(topic: Topic, message: Arc<M>, headers: Headers) -> Self {
        Request {
            topic,
            message,
            headers,
        }
    }

    /// The topic the request was made on.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The request message.
    pub fn message(&self) -> &Arc<M> {
        &self.message
    }

    /// The request's headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The message alone.
    pub fn into_message(self) -> Arc<M> {
        self.message
    }

    /// Splits into topic, message and headers.
    pub fn into_parts(self) -> (Topic, Arc<M>, Headers) {
        (self.topic, self.message, self.headers)
    }
}

/// A request waiting in a handler's [`RequestQueue`], with the way back to
/// its requester.
pub struct Incoming<M> {
    request: Request<M>,
    responder: Responder<M>,
}

impl<M> fmt::Debug for Incoming<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("request", &self.request)
            .field("responder", &self.responder)
            .finish()
    }
}

impl<M> Incoming<M> {
    /// Pairs a request with its responder (buses build these).
    pub fn new(request: Request<M>, responder: Responder<M>) -> Self {
        Incoming { request, responder }
    }

    /// The request.
    pub fn request(&self) -> &Request<M> {
        &self.request
    }

    /// Splits into the request and the way back.
    pub fn into_parts(self) -> (Request<M>, Responder<M>) {
        (self.request, self.responder)
    }
}

/// Options of a request handler; `None` fields take the bus defaults.
///
/// Concurrency *N* means up to *N* calls of the handler at once, each its own
/// task: a call that blocks its thread for a while holds up only itself (on
/// a multi-threaded runtime the others go on on other threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandleOptions {
    capacity: Option<usize>,
    concurrency: Option<usize>,
}

/// How many requests one handler runs at once unless told otherwise.
pub const DEFAULT_HANDLER_CONCURRENCY: usize = 32;

impl HandleOptions {
    /// Bus defaults for everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Capacity of the queue requests wait in (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }

    /// How many requests the handler runs concurrently (at least 1; default 32).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = Some(concurrency.max(1));
        self
    }

    /// The capacity, or `default`.
    pub fn capacity_or(&self, default: usize) -> usize {
        self.capacity.unwrap_or(default).max(1)
    }

    /// The concurrency, or [`DEFAULT_HANDLER_CONCURRENCY`].
    pub fn concurrency_or_default(&self) -> usize {
        self.concurrency
            .unwrap_or(DEFAULT_HANDLER_CONCURRENCY)
            .max(1)
    }
}

/// Options of one request: a timeout other than the configured one, headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    timeout: Option<std::time::Duration>,
    headers: Headers,
}

impl RequestOptions {
    /// The configured timeout, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits at most this long for the response.
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends these headers with the request.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    pub(crate) fn into_parts(self) -> (Option<std::time::Duration>, Headers) {
        (self.timeout, self.headers)
    }
}

/// The bus side of a handler's queue.
pub struct RequestSender<M>(mpsc::Sender<Incoming<M>>);

impl<M> Clone for RequestSender<M> {
    fn clone(&self) -> Self {
        RequestSender(self.0.clone())
    }
}

impl<M> fmt::Debug for RequestSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSender")
            .field("closed", &self.0.is_closed())
            .finish()
    }
}

impl<M: Send + Sync + 'static> RequestSender<M> {
    /// Queues a request, waiting for room. Gives it back if the handler is gone.
    pub async fn send(&self, request: Incoming<M>) -> Result<(), Incoming<M>> {
        match self.0.try_send(request) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(r)) => Err(r),
            Err(mpsc::error::TrySendError::Full(r)) => self.0.send(r).await.map_err(|e| e.0),
        }
    }

    /// True once the handler's queue was dropped.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A handler's end: requests for one pattern, from every bus of its route.
pub struct RequestQueue<M> {
    pattern: Pattern,
    rx: mpsc::Receiver<Incoming<M>>,
    guards: Vec<DropGuard>,
}

impl<M> fmt::Debug for RequestQueue<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestQueue")
            .field("pattern", &self.pattern)
            .finish()
    }
}

/// Makes a handler queue: the sender for buses, the queue for the handler.
pub fn request_queue<M>(pattern: Pattern, capacity: usize) -> (RequestSender<M>, RequestQueue<M>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        RequestSender(tx),
        RequestQueue {
            pattern,
            rx,
            guards: Vec::new(),
        },
    )
}

impl<M: Send + Sync + 'static> RequestQueue<M> {
    /// The next request; `None` once every bus closed the queue.
    pub async fn recv(&mut self) -> Option<Incoming<M>> {
        self.rx.recv().await
    }

    /// Stops taking requests; ones already queued can still be read.
    pub fn close(&mut self) {
        self.rx.close();
        self.guards.clear();
    }

    /// The pattern handled.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Keeps a bus registration alive for as long as this queue (for bus implementations).
    pub fn attach(&mut self, guard: DropGuard) {
        self.guards.push(guard);
    }
}
