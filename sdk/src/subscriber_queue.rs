//! The bounded queue between the buses and one subscriber.
//!
//! A `VecDeque` under a mutex, with two wake-ups: the subscriber's (rung when
//! a message lands in an empty queue it waits on) and the publishers' (rung
//! when a full queue is half empty again). Nothing is allocated until the
//! first message arrives, so an idle subscription costs a few hundred bytes
//! whatever its capacity; the buffer grows to what the traffic needs, up to
//! the capacity, and is kept.
//!
//! # Under stress
//!
//! - **Full under `Wait`**: [`try_push`](SubscriberQueue::try_push) hands the
//!   message back; [`push`](SubscriberQueue::push) waits until half the
//!   capacity is free (one wake-up per burst, not per message taken).
//! - **Full under `DropOldest`**: the oldest message is dropped and counted at
//!   once, so the count is exact at any moment.
//! - **A batch** ([`try_push_batch`](SubscriberQueue::try_push_batch)) goes in
//!   under one lock with one wake-up; under `Wait` what does not fit stays
//!   with the publisher, in order, until there is room.
//! - **Subscriber gone**: pushes fail at once, waiting publishers are woken and
//!   fail too; what was queued is dropped.
//! - **Every sender gone**: the subscriber drains what is queued, then sees the end.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::delivery::Delivery;
use crate::subscription::{FullPolicy, QueueCounters};

/// How many queued messages the subscriber takes from the queue at once.
pub(crate) const TAKE_BATCH: usize = 64;

struct State<M> {
    items: VecDeque<Delivery<M>>,
    /// Live sender ends.
    senders: usize,
    /// The subscriber's end is alive.
    receiver: bool,
    /// The subscriber found the queue empty and waits.
    reader_waiting: bool,
    /// A publisher found the queue full and waits.
    writer_waiting: bool,
}

pub(crate) struct SubscriberQueue<M> {
    state: Mutex<State<M>>,
    readable: Notify,
    writable: Notify,
    capacity: usize,
    policy: FullPolicy,
    counters: Arc<QueueCounters>,
}

/// Outcome of one look by the subscriber.
enum Taken {
    Some,
    Empty,
    Ended,
}

/// How many messages of a batch were queued, and how many old ones were
/// dropped to make room (`DropOldest`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushedBatch {
    /// Messages of the batch now in the queue.
    pub queued: usize,
    /// Older messages dropped for them.
    pub dropped_oldest: usize,
}

/// Outcome of [`SubscriberQueue::try_push`].
pub(crate) enum Pushed<M> {
    Queued,
    QueuedDroppingOldest,
    Full(Delivery<M>),
    Closed,
}

