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

/// One request: the topic, the message and the way back.
pub struct Request<M> {
    topic: Topic,
    message: Arc<M>,
    responder: Responder<M>,
}

impl<M> fmt::Debug for Request<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("topic", &self.topic)
            .finish()
    }
}

impl<M> Request<M> {
    /// Builds a request (for bus implementations).
    pub fn new(topic: Topic, message: Arc<M>, responder: Responder<M>) -> Self {
        Request {
            topic,
            message,
            responder,
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

    /// Splits into its parts.
    pub fn into_parts(self) -> (Topic, Arc<M>, Responder<M>) {
        (self.topic, self.message, self.responder)
    }
}

/// Options of a request handler; `None` fields take the bus defaults.
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

/// The bus side of a handler's queue.
pub struct RequestSender<M>(mpsc::Sender<Request<M>>);

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
    pub async fn send(&self, request: Request<M>) -> Result<(), Request<M>> {
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
    rx: mpsc::Receiver<Request<M>>,
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
    pub async fn recv(&mut self) -> Option<Request<M>> {
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
