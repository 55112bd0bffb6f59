//! Server-sent events: the messages of a bus pattern, streamed to every
//! client of a path as `text/event-stream`.
//!
//! Each message is one event whose data is the JSON object
//! `{"topic": "…", "message": …}`.
//!
//! # Under stress
//!
//! - **A slow or stalled client**: each client has a queue of
//!   `client-queue` events; a client whose queue is full is disconnected at
//!   once (its connection is cut, not only its stream ended: hyper would
//!   otherwise wait forever to write what it holds) and counted in
//!   `telamon_rest_sse_dropped_total` — it never holds up the bus or the
//!   other clients.
//! - **A fast publisher**: the stream's own subscription drops its oldest
//!   message when full (`drop-oldest`, 4096), so the stream never slows a
//!   publisher; what it missed is logged at `warn` with a count.
//! - **Stop**: every stream ends and its connection is cut, so the server's
//!   graceful shutdown waits neither for clients that would never leave nor
//!   for one that stopped reading; a client connecting after that gets 503.

use std::sync::{Arc, Mutex};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use telamon_sdk::{
    Context, Counter, FullPolicy, Gauge, Message, Pattern, SubscribeOptions, Subscription,
};
use tokio::sync::mpsc;

use crate::config::EventStreamConfig;
use crate::connection::Connection;

/// The stream's own subscription queue.
const SUBSCRIPTION_QUEUE: usize = 4096;

#[derive(Debug)]
pub(crate) struct EventStream {
    pub(crate) path: String,
    client_queue: usize,
    clients: Mutex<Clients>,
    connected: Gauge,
    dropped: Counter,
}

/// The clients of a stream; none join once it is closed.
#[derive(Debug, Default)]
struct Clients {
    list: Vec<(mpsc::Sender<Arc<str>>, Connection)>,
    closed: bool,
}

#[derive(Serialize)]
struct Envelope<'a, M> {
    topic: &'a str,
    message: &'a M,
}

impl EventStream {
    /// Subscribes to the stream's pattern and starts passing its messages on.
    pub(crate) async fn start<M: Message>(
        config: &EventStreamConfig,
        pattern: &Pattern,
        ctx: &Context<M>,
    ) -> Result<Arc<Self>, telamon_sdk::SubscribeError> {
        let labels = [("path", config.path.as_str())];
        let stream = Arc::new(EventStream {
            path: config.path.clone(),
            client_queue: config.client_queue,
            clients: Mutex::new(Clients::default()),
            connected: ctx.gauge(
                "telamon_rest_sse_clients",
                "clients connected to a server-sent event stream",
                &labels,
            ),
            dropped: ctx.counter(
                "telamon_rest_sse_dropped",
                "clients of a server-sent event stream disconnected because they fell behind",
                &labels,
            ),
        });
        let options = SubscribeOptions::new()
            .capacity(SUBSCRIPTION_QUEUE)
            .policy(FullPolicy::DropOldest);
        let sub = ctx.subscribe_with(pattern.clone(), options).await?;
        let me = stream.clone();
        let id = ctx.id().to_owned();
        ctx.run(async move { me.pass_on(sub, &id).await });
        Ok(stream)
    }

    async fn pass_on<M: Message>(&self, mut sub: Subscription<M>, id: &str) {
        let mut reported = 0;
        while let Some(d) = sub.recv().await {
            if sub.lagged() > reported {
                tracing::warn!(module = %id, path = %self.path, missed = sub.lagged() - reported, "the event stream fell behind the bus; messages were not streamed");
                reported = sub.lagged();
            }
            // One lock per message; writing the JSON under it holds up only
            // a client connecting at that moment.
            let mut clients = self.lock();
            if clients.list.is_empty() {
                continue;
            }
            let envelope = Envelope {
                topic: d.topic().as_str(),
                message: &**d.message(),
            };
            let data: Arc<str> = match serde_json::to_string(&envelope) {
                Ok(s) => s.into(),
                Err(e) => {
                    tracing::warn!(module = %id, topic = %d.topic(), error = %e, "a message cannot be written as JSON; not streamed");
                    continue;
                }
            };
            clients.list.retain(|(c, connection)| match c.try_send(data.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.inc();
                    connection.cut.cut();
                    tracing::info!(module = %id, path = %self.path, peer = %connection.peer, "an event stream client fell behind; disconnected");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new client's response: the stream of events from now on (503 once
    /// the stream is closed).
    pub(crate) fn connect(&self, connection: Connection) -> Response {
        let (tx, rx) = mpsc::channel::<Arc<str>>(self.client_queue);
        {
            let mut clients = self.lock();
            if clients.closed {
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the server is stopping",
                )
                    .into_response();
            }
            // Clients that left since the last message go now, so a quiet
            // stream does not collect them.
            clients.list.retain(|(c, _)| !c.is_closed());
            clients.list.push((tx, connection));
        }
        // Counted while the response body lives: hyper drops it when the
        // client goes or its stream ends.
        let client = Connected::new(rx, self.connected.clone());
        let events = futures_util::stream::unfold(client, |mut client| async move {
            let data = client.rx.recv().await?;
            Some((
                Ok::<_, std::convert::Infallible>(Event::default().data(&*data)),
                client,
            ))
        });
        Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response()
    }

    /// Ends every client's stream and cuts its connection (at stop): a
    /// client that stopped reading would otherwise hold hyper, and the stop,
    /// until the shutdown deadline.
    pub(crate) fn close(&self) {
        let mut clients = self.lock();
        clients.closed = true;
        for (_, connection) in clients.list.drain(..) {
            connection.cut.cut();
        }
    }
}

/// One client's queue, counted in the `connected` gauge while it lives.
struct Connected {
    rx: mpsc::Receiver<Arc<str>>,
    gauge: Gauge,
}

impl Connected {
    fn new(rx: mpsc::Receiver<Arc<str>>, gauge: Gauge) -> Self {
        gauge.add(1);
        Connected { rx, gauge }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.gauge.add(-1);
    }
}
