//! Publishing to RabbitMQ, with a bounded window of publisher confirms.
//!
//! # Under stress
//!
//! - **Broker away**: `publish` fails at once with "not connected"; nothing is
//!   reported as sent that was not handed to a live connection.
//! - **Connection lost with confirms outstanding** (at-least-once): messages
//!   whose confirm never came stay in the window and are re-sent, in order,
//!   on the next connection before anything else. Consumers may therefore see
//!   a message twice; its AMQP `message-id` is the same both times.
//! - **Window full** (`confirm-window` outstanding): the publisher waits for
//!   confirms — the broker's pace becomes the publisher's pace.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation, PublisherConfirm};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::rabbit::config::DeliveryMode;
use crate::rabbit::link::{Link, Live};

/// A message ready for the wire.
#[derive(Clone)]
pub(crate) struct OutMessage {
    pub(crate) routing_key: String,
    pub(crate) body: Arc<Vec<u8>>,
    pub(crate) properties: BasicProperties,
}

struct Unconfirmed {
    message: OutMessage,
    generation: u64,
    _permit: OwnedSemaphorePermit,
}

type ConfirmJob = (u64, u64, PublisherConfirm);

/// Publishes on the link's publish channel.
pub(crate) struct Publisher {
    link: Arc<Link>,
    window: Arc<Semaphore>,
    unconfirmed: Mutex<BTreeMap<u64, Unconfirmed>>,
    next_seq: AtomicU64,
    confirms: mpsc::UnboundedSender<ConfirmJob>,
    /// Woken whenever a confirm settles a message.
    settled_one: tokio::sync::Notify,
}

impl Publisher {
    /// A publisher and the task that collects its confirms.
    pub(crate) fn new(
        link: Arc<Link>,
    ) -> (Arc<Self>, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = Arc::new(Publisher {
            window: Arc::new(Semaphore::new(link.config.confirm_window)),
            link,
            unconfirmed: Mutex::new(BTreeMap::new()),
            next_seq: AtomicU64::new(0),
            confirms: tx,
            settled_one: tokio::sync::Notify::new(),
        });
        let collector = publisher.clone().collect(rx);
        (publisher, collector)
    }

    /// One publish on the connection's publish channel.
    async fn send(
        &self,
        live: &Live,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        live.publish
            .basic_publish(
                self.link.config.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
    }

    /// Publishes; `Err` says why it was not handed to the broker.
    pub(crate) async fn publish(&self, message: OutMessage) -> Result<(), String> {
        match self.link.config.delivery {
            DeliveryMode::AtMostOnce => {
                let live = self.link.for_publish().ok_or("not connected to RabbitMQ")?;
                let OutMessage {
                    routing_key,
                    body,
                    properties,
                } = message;
                self.send(&live, &routing_key, &body, properties)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        self.link.report(live.generation);
                        e.to_string()
                    })
            }
            DeliveryMode::AtLeastOnce => {
                if self.link.for_publish().is_none() {
                    return Err("not connected to RabbitMQ".into());
                }
                // A full window waits for confirms — but not for a broker that is gone.
                let permit = tokio::select! {
                    permit = self.window.clone().acquire_owned() => permit.map_err(|_| "bus closed".to_owned())?,
                    _ = self.link.disconnected() => return Err("not connected to RabbitMQ".into()),
                };
                let live = self.link.for_publish().ok_or("not connected to RabbitMQ")?;
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                self.lock().insert(
                    seq,
                    Unconfirmed {
                        message: message.clone(),
                        generation: live.generation,
                        _permit: permit,
                    },
                );
                let OutMessage {
                    routing_key,
                    body,
                    properties,
                } = message;
                match self.send(&live, &routing_key, &body, properties).await {
                    Ok(confirm) => {
                        let _ = self.confirms.send((seq, live.generation, confirm));
                        Ok(())
                    }
                    Err(e) => {
                        // Never handed over: the caller hears about it and owns the retry.
                        self.lock().remove(&seq);
                        self.link.report(live.generation);
                        Err(e.to_string())
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Unconfirmed>> {
        self.unconfirmed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages published but not yet confirmed.
    pub(crate) fn outstanding(&self) -> usize {
        self.lock().len()
    }

    /// Waits until every message published before this call is confirmed
    /// (later publishes do not count); `Err` with how many are not, once the
    /// connection is gone.
    pub(crate) async fn confirmed_so_far(&self) -> Result<(), usize> {
        let horizon = self.next_seq.load(Ordering::Relaxed);
        loop {
            let notified = self.settled_one.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let left = self.lock().range(..horizon).count();
            if left == 0 {
                return Ok(());
            }
            if self.link.current().is_none() {
                return Err(left);
            }
            tokio::select! {
                _ = notified => {}
                _ = self.link.disconnected() => {}
            }
        }
    }

    /// Refuses further publishes (waiting ones fail); for stop.
    pub(crate) fn close(&self) {
        self.window.close();
    }

    /// Re-sends every unconfirmed message on a new connection, oldest first.
    pub(crate) async fn resend_all(&self, live: &Arc<Live>) {
        let pending: Vec<(u64, OutMessage)> = self
            .lock()
            .iter()
            .filter(|(_, u)| u.generation < live.generation)
            .map(|(seq, u)| (*seq, u.message.clone()))
            .collect();
        if pending.is_empty() {
            return;
        }
        tracing::info!(bus = %self.link.bus, count = pending.len(), "re-sending unconfirmed messages");
        for (seq, m) in pending {
            self.resend(live, seq, m).await;
        }
    }

    async fn resend(&self, live: &Arc<Live>, seq: u64, m: OutMessage) {
        let result = self.send(live, &m.routing_key, &m.body, m.properties).await;
        match result {
            Ok(confirm) => {
                if let Some(u) = self.lock().get_mut(&seq) {
                    u.generation = live.generation;
                }
                let _ = self.confirms.send((seq, live.generation, confirm));
            }
            // Stays unconfirmed with its old generation: re-sent on the next connection.
            Err(_) => self.link.report(live.generation),
        }
    }

    /// Settles confirms as they come; a nack re-sends at once.
    async fn collect(self: Arc<Self>, mut jobs: mpsc::UnboundedReceiver<ConfirmJob>) {
        let mut waiting = FuturesUnordered::new();
        loop {
            tokio::select! {
                _ = self.link.stop.cancelled() => break,
                job = jobs.recv() => match job {
                    Some((seq, generation, confirm)) => {
                        waiting.push(async move { (seq, generation, confirm.await) });
                    }
                    None => break,
                },
                Some((seq, generation, outcome)) = waiting.next(), if !waiting.is_empty() => {
                    match outcome {
                        Ok(Confirmation::Nack(_)) => {
                            tracing::warn!(bus = %self.link.bus, seq, "broker nacked a message; re-sending");
                            let message = self.lock().get(&seq).filter(|u| u.generation == generation).map(|u| u.message.clone());
                            if let (Some(m), Some(live)) = (message, self.link.current()) {
                                self.resend(&live, seq, m).await;
                            }
                        }
                        Ok(_) => {
                            let mut map = self.lock();
                            if map.get(&seq).is_some_and(|u| u.generation == generation) {
                                map.remove(&seq);
                                self.settled_one.notify_waiters();
                            }
                        }
                        Err(_) => self.link.report(generation),
                    }
                }
            }
        }
    }
}
