//! The connection to RabbitMQ, kept alive by one supervisor task.
//!
//! # Under stress
//!
//! - **Broker away at start**: the process starts anyway; the supervisor keeps
//!   trying every URL in turn with exponential back-off (`reconnect-min` doubling
//!   up to `reconnect-max`) and logs each failure at `warn`.
//! - **A node that accepts TCP and never answers**: each attempt — TCP, AMQP
//!   handshake, channels, declarations — has `connection-timeout` in all; past
//!   it the next URL is tried.
//! - **A broker that refuses the config** (e.g. `406 PRECONDITION_FAILED`: the
//!   exchange exists with another `exchange-durable`; `403`: wrong user or
//!   vhost): not an absent broker but a config problem. At start the process
//!   fails, naming the key and quoting the broker; later the bus reports it
//!   (`BusStats::refused`, logged at `error`) and keeps retrying.
//! - **Connection lost** (broker restart, `close_all_connections`, network):
//!   [`Link::current`] turns `None` at once, so publishes and requests fail
//!   with an error instead of vanishing; subscription and handler tasks wait
//!   for the next connection and re-declare their queues, bindings and
//!   consumers; unconfirmed at-least-once messages are re-sent before anyone
//!   else publishes on the new connection. `BusStats::connected` and
//!   `telamon_bus_connected` say which state the bus is in.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Event, ExchangeKind};
use telamon_sdk::bus::BoxFuture;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::burst_log::BurstLog;
use crate::codec::DecodeLimits;
use crate::metrics::BusHealth;
use crate::rabbit::config::{DeliveryMode, RabbitMqConfig, redact};

/// One established connection and the channels everyone shares.
pub(crate) struct Live {
    pub(crate) connection: Connection,
    /// Publishes (confirm mode under at-least-once).
    pub(crate) publish: Channel,
    /// Requests (always confirm mode, for mandatory returns).
    pub(crate) request: Channel,
    /// Replies to requests (no confirms: a lost reply is a timeout anyway).
    pub(crate) reply: Channel,
    /// Counts connections: 1 for the first, +1 per reconnect.
    pub(crate) generation: u64,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
            && self.publish.status().connected()
            && self.request.status().connected()
            && self.reply.status().connected()
    }
}

/// Keeps a consumer task counted (see [`Link::consumer`]).
pub(crate) struct ConsumerGuard {
    link: Arc<Link>,
    /// Tells this consumer's binds apart from another's.
    pub(crate) id: u64,
}

impl Drop for ConsumerGuard {
    fn drop(&mut self) {
        self.link.consumers.fetch_sub(1, Ordering::Relaxed);
        // Forget its bind, and wake `all_bound` to count again without it.
        let id = self.id;
        self.link.bound.send_modify(|(_, ids)| {
            ids.remove(&id);
        });
    }
}

/// Runs once a connection is published to consumers and before publishers may
/// use it (consumers re-bind, then the publisher re-sends unconfirmed messages).
pub(crate) type OnConnect = Box<dyn Fn(Arc<Live>) -> BoxFuture<'static, ()> + Send + Sync>;

/// The content type of every body this bus sends.
pub(crate) const CBOR_CONTENT_TYPE: &str = "application/cbor";

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    /// No broker answered (refused, reset, or silent past `connection-timeout`).
    Unreachable(String),
    /// A broker answered and refused what the config asks for: a
    /// configuration problem, named by its key (`url`, `exchange-durable` …).
    Refused {
        /// The config key (within `[message-bus.<id>]`) that caused it.
        key: &'static str,
        /// What the broker said.
        reason: String,
    },
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Unreachable(why) => f.write_str(why),
            ConnectFailure::Refused { key, reason } => {
                write!(f, "the broker refused `{key}`: {reason}")
            }
        }
    }
}

/// A failed step of connecting: refused by the broker (an AMQP error it sent)
/// or not answered.
/// AMQP replies that mean "this config is not acceptable here": 403
/// ACCESS_REFUSED (user, password, vhost), 406 PRECONDITION_FAILED (an
/// existing exchange differs), 530 NOT_ALLOWED. Anything else (320
/// CONNECTION_FORCED while a node restarts …) is a node to retry or skip.
const REFUSALS: [u16; 3] = [403, 406, 530];

