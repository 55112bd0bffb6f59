//! Requests across processes over RabbitMQ: handler queues on one side, one
//! reply queue per process and correlation ids on the other.
//!
//! - Requests go to the `<exchange>.requests` topic exchange (routing key =
//!   topic), so subscribers never see them. They are published `mandatory`:
//!   when no handler queue is bound, the broker returns the message and the
//!   request fails at once with `NoResponder`.
//! - Each handler pattern has one shared queue, `<exchange>.request.<pattern>`
//!   (auto-delete: gone when its last handler goes), so several instances of a
//!   handler share the requests.
//! - Answers go to the requester's reply queue (exclusive, auto-delete, one
//!   per process) with the request's `correlation-id`. Nothing is declared per
//!   request; a pending request is one map entry, removed when it ends.
//!
//! # Under stress
//!
//! - **Timeout**: the map entry is removed; a late answer is dropped. The
//!   request carries `expiration` = timeout, so a stale request is not served.
//! - **Connection lost**: requests fail with a bus error; pending ones time
//!   out (their reply queue went with the connection).
//! - **Malformed request**: counted, and answered with a handler error so the
//!   requester does not wait for its timeout.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use telamon_sdk::{HandlerError, Pattern, Request, RequestError, RequestSender, Responder, Topic};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec;
use crate::rabbit_link::{CBOR_CONTENT_TYPE, Link, Live};
use crate::rabbit_subscription::{Attempts, close_queue};

