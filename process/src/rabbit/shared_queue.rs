//! The subscriptions of one process on one RabbitMQ bus, served from one
//! queue: a binding per distinct pattern, one consumer, and local dispatch
//! through the same [`PatternIndex`] the in-process bus matches with.
//!
//! A message that matches several subscriptions of the process crosses the
//! network once (the broker puts one copy in a queue, however many of its
//! bindings match), and 10 000 subscriptions are one queue and one consumer on
//! the broker, with a binding per distinct pattern. Subscriptions named in
//! `consumer-groups` keep their own durable group queue, and
//! `shared-queue = false` gives every subscription its own queue as before.
//!
//! Two tasks share the work: the *control* task owns the channel — declares
//! the queue, binds and unbinds patterns as subscriptions come and go, and
//! forwards deliveries; the *dispatch* task decodes each delivery once, hands
//! it to every matching subscription and acknowledges. The control task never
//! waits for a subscriber, so subscribing and unsubscribing go on while a
//! subscriber is slow.
//!
//! # Under stress
//!
//! - **Slow subscriber** (`wait` policy): the dispatch task waits for room —
//!   after acknowledging everything dispatched so far — and so holds back the
//!   other subscriptions of this queue too, as a full `wait` subscriber holds
//!   back the publisher on the in-process bus. The broker stops pushing after
//!   `prefetch` unacknowledged deliveries and keeps the rest; this process
//!   holds at most `prefetch` deliveries + the local queues. A subscriber that
//!   must not be held back by another uses `drop-oldest`, or the bus
//!   `shared-queue = false`.
//! - **At-least-once**: a delivery is acknowledged once every matching
//!   subscription took it. After a lost connection the unacknowledged ones
//!   come again to every matching subscription, also to those that took
//!   them already (at most `prefetch`, with the same message id).
//! - **Malformed body or routing key**: logged, counted, rejected without
//!   requeue (dead-lettered when `dead-letter-exchange` is set).
//! - **Connection lost**: the control task waits for the next connection,
//!   re-declares the queue and binds every pattern in use before it consumes
//!   again; deliveries forwarded from the lost connection are not dispatched
//!   (the broker sends them again). Subscriptions made meanwhile are bound
//!   then. The at-least-once queue outlives the gap (`queue-expiry`).
//! - **A bind refused** (or not answered within `connection-timeout`): that
//!   `subscribe` fails; the channel is re-opened and the other patterns
//!   re-bound.
//! - **Subscriber dropped**: it leaves the index at once; its pattern is
//!   unbound when no other subscription uses it — lazily, after any waiting
//!   subscribe (see [`Bindings`]). Deliveries that match no one are
//!   acknowledged and dropped, as a publish with no subscriber is on the
//!   in-process bus.
//! - **Bus stopped**: the consumer is cancelled and the queue deleted.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::BasicRejectOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use serde::de::DeserializeOwned;
use telamon_sdk::Pattern;
use telamon_sdk::bus::{PatternIndex, SubscriptionSender, TryDeliver};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::rabbit::config::DeliveryMode;
use crate::rabbit::link::{Link, Live};
use crate::rabbit::subscription::{
    ACK_BATCH, ACK_PAUSE, Attempts, QueuePlan, bind, bounded, close_queue, consume, declare_queue,
    flush_ack, to_delivery,
};

/// The local subscriptions, matched per delivery.
type Index<M> = Arc<RwLock<PatternIndex<SubscriptionSender<M>>>>;

/// What `subscribe` and a dropped subscription ask of the control task.
enum Command {
    /// A subscription on this pattern; answered once the pattern is bound.
    Bind(String, oneshot::Sender<Result<(), String>>),
    /// A subscription on this pattern is gone.
    Unbind(String),
}

/// A delivery on its way from the control task to the dispatch task.
struct Inbound {
    generation: u64,
    delivery: lapin::message::Delivery,
}

/// The shared queue of one bus: where its subscriptions are added.
pub(crate) struct SharedQueue<M> {
    index: Index<M>,
    commands: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
}