fn failed(key: &'static str) -> impl FnOnce(lapin::Error) -> ConnectFailure {
    move |e| match e.kind() {
        lapin::ErrorKind::ProtocolError(amqp) if REFUSALS.contains(&amqp.get_id()) => {
            ConnectFailure::Refused {
                key,
                reason: format!("{} {}", amqp.get_id(), amqp.get_message()),
            }
        }
        _ => ConnectFailure::Unreachable(e.to_string()),
    }
}

/// The connection supervisor's shared state.
pub(crate) struct Link {
    pub(crate) bus: String,
    pub(crate) config: Arc<RabbitMqConfig>,
    live: watch::Sender<Option<Arc<Live>>>,
    /// The generation publishes may use: set once this process's consumers
    /// have bound their queues on it (0: none).
    publishable: watch::Sender<u64>,
    /// Subscription and handler tasks alive.
    consumers: std::sync::atomic::AtomicUsize,
    next_consumer: AtomicU64,
    /// (generation, the consumers that have bound their queue on it).
    bound: watch::Sender<(u64, HashSet<u64>)>,
    broken: Notify,
    pub(crate) stop: CancellationToken,
    pub(crate) health: Arc<BusHealth>,
    /// Set while the broker refuses the config (cleared on the next connection).
    refused: watch::Sender<Option<(&'static str, String)>>,
    /// Size and nesting limits for every body this bus decodes.
    pub(crate) limits: DecodeLimits,
    rejections: BurstLog,
}

impl Link {
    pub(crate) fn new(bus: &str, config: Arc<RabbitMqConfig>, health: Arc<BusHealth>) -> Arc<Self> {
        Arc::new(Link {
            bus: bus.to_owned(),
            limits: config.decode_limits(),
            refused: watch::channel(None).0,
            config,
            live: watch::channel(None).0,
            publishable: watch::channel(0).0,
            consumers: std::sync::atomic::AtomicUsize::new(0),
            next_consumer: AtomicU64::new(0),
            bound: watch::channel((0, HashSet::new())).0,
            broken: Notify::new(),
            stop: CancellationToken::new(),
            health,
            rejections: BurstLog::default(),
        })
    }

    /// The topic and message of a delivery, or why it cannot be taken: a
    /// routing key that is no topic, a content type other than CBOR (none is
    /// accepted: Caryatid sets none), or a body the codec refuses.
    pub(crate) fn decode<M: serde::de::DeserializeOwned>(
        &self,
        delivery: &lapin::message::Delivery,
    ) -> Result<(telamon_sdk::Topic, M), String> {
        let topic =
            telamon_sdk::Topic::new(delivery.routing_key.as_str()).map_err(|e| e.to_string())?;
        if let Some(kind) = delivery.properties.content_type()
            && kind.as_str() != CBOR_CONTENT_TYPE
        {
            return Err(format!(
                "content type `{}` is not `{CBOR_CONTENT_TYPE}`",
                kind.as_str()
            ));
        }
        let message =
            crate::codec::decode_cbor(&delivery.data, &self.limits).map_err(|e| e.to_string())?;
        Ok((topic, message))
    }

    /// Counts a body that could not be taken and logs it, once per burst.
    pub(crate) fn rejected(&self, routing_key: &str, what: &str, why: &dyn std::fmt::Display) {
        self.health.malformed.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.rejections.admit() {
            tracing::warn!(
                bus = %self.bus,
                routing_key,
                error = %why,
                rejected_since_last_report = held_back,
                "{what}"
            );
        }
    }

    /// The request exchange (kept apart so subscribers never see requests).
    pub(crate) fn request_exchange(&self) -> String {
        format!("{}.requests", self.config.exchange)
    }

    /// The connection, if there is one now.
    pub(crate) fn current(&self) -> Option<Arc<Live>> {
        self.live.borrow().clone()
    }

    /// The connection, if publishing may use it now: after a reconnect, only
    /// once this process's subscriptions are bound again, so nothing published
    /// meanwhile routes to nowhere.
    pub(crate) fn for_publish(&self) -> Option<Arc<Live>> {
        let live = self.current()?;
        (*self.publishable.borrow() == live.generation).then_some(live)
    }