/// What travels back: the response or the handler's error.
#[derive(Serialize)]
enum ReplyOut<'a, M> {
    Ok(&'a M),
    Err(&'a HandlerError),
}

#[derive(Deserialize)]
enum ReplyIn<M> {
    Ok(M),
    Err(HandlerError),
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The requesting side: one reply queue, a map of pending requests.
pub(crate) struct Requester<M> {
    link: Arc<Link>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next_id: AtomicU64,
    /// The current reply queue and the connection it lives on.
    reply_queue: watch::Sender<Option<(u64, String)>>,
    instance: String,
    _message: PhantomData<fn() -> M>,
}

/// Removes a pending entry whatever way the request ends.
struct PendingGuard<'a, M> {
    requester: &'a Requester<M>,
    id: u64,
}

impl<M> Drop for PendingGuard<'_, M> {
    fn drop(&mut self) {
        self.requester
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl<M: Serialize + DeserializeOwned + Send + Sync + 'static> Requester<M> {
    pub(crate) fn new(link: Arc<Link>, instance: String) -> Arc<Self> {
        Arc::new(Requester {
            link,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            reply_queue: watch::channel(None).0,
            instance,
            _message: PhantomData,
        })
    }

    /// Requests waiting for an answer (for tests and stats).
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Keeps the reply queue `<exchange>.reply.<instance>` (exclusive,
    /// auto-delete) consumed on every connection.
    pub(crate) async fn run_replies(self: Arc<Self>) {
        let name = format!("{}.reply.{}", self.link.config.exchange, self.instance);
        let stop = self.link.stop.clone();
        let _counted = self.link.consumer();
        let mut attempts = Attempts::new(None);
        while let Some(live) = attempts.next(&self.link, &stop).await {
            let opened = async {
                let channel = live.connection.create_channel().await?;
                let options = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                };
                channel
                    .queue_declare(name.as_str().into(), options, FieldTable::default())
                    .await?;
                let consumer = channel
                    .basic_consume(
                        name.as_str().into(),
                        "".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((channel, consumer))
            }
            .await;
            let (_channel, mut consumer) = match opened {
                Ok(o) => o,
                Err(e) => {
                    attempts.failed(&self.link, &live, "reply queue", &e);
                    continue;
                }
            };
            attempts.bound(&self.link, &live);
            self.reply_queue
                .send_replace(Some((live.generation, name.clone())));
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = consumer.next() => next,
                };
                match next {
                    Some(Ok(d)) => {
                        let id = d
                            .properties
                            .correlation_id()
                            .as_ref()
                            .and_then(|c| c.as_str().parse::<u64>().ok());
                        let waiter = id.and_then(|id| {
                            self.pending
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&id)
                        });
                        if let Some(tx) = waiter {
                            let _ = tx.send(d.data);
                        }
                    }
                    Some(Err(_)) | None => {
                        self.reply_queue.send_replace(None);
                        attempts.lost(&self.link, &live);
                        break;
                    }
                }
            }
        }
    }

    async fn reply_queue_for(&self, live: &Live, timeout: Duration) -> Option<String> {
        let mut rx = self.reply_queue.subscribe();
        let ready = rx.wait_for(|q| q.as_ref().is_some_and(|(g, _)| *g == live.generation));
        match tokio::time::timeout(timeout, ready).await {
            Ok(Ok(q)) => q.as_ref().map(|(_, name)| name.clone()),
            _ => None,
        }
    }

    /// Sends a request and waits for its answer.
    pub(crate) async fn request(
        &self,
        topic: Topic,
        message: Arc<M>,
        timeout: Duration,
    ) -> Result<Arc<M>, RequestError> {
        let bus_error = |reason: String| RequestError::Bus {
            bus: self.link.bus.clone(),
            topic: topic.to_string(),
            reason,
        };
        let Some(live) = self.link.current() else {
            return Err(bus_error("not connected to RabbitMQ".into()));
        };
        let body = codec::encode_cbor(&*message).map_err(|e| bus_error(e.to_string()))?;
        if body.len() > self.link.config.max_message_size {
            return Err(bus_error(format!(
                "request of {} bytes exceeds max-message-size {}",
                body.len(),
                self.link.config.max_message_size
            )));
        }
        let work = async {
            let reply_to = self
                .reply_queue_for(&live, timeout)
                .await
                .ok_or_else(|| bus_error("reply queue not ready".into()))?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, tx);
            let _guard = PendingGuard {
                requester: self,
                id,
            };
            let properties = BasicProperties::default()
                .with_content_type(CBOR_CONTENT_TYPE.into())
                .with_correlation_id(id.to_string().into())
                .with_reply_to(reply_to.into())
                .with_message_id(format!("{}-r{id}", self.instance).into())
                .with_timestamp(unix_seconds())
                .with_expiration(timeout.as_millis().max(1).to_string().into());
            let confirm = live
                .request
                .basic_publish(
                    self.link.request_exchange().into(),
                    topic.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    properties,
                )
                .await
                .map_err(|e| {
                    self.link.report(live.generation);
                    bus_error(e.to_string())
                })?;
            tokio::pin!(rx);
            let answer = tokio::select! {
                biased;
                answer = &mut rx => answer,
                confirmed = confirm => {
                    match confirmed {
                        Ok(Confirmation::Ack(Some(_))) => {
                            return Err(RequestError::NoResponder { topic: topic.to_string() });
                        }
                        Ok(Confirmation::Nack(_)) => return Err(bus_error("the broker refused the request (nack)".into())),
                        Ok(_) => {}
                        Err(e) => return Err(bus_error(e.to_string())),
                    }
                    rx.await
                }
            };
            let bytes = answer.map_err(|_| bus_error("bus stopped".into()))?;
            match codec::decode_cbor::<ReplyIn<M>>(&bytes, &self.link.limits) {
                Ok(ReplyIn::Ok(m)) => Ok(Arc::new(m)),
                Ok(ReplyIn::Err(error)) => Err(RequestError::Handler {
                    topic: topic.to_string(),
                    error,
                }),
                Err(e) => Err(bus_error(format!("malformed reply: {e}"))),
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(RequestError::TimedOut {
                topic: topic.to_string(),
                after: timeout,
            }),
        }
    }
}

/// Publishes an answer to a reply queue.
async fn reply(
    channel: &Channel,
    reply_to: &str,
    correlation_id: &str,
    body: &[u8],
) -> Result<(), lapin::Error> {
    channel
        .basic_publish(
            "".into(),
            reply_to.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_content_type(CBOR_CONTENT_TYPE.into())
                .with_correlation_id(correlation_id.into()),
        )
        .await
        .map(|_| ())
}