/// Removes a subscription: out of the index, and its binding when it was the last on the pattern.
pub(crate) type Remove = Box<dyn FnOnce() + Send + Sync>;

impl<M: DeserializeOwned + Send + Sync + 'static> SharedQueue<M> {
    /// Starts the control and dispatch tasks on `tasks`; both end with `stop`.
    pub(crate) fn start(
        link: Arc<Link>,
        plan: QueuePlan,
        stop: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let index: Index<M> = Arc::new(RwLock::new(PatternIndex::new()));
        let (commands, requests) = mpsc::unbounded_channel();
        // Unbounded, yet bounded by the broker: it sends at most `prefetch`
        // unacknowledged deliveries, and only the dispatch task acknowledges.
        let (forward, inbound) = mpsc::unbounded_channel();
        tasks.spawn(control(link.clone(), plan, requests, forward, stop.clone()));
        tasks.spawn(dispatch(link, index.clone(), inbound, stop));
        SharedQueue {
            index,
            commands,
            next_id: AtomicU64::new(0),
        }
    }

    /// Adds a subscription. The receiver answers once its pattern is bound
    /// (at once when it was bound already); `Err` when the bus has stopped.
    pub(crate) fn add(
        &self,
        pattern: Pattern,
        sender: SubscriptionSender<M>,
    ) -> Result<(Remove, oneshot::Receiver<Result<(), String>>), ()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = pattern.as_str().to_owned();
        // In the index before the binding exists: nothing routed to it is missed.
        write(&self.index).insert(id, &pattern, sender);
        let (index, commands) = (self.index.clone(), self.commands.clone());
        let remove: Remove = Box::new(move || {
            // The sender is dropped after the lock is released.
            let removed = write(&index).remove(id, &pattern);
            drop(removed);
            let _ = commands.send(Command::Unbind(pattern.as_str().to_owned()));
        });
        let (ready, bound) = oneshot::channel();
        if self.commands.send(Command::Bind(text, ready)).is_err() {
            remove();
            return Err(());
        }
        Ok((remove, bound))
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// The patterns in use, with how many subscriptions use each; the
/// subscriptions waiting for the next connection to be bound; and the patterns
/// no one uses any more that are still bound.
///
/// Unbinding is lazy: a binding costs the broker a few milliseconds to remove,
/// so when thousands of subscriptions go at once a new `subscribe` must not
/// queue behind their unbinds. Binds are answered first; stale bindings are
/// removed one at a time when no command waits, and a pattern subscribed
/// again before its turn simply stays bound. Meanwhile what a stale binding
/// brings matches no one and is acknowledged and dropped.
#[derive(Default)]
struct Bindings {
    counts: HashMap<String, usize>,
    waiting: Vec<oneshot::Sender<Result<(), String>>>,
    stale: HashSet<String>,
}

