//! Helpers every service and router uses: stream types, locking, message ids.

use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};

use futures_util::Stream;
use tokio::sync::mpsc;
use tonic::Status;

/// Boxed response stream of a streaming rpc.
pub(crate) type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Sending half of a response stream.
pub(crate) type Outbound<T> = mpsc::UnboundedSender<Result<T, Status>>;

/// Locks `mutex`, recovering from poisoning.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fresh message identifier for server-created messages.
pub(crate) fn next_message_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("axon-testkit-{n:016x}")
}