impl<M> SubscriberQueue<M> {
    /// A queue with one sender end counted.
    pub(crate) fn new(capacity: usize, policy: FullPolicy) -> Self {
        SubscriberQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                senders: 1,
                receiver: true,
                reader_waiting: false,
                writer_waiting: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            capacity: capacity.max(1),
            policy,
            counters: Arc::default(),
        }
    }

    /// The counters both ends and the metrics read.
    pub(crate) fn counters(&self) -> &Arc<QueueCounters> {
        &self.counters
    }

    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `d` now or hands it back (`Full` only under `Wait`; the queue
    /// then rings the publishers' wake-up once it is half empty again).
    pub(crate) fn try_push(&self, d: Delivery<M>) -> Pushed<M> {
        let mut s = self.lock();
        if !s.receiver {
            return Pushed::Closed;
        }
        if s.items.len() >= self.capacity {
            match self.policy {
                FullPolicy::Wait => {
                    s.writer_waiting = true;
                    return Pushed::Full(d);
                }
                FullPolicy::DropOldest => {
                    let oldest = s.items.pop_front();
                    self.counters.lagged.fetch_add(1, Ordering::Relaxed);
                    s.items.push_back(d);
                    drop(s);
                    drop(oldest);
                    return Pushed::QueuedDroppingOldest;
                }
            }
        }
        s.items.push_back(d);
        let wake = std::mem::take(&mut s.reader_waiting);
        drop(s);
        if wake {
            self.readable.notify_one();
        }
        Pushed::Queued
    }

    /// Queues messages from the front of `batch` under one lock, with one
    /// wake-up for the lot; under `Wait` it stops when the queue is full and
    /// leaves the rest in `batch` (the publishers' wake-up then rings once it
    /// is half empty again). `None` when the subscriber is gone.
    pub(crate) fn try_push_batch(&self, batch: &mut VecDeque<Delivery<M>>) -> Option<PushedBatch> {
        let mut s = self.lock();
        if !s.receiver {
            return None;
        }
        let mut out = PushedBatch::default();
        let mut oldest = Vec::new();
        while let Some(d) = batch.pop_front() {
            if s.items.len() >= self.capacity {
                match self.policy {
                    FullPolicy::Wait => {
                        s.writer_waiting = true;
                        batch.push_front(d);
                        break;
                    }
                    FullPolicy::DropOldest => {
                        oldest.extend(s.items.pop_front());
                        out.dropped_oldest += 1;
                    }
                }
            }
            s.items.push_back(d);
            out.queued += 1;
        }
        if out.dropped_oldest > 0 {
            self.counters
                .lagged
                .fetch_add(out.dropped_oldest as u64, Ordering::Relaxed);
        }
        let wake = out.queued > 0 && std::mem::take(&mut s.reader_waiting);
        drop(s);
        drop(oldest);
        if wake {
            self.readable.notify_one();
        }
        Some(out)
    }

    /// Queues every message of `batch` in order, waiting for room under
    /// `Wait`. `Err` once the subscriber is gone.
    pub(crate) async fn push_batch(
        &self,
        mut batch: VecDeque<Delivery<M>>,
    ) -> Result<PushedBatch, ()> {
        let mut total = PushedBatch::default();
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let pushed = self.try_push_batch(&mut batch).ok_or(())?;
            total.queued += pushed.queued;
            total.dropped_oldest += pushed.dropped_oldest;
            if batch.is_empty() {
                return Ok(total);
            }
            room.await;
        }
    }

    /// Queues `d`, waiting for room under `Wait`. `Err` once the subscriber is gone.
    pub(crate) async fn push(&self, mut d: Delivery<M>) -> Result<(), ()> {
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            // Registered before the look, so the ring that follows a `Full`
            // is not lost.
            room.as_mut().enable();
            match self.try_push(d) {
                Pushed::Queued | Pushed::QueuedDroppingOldest => return Ok(()),
                Pushed::Closed => return Err(()),
                Pushed::Full(back) => {
                    d = back;
                    room.await;
                }
            }
        }
    }

    /// Moves up to [`TAKE_BATCH`] messages into `into`; `false` when the queue
    /// is empty and every sender is gone. Waits while it is empty.
    pub(crate) async fn take(&self, into: &mut VecDeque<Delivery<M>>) -> bool {
        loop {
            match self.take_now(into, true) {
                Taken::Some => return true,
                Taken::Ended => return false,
                // A push after the look finds `reader_waiting` and rings; a
                // ring before the wait starts is kept as a permit.
                Taken::Empty => self.readable.notified().await,
            }
        }
    }

    /// Like [`take`](Self::take) without waiting; `false` when nothing was there.
    pub(crate) fn try_take(&self, into: &mut VecDeque<Delivery<M>>) -> bool {
        matches!(self.take_now(into, false), Taken::Some)
    }

    /// One look at the queue; with `wait`, an empty queue notes that the
    /// subscriber is about to wait.
    fn take_now(&self, into: &mut VecDeque<Delivery<M>>, wait: bool) -> Taken {
        let mut s = self.lock();
        if s.items.is_empty() {
            if s.senders == 0 {
                return Taken::Ended;
            }
            s.reader_waiting |= wait;
            return Taken::Empty;
        }
        let n = s.items.len().min(TAKE_BATCH);
        into.extend(s.items.drain(..n));
        let wake = s.writer_waiting && s.items.len() <= self.capacity / 2;
        if wake {
            s.writer_waiting = false;
        }
        drop(s);
        if wake {
            self.writable.notify_waiters();
        }
        Taken::Some
    }

    /// The subscriber is gone: later pushes fail, waiting publishers wake.
    pub(crate) fn close_receiver(&self) {
        let dropped = {
            let mut s = self.lock();
            s.receiver = false;
            s.writer_waiting = false;
            std::mem::take(&mut s.items)
        };
        self.writable.notify_waiters();
        drop(dropped);
    }

    pub(crate) fn receiver_gone(&self) -> bool {
        !self.lock().receiver
    }

    pub(crate) fn add_sender(&self) {
        self.lock().senders += 1;
    }

    pub(crate) fn remove_sender(&self) {
        let last = {
            let mut s = self.lock();
            s.senders -= 1;
            s.senders == 0
        };
        if last {
            self.readable.notify_one();
        }
    }
}