impl Bindings {
    /// Applies a command while there is no channel: the pattern is bound with
    /// the others on the next one.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Bind(pattern, ready) => {
                *self.counts.entry(pattern).or_default() += 1;
                self.waiting.push(ready);
            }
            Command::Unbind(pattern) => self.release(pattern),
        }
    }

    /// One subscription fewer on `pattern`; the last makes its binding stale.
    fn release(&mut self, pattern: String) {
        match self.counts.get_mut(&pattern) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.counts.remove(&pattern);
                self.stale.insert(pattern);
            }
            None => {}
        }
    }

    /// Applies a command on the open channel. `Err`: the channel is unusable.
    async fn online(
        &mut self,
        command: Command,
        link: &Link,
        channel: &Channel,
        queue: &str,
    ) -> Result<(), String> {
        let exchange = link.config.exchange.as_str();
        match command {
            Command::Bind(pattern, ready) => {
                let still_bound = self.stale.remove(&pattern);
                let n = self.counts.entry(pattern.clone()).or_default();
                *n += 1;
                if *n > 1 || still_bound {
                    let _ = ready.send(Ok(()));
                    return Ok(());
                }
                let bound = deadline(link, bind(channel, queue, exchange, &pattern)).await;
                let _ = ready.send(bound.clone());
                bound
            }
            Command::Unbind(pattern) => {
                self.release(pattern);
                Ok(())
            }
        }
    }

    /// Removes one stale binding.
    async fn unbind_one(
        &mut self,
        link: &Link,
        channel: &Channel,
        queue: &str,
    ) -> Result<(), String> {
        let Some(pattern) = self.stale.iter().next().cloned() else {
            return Ok(());
        };
        deadline(
            link,
            channel.queue_unbind(
                queue.into(),
                link.config.exchange.as_str().into(),
                pattern.as_str().into(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.stale.remove(&pattern);
        Ok(())
    }

    /// Answers every waiting subscription.
    fn answer(&mut self, outcome: Result<(), String>) {
        for ready in self.waiting.drain(..) {
            let _ = ready.send(outcome.clone());
        }
    }
}

/// A broker call bounded by `connection-timeout` (lapin's never finish on a
/// connection the network dropped).
async fn deadline<T>(
    link: &Link,
    call: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, String> {
    let limit: Duration = link.config.connection_timeout;
    match tokio::time::timeout(limit, call).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer from the broker within {limit:?}")),
    }
}

/// Declares the queue, binds every pattern in use and starts consuming.
async fn open(
    link: &Link,
    live: &Live,
    plan: &QueuePlan,
    patterns: impl Iterator<Item = &String>,
) -> Result<(Channel, Consumer, String), String> {
    let (channel, queue) = deadline(link, declare_queue(link, live, plan)).await?;
    let exchange = link.config.exchange.as_str();
    for pattern in patterns {
        if let Err(e) = deadline(link, bind(&channel, &queue, exchange, pattern)).await {
            let _ = channel.close(200, "set-up failed".into()).await;
            return Err(format!("binding `{pattern}`: {e}"));
        }
    }
    match deadline(link, consume(&channel, &queue)).await {
        Ok(consumer) => Ok((channel, consumer, queue)),
        Err(e) => {
            let _ = channel.close(200, "set-up failed".into()).await;
            Err(e)
        }
    }
}

/// Owns the channel: (re-)declares, binds, consumes and forwards, until `stop`.
async fn control(
    link: Arc<Link>,
    plan: QueuePlan,
    mut commands: mpsc::UnboundedReceiver<Command>,
    forward: mpsc::UnboundedSender<Inbound>,
    stop: CancellationToken,
) {
    let mut attempts = Attempts::new(&link, None);
    let mut bindings = Bindings::default();
    loop {
        // Subscriptions come and go while there is no connection too.
        let live = {
            let next = attempts.next(&link, &stop);
            tokio::pin!(next);
            loop {
                tokio::select! {
                    live = &mut next => break live,
                    Some(command) = commands.recv() => bindings.offline(command),
                }
            }
        };
        let Some(live) = live else { return };
        while let Ok(command) = commands.try_recv() {
            bindings.offline(command);
        }
        let gone = link.gone(live.generation);
        tokio::pin!(gone);
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            _ = &mut gone => Err("connection lost".to_owned()),
            opened = open(&link, &live, &plan, bindings.counts.keys()) => opened,
        };
        let (channel, mut consumer, queue) = match opened {
            Ok(opened) => opened,
            Err(why) => {
                tracing::warn!(bus = %link.bus, error = %why, "cannot set up the subscription queue; retrying");
                bindings.answer(Err(why));
                attempts.lost(&link, &live);
                continue;
            }
        };
        if matches!(plan, QueuePlan::Private) {
            // A new server-named queue: nothing stale is bound to it.
            bindings.stale.clear();
        }
        attempts.bound(&link, &live);
        bindings.answer(Ok(()));
        tracing::debug!(bus = %link.bus, queue = %queue, patterns = bindings.counts.len(), "shared subscription queue bound");
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    close_queue(&channel, &consumer, &queue, true).await;
                    return;
                }
                _ = &mut gone => {
                    attempts.lost(&link, &live);
                    break;
                }
                Some(command) = commands.recv() => {
                    if let Err(why) = bindings.online(command, &link, &channel, &queue).await {
                        tracing::warn!(bus = %link.bus, error = %why, "binding failed; re-opening the subscription queue");
                        let _ = channel.close(200, "binding failed".into()).await;
                        attempts.lost(&link, &live);
                        break;
                    }
                }
                _ = std::future::ready(()), if !bindings.stale.is_empty() => {
                    if let Err(why) = bindings.unbind_one(&link, &channel, &queue).await {
                        tracing::warn!(bus = %link.bus, error = %why, "unbinding failed; re-opening the subscription queue");
                        let _ = channel.close(200, "unbinding failed".into()).await;
                        attempts.lost(&link, &live);
                        break;
                    }
                }
                next = consumer.next() => match next {
                    // lapin hands out what it had buffered even after the
                    // connection failed; those come again on the next one.
                    Some(Ok(delivery)) if channel.status().connected() => {
                        let _ = forward.send(Inbound { generation: live.generation, delivery });
                    }
                    _ => {
                        attempts.lost(&link, &live);
                        break;
                    }
                },
            }
        }
    }
}

