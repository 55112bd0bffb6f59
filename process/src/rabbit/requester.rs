//! Requests to handlers in other processes: one reply queue per process and
//! correlation ids (the handler side is `responder.rs`).
//!
//! - Requests go to the `<exchange>.requests` topic exchange (routing key =
//!   topic), so subscribers never see them. They are published `mandatory`:
//!   when no handler queue is bound, the broker returns the message and the
//!   request fails at once with `NoResponder`.
//! - Answers come to the requester's reply queue (exclusive, auto-delete, one
//!   per process) with the request's `correlation-id`. Nothing is declared per
//!   request; a pending request is one map entry, removed when it ends.
//!
//! # Under stress
//!
//! - **Timeout**: the map entry is removed; a late answer is dropped. The
//!   request carries `expiration` = timeout, so a stale request is not served.
//! - **Connection lost**: requests fail with a bus error; pending ones time
//!   out (their reply queue went with the connection).
//! - **Malformed reply**: the request fails with a bus error saying so.
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::Confirmation;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use telamon_sdk::{HandlerError, Headers, RequestError, Topic};
use tokio::sync::{oneshot, watch};

use crate::codec;
use crate::rabbit::link::{CBOR_CONTENT_TYPE, Link, Live};
use crate::rabbit::subscription::Attempts;

/// What travels back: the response or the handler's error.
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
        let mut attempts = Attempts::new(&self.link, None);
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
            let gone = self.link.gone(live.generation);
            tokio::pin!(gone);
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = consumer.next() => next,
                    _ = &mut gone => None,
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
        headers: Headers,
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
        let body = codec::encode_cbor_with(&*message, self.link.config.cbor_unit)
            .map_err(|e| bus_error(e.to_string()))?;
        if body.len() > self.link.config.max_message_size {
            return Err(bus_error(format!(
                "request of {} bytes exceeds max-message-size {}",
                body.len(),
                self.link.config.max_message_size
            )));
        }
        let header_table = super::headers::encode(&headers).map_err(bus_error)?;
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
            let mut properties = BasicProperties::default()
                .with_content_type(CBOR_CONTENT_TYPE.into())
                .with_correlation_id(id.to_string().into())
                .with_reply_to(reply_to.into())
                .with_message_id(format!("{}-r{id}", self.instance).into())
                .with_timestamp(unix_seconds())
                .with_expiration(timeout.as_millis().max(1).to_string().into());
            if let Some(table) = header_table.clone() {
                properties = properties.with_headers(table);
            }
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
            match codec::decode_cbor::<ReplyIn<M>>(&bytes, &self.link.limits.for_reply()) {
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
