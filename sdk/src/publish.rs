//! The future of a publish.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::bus::BoxFuture;
use crate::error::PublishError;

/// The future of a publish.
///
/// Finished at once when every subscriber queue took the message (the common
/// case, with no allocation); pending when it must wait (a full queue under the
/// `Wait` policy, a broker confirm).
#[must_use = "a publish does nothing unless awaited"]
pub struct Publish<'a>(State<'a>);

enum State<'a> {
    Ready(Result<(), PublishError>),
    Pending(BoxFuture<'a, Result<(), PublishError>>),
    Done,
}

impl fmt::Debug for Publish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            State::Ready(_) => "Publish::Ready",
            State::Pending(_) => "Publish::Pending",
            State::Done => "Publish::Done",
        })
    }
}

impl<'a> Publish<'a> {
    /// A publish that already finished.
    pub fn ready(result: Result<(), PublishError>) -> Self {
        Publish(State::Ready(result))
    }

    /// A publish that still has to wait.
    pub fn pending(fut: impl Future<Output = Result<(), PublishError>> + Send + 'a) -> Self {
        Publish(State::Pending(Box::pin(fut)))
    }
}

impl Future for Publish<'_> {
    type Output = Result<(), PublishError>;

    /// Polled again after it finished, it stays pending (it never panics).
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match std::mem::replace(&mut this.0, State::Done) {
            State::Ready(r) => Poll::Ready(r),
            State::Pending(mut f) => match f.as_mut().poll(cx) {
                Poll::Ready(r) => Poll::Ready(r),
                Poll::Pending => {
                    this.0 = State::Pending(f);
                    Poll::Pending
                }
            },
            State::Done => Poll::Pending,
        }
    }
}
