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
//!   `prefetch` unacknowledged deliveries and keeps the rest; the hand-over
//!   between the two tasks holds at most `prefetch` deliveries (the control
//!   task stops taking from the broker when it is full), so this process
//!   holds at most `prefetch` + the local queues. A subscriber that must not
//!   be held back by another uses `drop-oldest`, or the bus
//!   `shared-queue = false`.
//! - **At-least-once**: a delivery is acknowledged once every matching
//!   subscription took it. After a lost connection the unacknowledged ones
//!   come again to every matching subscription, also to those that took
//!   them already (at most `prefetch`, with the same message id).
//! - **Malformed body or routing key**: logged, counted, rejected without
//!   requeue (dead-lettered when `dead-letter-exchange` is set).
//! - **Connection or channel lost**: the control task re-opens — on the next
//!   connection when the connection went — re-declares the queue and binds
//!   every pattern in use (one at a time: ~1.5 ms each here) before it
//!   consumes again. Deliveries taken on the old channel and not yet
//!   dispatched are dropped (each channel has its own number; the broker
//!   sends them again). Subscriptions made meanwhile are bound then. The
//!   at-least-once queue outlives the gap (`queue-expiry`) with its
//!   bindings, so nothing is lost while they are re-bound; at-most-once
//!   queues are new, and publishing re-opens after at most 3 s even if
//!   thousands of bindings are not back yet.
//! - **A bind refused** (or not answered within `connection-timeout`): that
//!   `subscribe` fails. A pattern the broker refuses while the queue is
//!   re-opened (subscribed while disconnected) is dropped with an `error` log
//!   naming it, and the others are bound without it.
//! - **Subscriber dropped**: it leaves the index at once; its pattern is
//!   unbound when no other subscription uses it — lazily, after any waiting
//!   subscribe, and between deliveries (see [`Bindings`]). Deliveries that
//!   match no one are acknowledged and dropped, as a publish with no
//!   subscriber is on the in-process bus. A new subscription may see a
//!   message published just before it, when another subscription's binding
//!   had already brought it.
//! - **Backlog**: every second the control task asks the broker how many
//!   messages wait in the queue (a passive declare) and exports it as
//!   `telamon_bus_backlog`.
//! - **Bus stopped**: the consumer is cancelled, the queue deleted, and
//!   every subscription ends (`recv` returns `None` once drained); every
//!   broker call on the way is bounded by `connection-timeout`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicRejectOptions, QueueDeclareOptions, QueueDeleteOptions};
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
    decode_or_reject, flush_ack,
};

/// How often the broker is asked how many messages wait in the queue
/// (`telamon_bus_backlog`).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// The local subscriptions, matched per delivery; closed (and emptied) when
/// the bus stops, so every subscription ends.
struct Local<M> {
    closed: bool,
    index: PatternIndex<SubscriptionSender<M>>,
}

type Index<M> = Arc<RwLock<Local<M>>>;

/// Closes the index when the dispatch task ends, however it ends.
struct CloseOnDrop<M>(Index<M>);

impl<M> Drop for CloseOnDrop<M> {
    fn drop(&mut self) {
        let emptied = {
            let mut local = write(&self.0);
            local.closed = true;
            std::mem::take(&mut local.index)
        };
        // The senders go after the lock is released.
        drop(emptied);
    }
}

/// What `subscribe` and a dropped subscription ask of the control task.
enum Command {
    /// A subscription on this pattern; answered once the pattern is bound.
    Bind(String, oneshot::Sender<Result<(), String>>),
    /// A subscription on this pattern is gone.
    Unbind(String),
}

