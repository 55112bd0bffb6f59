//! Every open bidi/server stream, so that faults and `stop` can end them.
//!
//! Each stream task holds a [`StreamGuard`]; its cancellation token is a child
//! of the current "generation" token, itself a child of the server's shutdown
//! token. Cancelling a stream makes its task send the recorded close status
//! (default: UNAVAILABLE) and clean up its registrations; dropping the guard
//! (normal end, client cancel, or a task that ended for any other reason)
//! removes the entry, so the registry never leaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use tonic::Status;

/// Which rpc a stream belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// `PlatformService.OpenStream`.
    Platform,
    /// `CommandService.OpenStream`.
    CommandHandler,
    /// `QueryService.OpenStream`.
    QueryHandler,
    /// `QueryService.Query` response stream.
    QueryCall,
    /// `QueryService.Subscription`.
    Subscription,
    /// `EventStore.ListEvents`.
    EventTracker,
}

#[derive(Debug)]
struct Entry {
    kind: StreamKind,
    client_id: String,
    token: CancellationToken,
    close_status: Option<Status>,
}

#[derive(Debug)]
struct Inner {
    entries: HashMap<u64, Entry>,
    generation: CancellationToken,
}

/// Registry of open streams.
#[derive(Debug)]
pub(crate) struct StreamRegistry {
    next_id: AtomicU64,
    shutdown: CancellationToken,
    inner: Mutex<Inner>,
}

impl StreamRegistry {
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        let generation = shutdown.child_token();
        Self {
            next_id: AtomicU64::new(1),
            shutdown,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                generation,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new stream; keep the guard for the stream's lifetime.
    pub(crate) fn open(self: &Arc<Self>, kind: StreamKind, client_id: &str) -> StreamGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        let token = inner.generation.child_token();
        inner.entries.insert(
            id,
            Entry {
                kind,
                client_id: client_id.to_owned(),
                token: token.clone(),
                close_status: None,
            },
        );
        StreamGuard {
            id,
            token,
            registry: Arc::clone(self),
        }
    }

    /// Records the client id learned from a message on stream `id`.
    pub(crate) fn set_client(&self, id: u64, client_id: &str) {
        if let Some(entry) = self.lock().entries.get_mut(&id)
            && entry.client_id.is_empty()
        {
            entry.client_id = client_id.to_owned();
        }
    }

    /// The status a cancelled stream should end with.
    pub(crate) fn close_status(&self, id: u64) -> Status {
        self.lock()
            .entries
            .get_mut(&id)
            .and_then(|entry| entry.close_status.take())
            .unwrap_or_else(|| Status::unavailable("stream closed by the test server"))
    }

    /// Ends every stream of `client_id` with `status`; returns how many.
    pub(crate) fn close_client(&self, client_id: &str, status: &Status) -> usize {
        self.close_client_kinds(client_id, status, |_| true)
    }

    /// Ends the streams of `client_id` whose kind passes `filter`; returns how many.
    pub(crate) fn close_client_kinds(
        &self,
        client_id: &str,
        status: &Status,
        filter: impl Fn(StreamKind) -> bool,
    ) -> usize {
        let mut inner = self.lock();
        let mut count = 0;
        for entry in inner.entries.values_mut() {
            if entry.client_id == client_id && filter(entry.kind) {
                entry.close_status = Some(status.clone());
                entry.token.cancel();
                count += 1;
            }
        }
        count
    }

    /// Ends every open stream with `status`; later streams are unaffected.
    pub(crate) fn close_all(&self, status: &Status) -> usize {
        let mut inner = self.lock();
        for entry in inner.entries.values_mut() {
            entry.close_status = Some(status.clone());
        }
        let count = inner.entries.len();
        inner.generation.cancel();
        inner.generation = self.shutdown.child_token();
        count
    }

    /// Number of open streams per kind.
    pub(crate) fn counts(&self) -> HashMap<StreamKind, usize> {
        let mut counts = HashMap::new();
        for entry in self.lock().entries.values() {
            *counts.entry(entry.kind).or_insert(0) += 1;
        }
        counts
    }

    fn remove(&self, id: u64) {
        self.lock().entries.remove(&id);
    }
}

/// Registration of one open stream; removes itself on drop.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    pub(crate) id: u64,
    pub(crate) token: CancellationToken,
    registry: Arc<StreamRegistry>,
}

impl StreamGuard {
    /// The status the stream ends with after cancellation.
    pub(crate) fn close_status(&self) -> Status {
        self.registry.close_status(self.id)
    }

    /// Records the client id of this stream.
    pub(crate) fn set_client(&self, client_id: &str) {
        if !client_id.is_empty() {
            self.registry.set_client(self.id, client_id);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}
