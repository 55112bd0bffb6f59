//! Subscriptions: a bounded queue per subscriber, with a policy for when it is full.
//!
//! # Under stress
//!
//! - **Full queue, [`FullPolicy::Wait`]**: the publisher waits for room in this
//!   subscriber's queue. Other subscribers of the same message already have it
//!   (buses offer a message to every queue without waiting first, and only then
//!   wait for the full ones), so a slow subscriber delays the publisher — and,
//!   through it, later messages — but never takes a message away from anyone.
//!   A subscriber that publishes to a topic it is itself subscribed to under
//!   `Wait` can deadlock on its own full queue; use `DropOldest` there.
//! - **Full queue, [`FullPolicy::DropOldest`]**: the publisher never waits; the
//!   oldest queued message of this subscriber is discarded and counted. The
//!   subscriber reads the count with [`Subscription::lagged`], exact at any
//!   moment (counted when the message is dropped).
//! - **Dropped subscription**: dropping the `Subscription` removes it from every
//!   bus at once; later publishes neither wait for it nor fail because of it.
//! - **Closed bus**: when the process stops, buses drop their side of the
//!   queue; [`Subscription::recv`] drains what is queued, then returns `None`
//!   for good (it never spins).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::delivery::Delivery;
use crate::drop_guard::DropGuard;
use crate::pattern::Pattern;
pub use crate::subscriber_queue::PushedBatch;
use crate::subscriber_queue::{Pushed, SubscriberQueue};

/// What a bus does when a subscriber's queue is full; in config `"wait"` or
/// `"drop-oldest"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// The publisher waits until there is room (lossless back-pressure).
    #[default]
    Wait,
    /// The oldest queued message is dropped and counted as lag.
    DropOldest,
}

impl FullPolicy {
    /// The config spelling: `"wait"` or `"drop-oldest"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FullPolicy::Wait => "wait",
            FullPolicy::DropOldest => "drop-oldest",
        }
    }
}

/// Per-subscription options; `None` fields take the bus defaults from config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    capacity: Option<usize>,
    policy: Option<FullPolicy>,
}

impl SubscribeOptions {
    /// Bus defaults for everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue capacity (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }

    /// What to do when the queue is full.
    pub fn policy(mut self, policy: FullPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The capacity set, if any.
    pub fn capacity_or(&self, default: usize) -> usize {
        self.capacity.unwrap_or(default).max(1)
    }

    /// The policy set, if any.
    pub fn policy_or(&self, default: FullPolicy) -> FullPolicy {
        self.policy.unwrap_or(default)
    }
}

/// Counters shared by both ends of a subscription queue.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub(crate) lagged: AtomicU64,
}

impl QueueCounters {
    /// Messages dropped from this queue under `DropOldest`.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }
}

/// Result of offering a message to a queue without waiting.
#[derive(Debug)]
pub enum TryDeliver<M> {
    /// Queued.
    Delivered,
    /// Queued, and the oldest message was dropped to make room.
    DeliveredDroppingOldest,
    /// Full under `Wait`: the message comes back to be sent with [`SubscriptionSender::deliver`].
    Full(Delivery<M>),
    /// The subscriber is gone.
    Closed,
}

/// The bus side of a subscription queue. Cloned into every bus the subscription listens on.
pub struct SubscriptionSender<M> {
    queue: Arc<SubscriberQueue<M>>,
}

impl<M> Clone for SubscriptionSender<M> {
    fn clone(&self) -> Self {
        self.queue.add_sender();
        SubscriptionSender {
            queue: self.queue.clone(),
        }
    }
}

impl<M> Drop for SubscriptionSender<M> {
    fn drop(&mut self) {
        self.queue.remove_sender();
    }
}

impl<M> fmt::Debug for SubscriptionSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionSender")
            .field("lagged", &self.queue.counters().lagged())
            .finish()
    }
}