/// A delivery on its way from the control task to the dispatch task, with
/// the number of the channel it came on.
struct Inbound {
    channel: u64,
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
        let index: Index<M> = Arc::new(RwLock::new(Local {
            closed: false,
            index: PatternIndex::new(),
        }));
        let (commands, requests) = mpsc::unbounded_channel();
        // The broker sends at most `prefetch` unacknowledged deliveries per
        // channel and only the dispatch task acknowledges; across re-opened
        // channels the control task stops taking deliveries when this is full.
        let (forward, inbound) = mpsc::channel(usize::from(link.config.prefetch));
        let current = Arc::new(AtomicU64::new(0));
        tasks.spawn(control(
            link.clone(),
            plan,
            requests,
            forward,
            current.clone(),
            stop.clone(),
        ));
        tasks.spawn(dispatch(link, index.clone(), inbound, current, stop));
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
        {
            // In the index before the binding exists: nothing routed to it is missed.
            let mut local = write(&self.index);
            if local.closed {
                return Err(());
            }
            local.index.insert(id, &pattern, sender);
        }
        let (index, commands) = (self.index.clone(), self.commands.clone());
        let remove: Remove = Box::new(move || {
            // The sender is dropped after the lock is released.
            let removed = write(&index).index.remove(id, &pattern);
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
/// subscriptions waiting for the next channel to be bound; and the patterns
/// no one uses any more that may still be bound.
///
/// Unbinding is lazy: a binding costs the broker milliseconds to remove, so
/// when thousands of subscriptions go at once a new `subscribe` must not
/// queue behind their unbinds, nor deliveries stop for them. Binds are
/// answered first; stale bindings are removed one at a time when nothing else
/// waits (and one per [`ACK_BATCH`] deliveries under load). A pattern
/// subscribed again is bound again (binding is idempotent; whether a stale
/// binding survived a reconnect is not known). Meanwhile what a stale
/// binding brings matches no one and is acknowledged and dropped.
#[derive(Default)]
struct Bindings {
    counts: HashMap<String, usize>,
    waiting: Vec<(String, oneshot::Sender<Result<(), String>>)>,
    stale: HashSet<String>,
}

impl Bindings {
    /// Applies a command while there is no channel: the pattern is bound with
    /// the others on the next one.
    fn offline(&mut self, command: Command) {
        match command {
            Command::Bind(pattern, ready) => {
                self.stale.remove(&pattern);
                *self.counts.entry(pattern.clone()).or_default() += 1;
                self.waiting.push((pattern, ready));
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
        match command {
            Command::Bind(pattern, ready) => {
                self.stale.remove(&pattern);
                let n = self.counts.entry(pattern.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    let _ = ready.send(Ok(()));
                    return Ok(());
                }
                let exchange = link.config.exchange.as_str();
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
        for (_, ready) in self.waiting.drain(..) {
            let _ = ready.send(outcome.clone());
        }
    }

    /// The broker refused `pattern`: its subscriptions are told (if they are
    /// still waiting) and it is no longer bound.
    fn refuse(&mut self, pattern: &str, why: &str) {
        self.counts.remove(pattern);
        let (refused, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(p, _)| p == pattern);
        self.waiting = rest;
        for (_, ready) in refused {
            let _ = ready.send(Err(why.to_owned()));
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

/// Closes a channel, bounded like every other call.
async fn close(link: &Link, channel: &Channel, why: &str) {
    let _ = deadline(link, channel.close(200, why.into())).await;
}

/// Why a queue could not be opened.
enum OpenError {
    /// The broker refused to bind this pattern.
    Refused(String, String),
    /// Anything else: retry later.
    Failed(String),
}

/// Declares the queue, binds every pattern in use and starts consuming.
async fn open(
    link: &Link,
    live: &Live,
    plan: &QueuePlan,
    patterns: impl Iterator<Item = &String>,
) -> Result<(Channel, Consumer, String), OpenError> {
    let (channel, queue) = deadline(link, declare_queue(link, live, plan))
        .await
        .map_err(OpenError::Failed)?;
    let exchange = link.config.exchange.as_str();
    let mut failed = None;
    for pattern in patterns {
        if let Err(why) = deadline(link, bind(&channel, &queue, exchange, pattern)).await {
            failed = Some(OpenError::Refused(pattern.clone(), why));
            break;
        }
    }
    let failed = match failed {
        Some(failed) => failed,
        None => match deadline(link, consume(&channel, &queue)).await {
            Ok(consumer) => return Ok((channel, consumer, queue)),
            Err(why) => OpenError::Failed(why),
        },
    };
    if matches!(plan, QueuePlan::Private) {
        // Exclusive and never consumed, it would fill until the connection goes.
        let _ = deadline(link, delete_queue(live, &queue)).await;
    }
    close(link, &channel, "set-up failed").await;
    Err(failed)
}

/// Deletes `queue` on a channel of its own (the set-up channel may be closed).
async fn delete_queue(live: &Live, queue: &str) -> Result<(), lapin::Error> {
    let channel = live.connection.create_channel().await?;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    channel.close(200, "deleted".into()).await
}

/// Owns the channel: (re-)declares, binds, consumes and forwards, until `stop`.
async fn control(
    link: Arc<Link>,
    plan: QueuePlan,
    mut commands: mpsc::UnboundedReceiver<Command>,
    forward: mpsc::Sender<Inbound>,
    current: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut attempts = Attempts::new(&link, None);
    let mut bindings = Bindings::default();
    let mut channels = 0u64;
    loop {
        current.store(0, Ordering::Release);
        // Subscriptions come and go while there is no channel too.
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
            _ = &mut gone => Err(OpenError::Failed("connection lost".to_owned())),
            opened = open(&link, &live, &plan, bindings.counts.keys()) => opened,
        };
        let (channel, mut consumer, queue) = match opened {
            Ok(opened) => opened,
            Err(OpenError::Refused(pattern, why)) => {
                tracing::error!(bus = %link.bus, pattern = %pattern, error = %why, "the broker refuses to bind this pattern; its subscriptions get nothing");
                bindings.refuse(&pattern, &why);
                attempts.lost(&link, &live);
                continue;
            }
            Err(OpenError::Failed(why)) => {
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
        channels += 1;
        current.store(channels, Ordering::Release);
        attempts.bound(&link, &live);
        bindings.answer(Ok(()));
        tracing::debug!(bus = %link.bus, queue = %queue, patterns = bindings.counts.len(), "shared subscription queue bound");
        let mut since_unbind = 0usize;
        let mut backlog = tokio::time::interval(BACKLOG_EVERY);
        backlog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            let room = forward.capacity() > 0;
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    close_queue(&channel, &consumer, &queue, true).await;
                    return;
                }
                _ = &mut gone => break None,
                Some(command) = commands.recv() => {
                    if let Err(why) = bindings.online(command, &link, &channel, &queue).await {
                        break Some(format!("binding failed: {why}"));
                    }
                }
                _ = backlog.tick() => {
                    // A passive declare answers with the queue's message count.
                    let asked = channel.queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                        FieldTable::default(),
                    );
                    match deadline(&link, asked).await {
                        Ok(q) => link.health.backlog.store(u64::from(q.message_count()), Ordering::Relaxed),
                        // A lost connection is noticed by `gone`; a slow answer
                        // is no reason to stop consuming.
                        Err(why) => tracing::debug!(bus = %link.bus, error = %why, "the broker did not say the backlog"),
                    }
                }
                // Wakes the loop when the dispatch task has made room.
                permit = forward.reserve(), if !room => drop(permit),
                next = consumer.next(), if room => match next {
                    // lapin hands out what it had buffered even after the
                    // connection failed; those come again on the next one.
                    Some(Ok(delivery)) if channel.status().connected() => {
                        let _ = forward.try_send(Inbound { channel: channels, generation: live.generation, delivery });
                        since_unbind += 1;
                        if since_unbind >= ACK_BATCH && !bindings.stale.is_empty() {
                            since_unbind = 0;
                            if let Err(why) = bindings.unbind_one(&link, &channel, &queue).await {
                                break Some(format!("unbinding failed: {why}"));
                            }
                        }
                    }
                    _ => break Some("the consumer stream ended".to_owned()),
                },
                _ = std::future::ready(()), if !bindings.stale.is_empty() => {
                    since_unbind = 0;
                    if let Err(why) = bindings.unbind_one(&link, &channel, &queue).await {
                        break Some(format!("unbinding failed: {why}"));
                    }
                }
            }
        };
        current.store(0, Ordering::Release);
        if let Some(why) = why {
            tracing::warn!(bus = %link.bus, reason = %why, "re-opening the subscription queue");
            close(&link, &channel, "re-opening").await;
        }
        attempts.lost(&link, &live);
    }
}

/// Decodes each delivery once, hands it to every matching subscription and
/// acknowledges, until `stop`; then every subscription ends.
async fn dispatch<M: DeserializeOwned + Send + Sync + 'static>(
    link: Arc<Link>,
    index: Index<M>,
    mut inbound: mpsc::Receiver<Inbound>,
    current: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let _close = CloseOnDrop(index.clone());
    let at_most_once = link.config.delivery == DeliveryMode::AtMostOnce;
    let mut unacked: Option<lapin::Acker> = None;
    let mut count = 0usize;
    let mut channel = 0u64;
    let mut generation = 0u64;
    let mut targets: Vec<SubscriptionSender<M>> = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                flush_ack(&mut unacked, &mut count, &link, generation).await;
                return;
            }
            next = inbound.recv() => match next {
                Some(next) => next,
                None => return,
            },
            _ = tokio::time::sleep(ACK_PAUSE), if unacked.is_some() => {
                flush_ack(&mut unacked, &mut count, &link, generation).await;
                continue;
            }
        };
        if next.channel != channel {
            // Acks for a channel that is gone can only fail; the broker re-sends those.
            unacked = None;
            count = 0;
            channel = next.channel;
            generation = next.generation;
        }
        if current.load(Ordering::Acquire) != channel {
            continue;
        }
        let delivery = next.delivery;
        let Some(message) =
            decode_or_reject::<M>(&link, &delivery, &mut unacked, &mut count, generation).await
        else {
            continue;
        };
        let acker = delivery.acker;
        if at_most_once {
            unacked = Some(acker.clone());
            count += 1;
        }
        read(&index)
            .index
            .for_each_match(message.topic().as_str(), |_, sender| {
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
