//! The process-wide start barrier, stop signal and task tracking every context shares.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::instrument::Instruments;

/// Shared by the process and every module [`Context`](crate::Context).
///
/// 1. Modules are initialised; tasks they start with `Context::run` wait.
/// 2. [`mark_ready`](Lifecycle::mark_ready): every module is initialised; tasks start.
/// 3. [`request_stop`](Lifecycle::request_stop): someone (a signal, a module) asks the process to stop.
/// 4. [`cancel`](Lifecycle::cancel): tasks are cancelled at their next `.await`,
///    handlers stop taking requests and finish the ones in flight.
/// 5. The process waits for [`tracker`](Lifecycle::tracker) within its
///    deadline, then [`abort_all`](Lifecycle::abort_all)s what is left.
pub struct Lifecycle {
    ready: watch::Sender<bool>,
    stop_requested: CancellationToken,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    aborts: Mutex<Vec<AbortHandle>>,
    panics: AtomicU64,
    instruments: std::sync::Arc<Instruments>,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("ready", &*self.ready.borrow())
            .field("stop_requested", &self.stop_requested.is_cancelled())
            .field("cancelled", &self.shutdown.is_cancelled())
            .field("tasks", &self.tracker.len())
            .field("panics", &self.panics())
            .finish()
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A lifecycle before start.
    pub fn new() -> Self {
        Lifecycle {
            ready: watch::channel(false).0,
            stop_requested: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            aborts: Mutex::new(Vec::new()),
            panics: AtomicU64::new(0),
            instruments: std::sync::Arc::new(Instruments::default()),
        }
    }

    /// Every module is initialised: waiting tasks start.
    pub fn mark_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Waits until ready; `false` if the process stopped first.
    pub async fn wait_ready(&self) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            r = rx.wait_for(|ready| *ready) => r.is_ok(),
        }
    }

    /// Asks the process to stop (as Ctrl-C would).
    pub fn request_stop(&self) {
        self.stop_requested.cancel();
    }

    /// Resolves when a stop was requested.
    pub async fn stop_requested(&self) {
        self.stop_requested.cancelled().await
    }

    /// Cancels every task and tells handlers to drain.
    pub fn cancel(&self) {
        self.stop_requested.cancel();
        self.shutdown.cancel();
        self.tracker.close();
    }

    /// True once [`cancel`](Lifecycle::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// The token that fires on cancel.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Tracks every task modules started.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Remembers a task so [`abort_all`](Lifecycle::abort_all) can end it.
    pub fn remember(&self, handle: AbortHandle) {
        let mut aborts = self.aborts.lock().unwrap_or_else(|e| e.into_inner());
        aborts.retain(|h| !h.is_finished());
        aborts.push(handle);
    }

    /// Aborts every task still running; returns how many there were.
    pub fn abort_all(&self) -> usize {
        let mut aborts = self.aborts.lock().unwrap_or_else(|e| e.into_inner());
        let live = aborts.iter().filter(|h| !h.is_finished()).count();
        for h in aborts.drain(..) {
            h.abort();
        }
        live
    }

    /// Counts a panicked task.
    pub fn count_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// How many module tasks or handlers panicked.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// The gauges and counters modules registered (rendered on `/metrics`).
    pub fn instruments(&self) -> &std::sync::Arc<Instruments> {
        &self.instruments
    }
}
