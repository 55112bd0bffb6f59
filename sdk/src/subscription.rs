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
//!   subscriber reads the count with [`Subscription::lagged`]. The capacity is
//!   rounded up to a power of two under this policy.
//! - **Dropped subscription**: dropping the `Subscription` removes it from every
//!   bus at once; later publishes neither wait for it nor fail because of it.
//! - **Closed bus**: when the process stops, buses drop their side of the
//!   queue; [`Subscription::recv`] drains what is queued, then returns `None`
//!   for good (it never spins).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{broadcast, mpsc};

use crate::delivery::Delivery;
use crate::drop_guard::DropGuard;
use crate::pattern::Pattern;

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
    lagged: AtomicU64,
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

enum SenderKind<M> {
    Wait(mpsc::Sender<Delivery<M>>),
    DropOldest(broadcast::Sender<Delivery<M>>, usize),
}

/// The bus side of a subscription queue. Cloned into every bus the subscription listens on.
pub struct SubscriptionSender<M> {
    kind: SenderKind<M>,
    counters: Arc<QueueCounters>,
}

impl<M> Clone for SubscriptionSender<M> {
    fn clone(&self) -> Self {
        let kind = match &self.kind {
            SenderKind::Wait(s) => SenderKind::Wait(s.clone()),
            SenderKind::DropOldest(s, cap) => SenderKind::DropOldest(s.clone(), *cap),
        };
        SubscriptionSender {
            kind,
            counters: self.counters.clone(),
        }
    }
}

impl<M> fmt::Debug for SubscriptionSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionSender")
            .field("lagged", &self.counters.lagged())
            .finish()
    }
}

impl<M: Send + Sync + 'static> SubscriptionSender<M> {
    /// Offers a message without waiting.
    #[inline]
    pub fn try_deliver(&self, delivery: Delivery<M>) -> TryDeliver<M> {
        match &self.kind {
            SenderKind::Wait(tx) => match tx.try_send(delivery) {
                Ok(()) => TryDeliver::Delivered,
                Err(mpsc::error::TrySendError::Full(d)) => TryDeliver::Full(d),
                Err(mpsc::error::TrySendError::Closed(_)) => TryDeliver::Closed,
            },
            SenderKind::DropOldest(tx, cap) => {
                let full = tx.len() >= *cap;
                match tx.send(delivery) {
                    Ok(_) if full => TryDeliver::DeliveredDroppingOldest,
                    Ok(_) => TryDeliver::Delivered,
                    Err(_) => TryDeliver::Closed,
                }
            }
        }
    }

    /// Delivers, waiting for room under `Wait`. `Err(())` when the subscriber is gone.
    ///
    /// A full queue makes the publisher wait until half of it is free again, not
    /// just one slot: the publisher then refills it in a burst instead of being
    /// woken once per message the subscriber takes.
    pub async fn deliver(&self, delivery: Delivery<M>) -> Result<(), ()> {
        match &self.kind {
            SenderKind::Wait(tx) => {
                let room = (tx.max_capacity() / 2).max(1);
                let mut permits = tx.reserve_many(room).await.map_err(|_| ())?;
                match permits.next() {
                    Some(permit) => {
                        permit.send(delivery);
                        Ok(())
                    }
                    None => Err(()),
                }
            }
            SenderKind::DropOldest(tx, _) => tx.send(delivery).map(|_| ()).map_err(|_| ()),
        }
    }

    /// True once the subscriber dropped its [`Subscription`].
    pub fn is_closed(&self) -> bool {
        match &self.kind {
            SenderKind::Wait(tx) => tx.is_closed(),
            SenderKind::DropOldest(tx, _) => tx.receiver_count() == 0,
        }
    }

    /// The counters of this queue.
    pub fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }
}

/// How many queued messages a `Wait` subscription takes from its queue at once.
const RECV_BATCH: usize = 64;

enum ReceiverKind<M> {
    /// The queue, and messages already taken from it in one batch (newest first).
    Wait(mpsc::Receiver<Delivery<M>>, Vec<Delivery<M>>),
    DropOldest(broadcast::Receiver<Delivery<M>>),
}

/// A subscriber's end: read messages with [`recv`](Subscription::recv).
///
/// Dropping it unsubscribes from every bus at once.
pub struct Subscription<M> {
    pattern: Pattern,
    rx: ReceiverKind<M>,
    counters: Arc<QueueCounters>,
    guards: Vec<DropGuard>,
}

impl<M> fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .field("lagged", &self.counters.lagged())
            .finish()
    }
}

/// Makes a subscription queue: the sender for buses, the receiver for the subscriber.
pub fn queue<M: Send + Sync + 'static>(
    pattern: Pattern,
    capacity: usize,
    policy: FullPolicy,
) -> (SubscriptionSender<M>, Subscription<M>) {
    let counters = Arc::new(QueueCounters::default());
    let (kind, rx) = match policy {
        FullPolicy::Wait => {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            (
                SenderKind::Wait(tx),
                ReceiverKind::Wait(rx, Vec::with_capacity(RECV_BATCH)),
            )
        }
        FullPolicy::DropOldest => {
            let cap = capacity.max(1).next_power_of_two();
            let (tx, rx) = broadcast::channel(cap);
            (
                SenderKind::DropOldest(tx, cap),
                ReceiverKind::DropOldest(rx),
            )
        }
    };
    (
        SubscriptionSender {
            kind,
            counters: counters.clone(),
        },
        Subscription {
            pattern,
            rx,
            counters,
            guards: Vec::new(),
        },
    )
}

impl<M: Send + Sync + 'static> Subscription<M> {
    /// The next message; `None` once every bus has closed this subscription.
    pub async fn recv(&mut self) -> Option<Delivery<M>> {
        match &mut self.rx {
            ReceiverKind::Wait(rx, taken) => {
                if taken.is_empty() {
                    // One wake-up for up to RECV_BATCH messages.
                    if rx.recv_many(taken, RECV_BATCH).await == 0 {
                        return None;
                    }
                    taken.reverse();
                }
                taken.pop()
            }
            ReceiverKind::DropOldest(rx) => loop {
                match rx.recv().await {
                    Ok(d) => return Some(d),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.counters.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        }
    }

    /// The next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery<M>> {
        match &mut self.rx {
            ReceiverKind::Wait(rx, taken) => taken.pop().or_else(|| rx.try_recv().ok()),
            ReceiverKind::DropOldest(rx) => loop {
                match rx.try_recv() {
                    Ok(d) => return Some(d),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        self.counters.lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(_) => return None,
                }
            },
        }
    }

    /// How many messages were dropped from this queue (only under `DropOldest`).
    ///
    /// Counted when the subscriber reads past the gap, so it is exact after a `recv`.
    pub fn lagged(&self) -> u64 {
        self.counters.lagged()
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
