//! One subscription on RabbitMQ: a queue bound to the exchange with the
//! pattern, consumed into the subscriber's local queue.
//!
//! # Under stress
//!
//! - **Slow subscriber** (`wait` policy): the local queue fills and the
//!   consumer waits — after acknowledging everything the local queue took, so
//!   acks are never held back behind a full queue. Deliveries are always
//!   acknowledged explicitly, in batches of up to 64 or after a 2 ms pause
//!   (at-most-once on arrival, at-least-once after the local queue took the
//!   message), so
//!   the broker stops pushing after `prefetch` unacknowledged deliveries and
//!   keeps the rest in the queue: this process holds at most `prefetch` + the
//!   local queue.
//! - **Malformed body** (not CBOR, or not the message type; or a routing key
//!   that is not a valid topic): logged at `warn`, counted
//!   (`BusStats::malformed`), rejected without requeue (dead-lettered when
//!   `dead-letter-exchange` is set); the consumer goes on. Both modes.
//! - **Set-up refused** (e.g. a queue re-declared with other arguments): retried
//!   with back-off on the same connection; the first refusal fails `subscribe`.
//! - **Connection lost** (also abruptly, by the network, when lapin's stream
//!   never ends by itself: the task watches the connection too): the task
//!   waits for the next connection, re-declares
//!   queue, binding and consumer. At-least-once queues are named and durable
//!   and outlive the gap (`x-expires` = `queue-expiry`), so nothing published
//!   meanwhile is lost; unacked deliveries come again (same message id). The
//!   publisher re-sends its unconfirmed messages only once the subscriptions
//!   have re-bound (or after 3 s).
//! - **Subscriber dropped / bus stopped**: the consumer is cancelled — also
//!   while it waits for room in the local queue — and its queue deleted
//!   (consumer-group queues are kept: they are shared and durable).

use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Consumer};
use serde::de::DeserializeOwned;
use telamon_sdk::bus::{SubscriptionSender, TryDeliver};
use telamon_sdk::{Delivery, Pattern};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::rabbit::config::DeliveryMode;
use crate::rabbit::link::{Link, Live, backoff};

/// How a subscription's queue is declared.
#[derive(Debug, Clone)]
pub(crate) enum QueuePlan {
    /// Server-named, exclusive, auto-delete (at-most-once).
    Private,
    /// Named, outlives a lost connection for `queue-expiry` (at-least-once).
    Lasting(String),
    /// Durable queue shared by a consumer group.
    Group(String),
}

impl QueuePlan {
    fn name(&self) -> String {
        match self {
            QueuePlan::Private => String::new(),
            QueuePlan::Lasting(n) | QueuePlan::Group(n) => n.clone(),
        }
    }
}

/// Declares queue, binding and consumer on a fresh channel.
pub(crate) async fn open_queue(
    link: &Link,
    live: &Live,
    plan: &QueuePlan,
    exchange: &str,
    pattern: &str,
) -> Result<(Channel, Consumer, String), lapin::Error> {
    let (channel, name) = declare_queue(link, live, plan).await?;
    bind(&channel, &name, exchange, pattern).await?;
    let consumer = consume(&channel, &name).await?;
    Ok((channel, consumer, name))
}

/// Declares the queue of `plan` on a fresh channel with `prefetch` set; returns its name.
pub(crate) async fn declare_queue(
    link: &Link,
    live: &Live,
    plan: &QueuePlan,
) -> Result<(Channel, String), lapin::Error> {
    let channel = live.connection.create_channel().await?;
    channel
        .basic_qos(link.config.prefetch, BasicQosOptions::default())
        .await?;
    let mut args = FieldTable::default();
    if let Some(dlx) = &link.config.dead_letter_exchange {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
    }
    let options = match plan {
        QueuePlan::Private => QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        QueuePlan::Lasting(_) => {
            let ms = link
                .config
                .queue_expiry
                .as_millis()
                .clamp(1, u32::MAX as u128) as u32;
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
            // Durable, so what it holds also outlives a broker restart.
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            }
        }
        QueuePlan::Group(_) => QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
    };
    let queue = channel
        .queue_declare(plan.name().as_str().into(), options, args)
        .await?;
    let name = queue.name().to_string();
    Ok((channel, name))
}