    /// Waits until publishing is open on some connection; `false` once the bus stops.
    pub(crate) async fn publishing_open(&self) -> bool {
        let mut rx = self.publishable.subscribe();
        tokio::select! {
            _ = self.stop.cancelled() => false,
            open = rx.wait_for(|generation| *generation != 0) => open.is_ok(),
        }
    }

    /// Waits for a connection newer than `after` (0: any); `None` once the bus stops.
    pub(crate) async fn next_live(&self, after: u64) -> Option<Arc<Live>> {
        let mut rx = self.live.subscribe();
        tokio::select! {
            _ = self.stop.cancelled() => None,
            r = rx.wait_for(|l| l.as_ref().is_some_and(|l| l.generation > after)) => {
                r.ok().and_then(|l| l.clone())
            }
        }
    }

    /// Resolves once connection `generation` is no longer the current one
    /// (lost, or replaced). A consumer watches this as well as its stream:
    /// after an abrupt network loss the stream may never end by itself.
    pub(crate) async fn gone(&self, generation: u64) {
        let mut rx = self.live.subscribe();
        let _ = rx
            .wait_for(|l| l.as_ref().is_none_or(|l| l.generation != generation))
            .await;
    }

    /// Resolves once there is no connection (at once if there is none now).
    pub(crate) async fn disconnected(&self) {
        let mut rx = self.live.subscribe();
        let _ = rx.wait_for(|l| l.is_none()).await;
    }

