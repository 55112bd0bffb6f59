//! Runs a clean-up action when a subscription or handler goes away.

use std::fmt;

/// Runs its action once, when dropped.
///
/// Buses hand one back for every subscription and handler they register; the
/// [`Subscription`](crate::Subscription) or [`RequestQueue`](crate::RequestQueue)
/// holds it, so dropping those removes the registration from the bus at once.
pub struct DropGuard(Option<Box<dyn FnOnce() + Send + Sync>>);

impl DropGuard {
    /// A guard that runs `action` when dropped.
    pub fn new(action: impl FnOnce() + Send + Sync + 'static) -> Self {
        DropGuard(Some(Box::new(action)))
    }

    /// A guard with nothing to do.
    pub fn noop() -> Self {
        DropGuard(None)
    }
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if let Some(action) = self.0.take() {
            action();
        }
    }
}

impl fmt::Debug for DropGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DropGuard")
    }
}