/// Binds `queue` to `exchange` with `pattern`.
pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    pattern: &str,
) -> Result<(), lapin::Error> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Starts consuming `queue`, always with explicit acks, so `prefetch` bounds
/// what this process holds.
pub(crate) async fn consume(channel: &Channel, queue: &str) -> Result<Consumer, lapin::Error> {
    channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Cancels the consumer, deletes the queue unless it is a group's, closes the
/// channel — each step bounded like an ack (the connection may be gone).
pub(crate) async fn close_queue(channel: &Channel, consumer: &Consumer, queue: &str, delete: bool) {
    bounded(channel.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await;
    if delete {
        bounded(channel.queue_delete(queue.into(), QueueDeleteOptions::default())).await;
    }
    bounded(channel.close(200, "unsubscribed".into())).await;
}

/// Deliveries acknowledged together (they are in the subscriber's queue already).
pub(crate) const ACK_BATCH: usize = 64;
/// A pause in the stream this long acknowledges what was taken so far.
pub(crate) const ACK_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// How long an ack or reject may take. lapin's never finishes on a
/// connection the network dropped; the consumer notices the loss itself.
const ACK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Waits for an ack or reject, at most [`ACK_DEADLINE`].
pub(crate) async fn bounded<T>(settle: impl std::future::Future<Output = T>) {
    let _ = tokio::time::timeout(ACK_DEADLINE, settle).await;
}

/// Acknowledges every delivery up to the last one taken — unless connection
/// `generation` is gone already: then the broker has requeued them, and an ack
/// could only hang.
pub(crate) async fn flush_ack(
    unacked: &mut Option<lapin::Acker>,
    count: &mut usize,
    link: &Link,
    generation: u64,
) {
    if let Some(acker) = unacked.take()
        && link.current().is_some_and(|l| l.generation == generation)
    {
        bounded(acker.ack(BasicAckOptions { multiple: true })).await;
    }
    *count = 0;
}

/// The set-up attempts of one consumer task: back-off between failures, and
/// the first outcome reported to whoever is waiting in `subscribe`/`handle`.
pub(crate) struct Attempts {
    ready: Option<oneshot::Sender<Result<(), String>>>,
    failures: u32,
    /// Counts this task as a consumer of `link` while it lives.
    consumer: crate::rabbit::link::ConsumerGuard,
}

impl Attempts {
    pub(crate) fn new(
        link: &Arc<Link>,
        ready: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Self {
        Attempts {
            ready,
            failures: 0,
            consumer: link.consumer(),
        }
    }

    /// Waits before a retry (none before the first attempt), then for a connection.
    pub(crate) async fn next(&self, link: &Link, stop: &CancellationToken) -> Option<Arc<Live>> {
        if self.failures > 0 {
            let delay = backoff(
                self.failures - 1,
                link.config.reconnect_min,
                link.config.reconnect_max,
            );
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        tokio::select! {
            _ = stop.cancelled() => None,
            live = link.next_live(0) => live,
        }
    }

    /// Set-up failed: log, report, retry later.
    pub(crate) fn failed(&mut self, link: &Link, live: &Live, what: &str, error: &lapin::Error) {
        tracing::warn!(bus = %link.bus, what, error = %error, "cannot set up; retrying");
        if let Some(r) = self.ready.take() {
            let _ = r.send(Err(error.to_string()));
        }
        self.lost(link, live);
    }

    /// The queue is bound and consumed on `live`.
    pub(crate) fn bound(&mut self, link: &Link, live: &Live) {
        self.failures = 0;
        link.mark_bound(live.generation, self.consumer.id);
        if let Some(r) = self.ready.take() {
            let _ = r.send(Ok(()));
        }
    }

    /// The consumer stream ended: retry on this connection or the next.
    pub(crate) fn lost(&mut self, link: &Link, live: &Live) {
        link.report(live.generation);
        self.failures += 1;
    }
}

/// Decodes an AMQP delivery into what a subscriber receives: topic, message,
/// headers and the AMQP message id.
fn to_delivery<M: DeserializeOwned>(
    link: &Link,
    delivery: &lapin::message::Delivery,
) -> Result<Delivery<M>, String> {
    let (topic, message) = link.decode::<M>(delivery)?;
    let headers = super::headers::decode(delivery.properties.headers().as_ref());
    let mut d = Delivery::new(topic, Arc::new(message)).with_headers(headers);
    if let Some(id) = delivery.properties.message_id() {
        d = d.with_id(id.as_str());
    }
    Ok(d)
}

/// Counts a delivery received and decodes it; a malformed one is logged,
/// counted and rejected without requeue (after what was taken before it is
/// acknowledged), and `None` is returned.
pub(crate) async fn decode_or_reject<M: DeserializeOwned>(
    link: &Link,
    delivery: &lapin::message::Delivery,
    unacked: &mut Option<lapin::Acker>,
    count: &mut usize,
    generation: u64,
) -> Option<Delivery<M>> {
    link.health
        .received
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match to_delivery::<M>(link, delivery) {
        Ok(d) => Some(d),
        Err(why) => {
            link.rejected(
                delivery.routing_key.as_str(),
                "malformed message rejected",
                &why,
            );
            flush_ack(unacked, count, link, generation).await;
            bounded(delivery.reject(BasicRejectOptions { requeue: false })).await;
            None
        }
    }
}

/// Runs one subscription until the subscriber goes away or the bus stops.
///
/// Set-up is retried with back-off on the same connection (a channel-level
/// refusal) or on the next one; `ready` reports the first outcome, so a
/// subscribe on a connected bus fails instead of hearing nothing.
pub(crate) async fn run<M: DeserializeOwned + Send + Sync + 'static>(
    link: Arc<Link>,
    pattern: Pattern,
    plan: QueuePlan,
    sender: SubscriptionSender<M>,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let mut attempts = Attempts::new(&link, Some(ready));
    let at_most_once = link.config.delivery == DeliveryMode::AtMostOnce;
    let delete = !matches!(plan, QueuePlan::Group(_));
    let exchange = link.config.exchange.clone();
    let what = format!("subscription `{pattern}`");
    while let Some(live) = attempts.next(&link, &stop).await {
        let (channel, mut consumer, queue) =
            match open_queue(&link, &live, &plan, &exchange, pattern.as_str()).await {
                Ok(opened) => opened,
                Err(e) => {
                    attempts.failed(&link, &live, &what, &e);
                    continue;
                }
            };
        attempts.bound(&link, &live);
        tracing::debug!(bus = %link.bus, pattern = %pattern, queue = %queue, "subscribed");
        // Acks are batched — one `multiple` ack per ACK_BATCH deliveries, or
        // when the stream pauses. At-least-once counts a delivery only after the
        // subscriber's queue took it. (At-most-once: a channel that fails inside
        // that short window may see its unacked deliveries once more.)
        let mut unacked: Option<lapin::Acker> = None;
        let mut unacked_count = 0usize;
        let gone = link.gone(live.generation);
        tokio::pin!(gone);
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    flush_ack(&mut unacked, &mut unacked_count, &link, live.generation).await;
                    close_queue(&channel, &consumer, &queue, delete).await;
                    return;
                }
                // Before the stream: what lapin still holds from a lost
                // connection comes again on the next one anyway.
                _ = &mut gone => None,
                next = consumer.next() => next,
                _ = tokio::time::sleep(ACK_PAUSE), if unacked.is_some() => {
                    flush_ack(&mut unacked, &mut unacked_count, &link, live.generation).await;
                    continue;
                }
            };
            let delivery = match next {
                // lapin hands out what it had buffered even after the
                // connection failed; those come again on the next one.
                Some(Ok(d)) if channel.status().connected() => d,
                Some(_) | None => {
                    attempts.lost(&link, &live);
                    break;
                }
            };
            let Some(d) = decode_or_reject::<M>(
                &link,
                &delivery,
                &mut unacked,
                &mut unacked_count,
                live.generation,
            )
            .await
            else {
                continue;
            };
            let acker = delivery.acker;
            if at_most_once {
                // Acked on arrival, in batches like at-least-once (not
                // auto-ack, so `prefetch` still bounds what this process holds).
                unacked = Some(acker.clone());
                unacked_count += 1;
            }
            let taken = match sender.try_deliver(d) {
                TryDeliver::Delivered | TryDeliver::DeliveredDroppingOldest => Some(true),
                TryDeliver::Closed => Some(false),
                TryDeliver::Full(d) => {
                    // Acknowledge what the local queue holds before waiting for
                    // room, so a lost connection meanwhile redelivers only this one.
                    flush_ack(&mut unacked, &mut unacked_count, &link, live.generation).await;
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => None,
                        taken = sender.deliver(d) => Some(taken.is_ok()),
                    }
                }
            };
            if taken != Some(true) {
                // Stopping, or the subscriber is gone: what it took is acked,
                // this one goes back to the queue.
                flush_ack(&mut unacked, &mut unacked_count, &link, live.generation).await;
                if !at_most_once {
                    bounded(acker.reject(BasicRejectOptions { requeue: true })).await;
                }
                close_queue(&channel, &consumer, &queue, delete).await;
                return;
            }
            if !at_most_once {
                unacked = Some(acker);
                unacked_count += 1;
            }
            if unacked_count >= ACK_BATCH {
                flush_ack(&mut unacked, &mut unacked_count, &link, live.generation).await;
            }
        }
    }
}