    /// Counts a consumer task for as long as the returned guard lives.
    pub(crate) fn consumer(self: &Arc<Self>) -> ConsumerGuard {
        self.consumers.fetch_add(1, Ordering::Relaxed);
        ConsumerGuard {
            link: self.clone(),
            id: self.next_consumer.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Consumer `id` bound its queue on connection `generation` (binding
    /// again on the same connection after a retry counts once).
    pub(crate) fn mark_bound(&self, generation: u64, id: u64) {
        tracing::debug!(bus = %self.bus, generation, consumer = id, consumers = self.consumers.load(Ordering::Relaxed), "consumer bound");
        self.bound.send_modify(|(g, ids)| {
            if *g == generation {
                ids.insert(id);
            } else if generation > *g {
                *g = generation;
                ids.clear();
                ids.insert(id);
            }
        });
    }

    /// Waits (up to `limit`) until every consumer has bound its queue on `generation`.
    pub(crate) async fn all_bound(&self, generation: u64, limit: Duration) -> bool {
        let mut rx = self.bound.subscribe();
        let wanted = || self.consumers.load(Ordering::Relaxed);
        tokio::time::timeout(
            limit,
            rx.wait_for(|(g, ids)| *g == generation && ids.len() >= wanted() || wanted() == 0),
        )
        .await
        .is_ok()
    }

    /// Someone saw an error on connection `generation`; the supervisor checks it.
    pub(crate) fn report(&self, generation: u64) {
        if self.current().is_some_and(|l| l.generation == generation) {
            self.broken.notify_one();
        }
    }

    /// Keeps a connection up until the bus stops.
    pub(crate) async fn supervise(self: Arc<Self>, on_connect: OnConnect) {
        let urls = self.config.urls();
        let mut attempt: u32 = 0;
        let mut next_url = 0usize;
        let mut generation = 0u64;
        while !self.stop.is_cancelled() {
            let url = &urls[next_url % urls.len()];
            let deadline = self.config.connection_timeout;
            let attempted =
                match tokio::time::timeout(deadline, self.connect(url, generation + 1)).await {
                    Ok(attempted) => attempted,
                    Err(_) => Err(ConnectFailure::Unreachable(format!(
                        "no answer within connection-timeout {deadline:?}"
                    ))),
                };
            match attempted {
                Ok(live) => {
                    attempt = 0;
                    self.refused.send_replace(None);
                    generation = live.generation;
                    let live = Arc::new(live);
                    if generation > 1 {
                        self.health.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    self.health.connected.store(true, Ordering::Relaxed);
                    tracing::info!(bus = %self.bus, url = %redact(url), generation, "connected to RabbitMQ");
                    // Consumers re-bind first; then unconfirmed messages are
                    // re-sent; then publishing opens.
                    self.live.send_replace(Some(live.clone()));
                    on_connect(live.clone()).await;
                    self.publishable.send_replace(generation);
                    self.watch(&live).await;
                    self.publishable.send_replace(0);
                    self.live.send_replace(None);
                    self.health.connected.store(false, Ordering::Relaxed);
                    // Close it even if only a channel failed, so nothing keeps using it.
                    let _ = live
                        .connection
                        .close(200, "telamon bus reconnecting".into())
                        .await;
                    if self.stop.is_cancelled() {
                        break;
                    }
                    tracing::warn!(bus = %self.bus, url = %redact(url), "lost the RabbitMQ connection; reconnecting");
                    next_url += 1;
                }
                Err(ConnectFailure::Refused { key, reason }) => {
                    tracing::error!(bus = %self.bus, url = %redact(url), key, reason = %reason, "the broker refuses this bus's config; retrying, but fix `{key}`");
                    self.refused.send_replace(Some((key, reason)));
                    next_url += 1;
                }
                Err(e) => {
                    tracing::warn!(bus = %self.bus, url = %redact(url), attempt, error = %e, "cannot connect to RabbitMQ; trying the next node");
                    next_url += 1;
                }
            }
            let delay = backoff(
                attempt,
                self.config.reconnect_min,
                self.config.reconnect_max,
            );
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        self.live.send_replace(None);
        self.health.connected.store(false, Ordering::Relaxed);
    }

    /// The key and reason while the broker refuses this bus's config.
    pub(crate) fn refusal(&self) -> Option<(&'static str, String)> {
        self.refused.borrow().clone()
    }

    /// Resolves with the key and reason once the broker refuses the config.
    pub(crate) async fn refused(&self) -> (&'static str, String) {
        let mut rx = self.refused.subscribe();
        let seen = rx.wait_for(Option::is_some).await.map(|r| r.clone());
        match seen {
            Ok(Some(refusal)) => refusal,
            _ => std::future::pending().await,
        }
    }

    /// Connects, opens the shared channels and declares the exchanges; each
    /// step that fails says which config key it was about.
    async fn connect(&self, url: &str, generation: u64) -> Result<Live, ConnectFailure> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("telamon/{}", self.bus).into());
        let connection = Connection::connect(url, properties)
            .await
            .map_err(failed("url"))?;
        let channel = || async { connection.create_channel().await.map_err(failed("url")) };
        let publish = channel().await?;
        let request = channel().await?;
        let reply = channel().await?;
        let options = ExchangeDeclareOptions {
            durable: self.config.exchange_durable,
            ..ExchangeDeclareOptions::default()
        };
        // 406 here: the exchange exists with another durability.
        publish
            .exchange_declare(
                self.config.exchange.as_str().into(),
                ExchangeKind::Topic,
                options,
                FieldTable::default(),
            )
            .await
            .map_err(failed("exchange-durable"))?;
        publish
            .exchange_declare(
                self.request_exchange().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(failed("exchange"))?;
        if self.config.delivery == DeliveryMode::AtLeastOnce {
            publish
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(failed("delivery"))?;
        }
        request
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failed("url"))?;
        Ok(Live {
            connection,
            publish,
            request,
            reply,
            generation,
        })
    }

    /// Returns when the connection is gone (or the bus stops).
    async fn watch(&self, live: &Live) {
        let mut events = live.connection.events_listener();
        let mut poll = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                e = events.next() => match e {
                    Some(Event::Error(e)) => {
                        tracing::warn!(bus = %self.bus, error = %e, "RabbitMQ connection error");
                        return;
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = self.broken.notified() => {
                    if !live.healthy() {
                        return;
                    }
                }
                _ = poll.tick() => {
                    if !live.healthy() {
                        return;
                    }
                }
            }
        }
    }
}

/// `min`, doubled per attempt, capped at `max`.
pub(crate) fn backoff(attempt: u32, min: Duration, max: Duration) -> Duration {
    min.saturating_mul(1u32 << attempt.min(16)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, min, max), min);
        assert_eq!(backoff(3, min, max), Duration::from_millis(800));
        assert_eq!(backoff(40, min, max), max);
    }
}