fn encode_reply<M: Serialize>(outcome: &Result<Arc<M>, HandlerError>) -> Vec<u8> {
    let encoded = match outcome {
        Ok(m) => codec::encode_cbor(&ReplyOut::Ok(&**m)),
        Err(e) => codec::encode_cbor(&ReplyOut::<M>::Err(e)),
    };
    encoded.unwrap_or_else(|e| {
        let error =
            HandlerError::new(format!("response could not be encoded: {e}")).with_code("encode");
        codec::encode_cbor(&ReplyOut::<M>::Err(&error)).unwrap_or_default()
    })
}

/// Serves one handler pattern: its shared request queue into the handler's local queue.
pub(crate) async fn run_handler<M: Serialize + DeserializeOwned + Send + Sync + 'static>(
    link: Arc<Link>,
    pattern: Pattern,
    sender: RequestSender<M>,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<(), String>>,
    replies: TaskTracker,
) {
    let _counted = link.consumer();
    let mut attempts = Attempts::new(Some(ready));
    let queue_name = format!("{}.request.{}", link.config.exchange, pattern.as_str());
    let request_exchange = link.request_exchange();
    let what = format!("request handler `{pattern}`");
    while let Some(live) = attempts.next(&link, &stop).await {
        let opened = open_handler_queue(
            &link,
            &live,
            &queue_name,
            &request_exchange,
            pattern.as_str(),
        )
        .await;
        let (channel, mut consumer, queue) = match opened {
            Ok(o) => o,
            Err(e) => {
                attempts.failed(&link, &live, &what, &e);
                continue;
            }
        };
        attempts.bound(&link, &live);
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => {
                    close_queue(&channel, &consumer, &queue, false).await;
                    return;
                }
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(d)) => d,
                Some(Err(_)) | None => {
                    attempts.lost(&link, &live);
                    break;
                }
            };
            let _ = delivery.ack(BasicAckOptions::default()).await;
            let reply_to = delivery
                .properties
                .reply_to()
                .as_ref()
                .map(|s| s.to_string());
            let correlation = delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|s| s.to_string());
            let (Some(reply_to), Some(correlation)) = (reply_to, correlation) else {
                link.rejected(
                    delivery.routing_key.as_str(),
                    "request without reply-to or correlation-id dropped",
                    &"no reply-to or correlation-id",
                );
                continue;
            };
            let (topic, message) = match link.decode::<M>(&delivery) {
                Ok(decoded) => decoded,
                Err(why) => {
                    link.rejected(
                        delivery.routing_key.as_str(),
                        "malformed request answered with an error",
                        &why,
                    );
                    let error = HandlerError::new(format!("malformed request: {why}"))
                        .with_code("malformed");
                    let _ = reply(
                        &live.reply,
                        &reply_to,
                        &correlation,
                        &encode_reply::<M>(&Err(error)),
                    )
                    .await;
                    continue;
                }
            };
            let (responder, answer) = Responder::channel();
            let queued = tokio::select! {
                biased;
                _ = stop.cancelled() => false,
                queued = sender.send(Request::new(topic, Arc::new(message), responder)) => queued.is_ok(),
            };
            if !queued {
                // The handler is gone: say so rather than leave the requester to time out.
                let error = HandlerError::new("handler went away").with_code("dropped");
                let _ = reply(
                    &live.reply,
                    &reply_to,
                    &correlation,
                    &encode_reply::<M>(&Err(error)),
                )
                .await;
                close_queue(&channel, &consumer, &queue, false).await;
                return;
            }
            let live = live.clone();
            replies.spawn(async move {
                let outcome = answer.await.unwrap_or_else(|_| {
                    Err(HandlerError::new("handler went away without answering")
                        .with_code("dropped"))
                });
                let _ = reply(
                    &live.reply,
                    &reply_to,
                    &correlation,
                    &encode_reply(&outcome),
                )
                .await;
            });
        }
    }
}

async fn open_handler_queue(
    link: &Link,
    live: &Live,
    name: &str,
    exchange: &str,
    pattern: &str,
) -> Result<(Channel, lapin::Consumer, String), lapin::Error> {
    // Shared handler queues are auto-delete and not durable: they vanish with
    // their last handler, so nothing is left on the broker.
    let channel = live.connection.create_channel().await?;
    channel
        .basic_qos(
            link.config.prefetch,
            lapin::options::BasicQosOptions::default(),
        )
        .await?;
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            pattern.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer = channel
        .basic_consume(
            name.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer, name.to_owned()))
}