/// Decodes each delivery once, hands it to every matching subscription and
/// acknowledges, until `stop`.
async fn dispatch<M: DeserializeOwned + Send + Sync + 'static>(
    link: Arc<Link>,
    index: Index<M>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    stop: CancellationToken,
) {
    let at_most_once = link.config.delivery == DeliveryMode::AtMostOnce;
    let mut unacked: Option<lapin::Acker> = None;
    let mut count = 0usize;
    let mut generation = 0u64;
    let mut targets: Vec<SubscriptionSender<M>> = Vec::new();
    loop {
        let Inbound {
            generation: from,
            delivery,
        } = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                flush_ack(&mut unacked, &mut count, &link, generation).await;
                return;
            }
            next = inbound.recv() => match next {
                Some(inbound) => inbound,
                None => return,
            },
            _ = tokio::time::sleep(ACK_PAUSE), if unacked.is_some() => {
                flush_ack(&mut unacked, &mut count, &link, generation).await;
                continue;
            }
        };
        if from != generation {
            // Acks of a lost connection can only hang; the broker re-sends those.
            unacked = None;
            count = 0;
            generation = from;
        }
        if link.current().is_none_or(|l| l.generation != from) {
            continue;
        }
        link.health.received.fetch_add(1, Ordering::Relaxed);
        let message = match to_delivery::<M>(&link, &delivery) {
            Ok(d) => d,
            Err(why) => {
                link.rejected(
                    delivery.routing_key.as_str(),
                    "malformed message rejected",
                    &why,
                );
                flush_ack(&mut unacked, &mut count, &link, generation).await;
                bounded(delivery.reject(BasicRejectOptions { requeue: false })).await;
                continue;
            }
        };
        let acker = delivery.acker;
        if at_most_once {
            unacked = Some(acker.clone());
            count += 1;
        }
        read(&index).for_each_match(message.topic().as_str(), |_, sender| {
            targets.push(sender.clone());
        });
        let mut stopped = false;
        let mut message = Some(message);
        let last = targets.len();
        for (i, target) in targets.drain(..).enumerate() {
            let Some(d) = (if i + 1 == last {
                message.take()
            } else {
                message.clone()
            }) else {
                break;
            };
            if let TryDeliver::Full(d) = target.try_deliver(d) {
                // What is dispatched already is acknowledged before waiting,
                // so a lost connection meanwhile brings back only this one.
                flush_ack(&mut unacked, &mut count, &link, generation).await;
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        stopped = true;
                        break;
                    }
                    _ = target.deliver(d) => {}
                }
            }
        }
        targets.clear();
        if stopped {
            flush_ack(&mut unacked, &mut count, &link, generation).await;
            if !at_most_once {
                bounded(acker.reject(BasicRejectOptions { requeue: true })).await;
            }
            return;
        }
        if !at_most_once {
            unacked = Some(acker);
            count += 1;
        }
        if count >= ACK_BATCH {
            flush_ack(&mut unacked, &mut count, &link, generation).await;
        }
    }
}