impl<M: Send + Sync + 'static> SubscriptionSender<M> {
    /// Offers a message without waiting.
    #[inline]
    pub fn try_deliver(&self, delivery: Delivery<M>) -> TryDeliver<M> {
        match self.queue.try_push(delivery) {
            Pushed::Queued => TryDeliver::Delivered,
            Pushed::QueuedDroppingOldest => TryDeliver::DeliveredDroppingOldest,
            Pushed::Full(d) => TryDeliver::Full(d),
            Pushed::Closed => TryDeliver::Closed,
        }
    }

    /// Delivers, waiting for room under `Wait`. `Err(())` when the subscriber is gone.
    ///
    /// A full queue makes the publisher wait until half of it is free again, not
    /// just one slot: the publisher then refills it in a burst instead of being
    /// woken once per message the subscriber takes.
    pub async fn deliver(&self, delivery: Delivery<M>) -> Result<(), ()> {
        self.queue.push(delivery).await
    }

    /// Offers the messages of `batch`, in order, without waiting: one lock
    /// and one wake-up for all of them. What a full queue (`Wait`) could not
    /// take stays at the front of `batch`, for
    /// [`deliver_batch`](Self::deliver_batch). `None` when the subscriber is gone.
    pub fn try_deliver_batch(&self, batch: &mut VecDeque<Delivery<M>>) -> Option<PushedBatch> {
        self.queue.try_push_batch(batch)
    }

    /// Delivers every message of `batch`, in order, waiting for room under
    /// `Wait`. `Err(())` when the subscriber is gone.
    pub async fn deliver_batch(&self, batch: VecDeque<Delivery<M>>) -> Result<PushedBatch, ()> {
        self.queue.push_batch(batch).await
    }

    /// True once the subscriber dropped its [`Subscription`].
    pub fn is_closed(&self) -> bool {
        self.queue.receiver_gone()
    }

    /// The counters of this queue.
    pub fn counters(&self) -> &Arc<QueueCounters> {
        self.queue.counters()
    }
}

/// A subscriber's end: read messages with [`recv`](Subscription::recv).
///
/// Dropping it unsubscribes from every bus at once.
pub struct Subscription<M> {
    pattern: Pattern,
    queue: Arc<SubscriberQueue<M>>,
    /// Messages already taken from the queue in one batch.
    taken: VecDeque<Delivery<M>>,
    guards: Vec<DropGuard>,
}

impl<M> Drop for Subscription<M> {
    fn drop(&mut self) {
        self.queue.close_receiver();
    }
}

impl<M> fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("lagged", &self.queue.counters().lagged())
            .finish()
    }
}

/// Makes a subscription queue: the sender for buses, the receiver for the subscriber.
pub fn queue<M: Send + Sync + 'static>(
    pattern: Pattern,
    capacity: usize,
    policy: FullPolicy,
) -> (SubscriptionSender<M>, Subscription<M>) {
    let queue = Arc::new(SubscriberQueue::new(capacity, policy));
    (
        SubscriptionSender {
            queue: queue.clone(),
        },
        Subscription {
            pattern,
            queue,
            taken: VecDeque::new(),
            guards: Vec::new(),
        },
    )
}

impl<M: Send + Sync + 'static> Subscription<M> {
    /// The next message; `None` once every bus has closed this subscription.
    pub async fn recv(&mut self) -> Option<Delivery<M>> {
        if self.taken.is_empty() && !self.queue.take(&mut self.taken).await {
            return None;
        }
        self.taken.pop_front()
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery<M>> {
        if self.taken.is_empty() {
            self.queue.try_take(&mut self.taken);
        }
        self.taken.pop_front()
    }

    /// The capacity of this subscription's queue.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// How many messages were dropped from this queue (only under `DropOldest`).
    ///
    /// Counted the moment a message is dropped.
    pub fn lagged(&self) -> u64 {
        self.queue.counters().lagged()
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// Keeps a bus registration alive for as long as this subscription (for bus implementations).
    pub fn attach(&mut self, guard: DropGuard) {
        self.guards.push(guard);
    }
}
