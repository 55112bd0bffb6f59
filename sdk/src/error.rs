//! Typed errors of the module-facing API.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::headers::Headers;

use serde::{Deserialize, Serialize};

/// A topic or pattern that breaks the naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The text is empty.
    #[error("topic is empty")]
    Empty,
    /// Two dots in a row, or a dot at either end.
    #[error("topic `{topic}` has an empty word")]
    EmptyWord {
        /// The offending text.
        topic: String,
    },
    /// A `*` or `#` in a topic, or inside a word of a pattern.
    #[error(
        "`{topic}`: wildcard `{word}` is not allowed here (topics take no wildcards; patterns take `*` and `#` as whole words)"
    )]
    Wildcard {
        /// The offending text.
        topic: String,
        /// The offending word.
        word: String,
    },
    /// Longer than [`MAX_TOPIC_LEN`](crate::MAX_TOPIC_LEN).
    #[error("topic `{topic}…` is {len} bytes long, more than 255")]
    TooLong {
        /// The start of the offending text.
        topic: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// Why a publish failed. A publish never fails silently: no route, a closed bus
/// or a broker that is gone all come back here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic is not valid.
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    /// No `[[message-router.route]]` pattern matches the topic.
    #[error("no route matches topic `{topic}`")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// The bus was shut down.
    #[error("bus `{bus}` is closed")]
    Closed {
        /// The bus id.
        bus: String,
    },
    /// The bus could not take the message (broker gone, message too large …).
    #[error("bus `{bus}` could not publish on `{topic}`: {reason}")]
    Bus {
        /// The bus id.
        bus: String,
        /// The topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
}

impl PublishError {
    /// True for [`PublishError::NoRoute`]: no route matches the topic.
    pub fn is_no_route(&self) -> bool {
        matches!(self, PublishError::NoRoute { .. })
    }

    /// True for [`PublishError::Closed`]: the process is stopping.
    pub fn is_closed(&self) -> bool {
        matches!(self, PublishError::Closed { .. })
    }

    /// True for [`PublishError::Bus`]: the bus could not take the message
    /// (broker gone, message too large …); the reason says which.
    pub fn is_bus(&self) -> bool {
        matches!(self, PublishError::Bus { .. })
    }
}

/// Why a [`publish_batch`](crate::Context::publish_batch) stopped: the
/// messages before the one that failed are published (and delivered as a
/// publish of each would have been); that one and the rest are not, and come
/// back with the error ([`into_unpublished`](Self::into_unpublished)) to be
/// published again without a gap.
#[derive(thiserror::Error)]
#[error("{published} message(s) of the batch published, {} not: {source}", unpublished.len())]
pub struct BatchPublishError<M> {
    published: usize,
    unpublished: Vec<(Arc<M>, Headers)>,
    source: PublishError,
}

impl<M> BatchPublishError<M> {
    /// `published` messages went out before `source` stopped `unpublished`.
    pub fn new(
        published: usize,
        unpublished: Vec<(Arc<M>, Headers)>,
        source: PublishError,
    ) -> Self {
        BatchPublishError {
            published,
            unpublished,
            source,
        }
    }

    /// `batch` stopped by `source` at its message `published` (the ones
    /// before it went out): that one and the rest come back.
    pub fn stopped_at(
        published: usize,
        mut batch: Vec<(Arc<M>, Headers)>,
        source: PublishError,
    ) -> Self {
        batch.drain(..published.min(batch.len()));
        BatchPublishError::new(published, batch, source)
    }

    /// How many messages, from the first, were published.
    pub fn published(&self) -> usize {
        self.published
    }

    /// Why the next one was not.
    pub fn error(&self) -> &PublishError {
        &self.source
    }

    /// True when the bus is closed (the process is stopping).
    pub fn is_closed(&self) -> bool {
        self.source.is_closed()
    }

    /// The messages not published, in order, with their headers.
    pub fn into_unpublished(self) -> Vec<(Arc<M>, Headers)> {
        self.unpublished
    }
}

/// The messages are counted, not shown (they need not be `Debug`).
impl<M> fmt::Debug for BatchPublishError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchPublishError")
            .field("published", &self.published)
            .field("unpublished", &self.unpublished.len())
            .field("source", &self.source)
            .finish()
    }
}

/// Why a subscription or a handler registration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The pattern is not valid.
    #[error(transparent)]
    InvalidPattern(#[from] TopicError),
    /// No route can carry a topic that matches the pattern.
    #[error("no route can carry topics matching `{pattern}`")]
    NoRoute {
        /// The pattern.
        pattern: String,
    },
    /// The bus was shut down.
    #[error("bus `{bus}` is closed")]
    Closed {
        /// The bus id.
        bus: String,
    },
    /// The bus refused (broker gone …).
    #[error("bus `{bus}` could not subscribe to `{pattern}`: {reason}")]
    Bus {
        /// The bus id.
        bus: String,
        /// The pattern.
        pattern: String,
        /// What went wrong.
        reason: String,
    },
}

impl SubscribeError {
    /// True for [`SubscribeError::NoRoute`]: no route can carry the pattern.
    pub fn is_no_route(&self) -> bool {
        matches!(self, SubscribeError::NoRoute { .. })
    }

    /// True for [`SubscribeError::Closed`]: the process is stopping.
    pub fn is_closed(&self) -> bool {
        matches!(self, SubscribeError::Closed { .. })
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The topic is not valid.
    #[error(transparent)]
    InvalidTopic(#[from] TopicError),
    /// No route matches the topic (fails at once).
    #[error("no route matches request topic `{topic}`")]
    NoRoute {
        /// The topic.
        topic: String,
    },
    /// No handler is registered for the topic on any bus of its route (fails at once).
    #[error("no responder for request topic `{topic}`")]
    NoResponder {
        /// The topic.
        topic: String,
    },
    /// No response within the timeout.
    #[error("request on `{topic}` timed out after {after:?}")]
    TimedOut {
        /// The topic.
        topic: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// The handler returned an error.
    #[error("handler for `{topic}` failed: {error}")]
    Handler {
        /// The topic.
        topic: String,
        /// The handler's error.
        error: HandlerError,
    },
    /// The handler went away (its module stopped) without answering.
    #[error("handler for `{topic}` went away without answering")]
    Dropped {
        /// The topic.
        topic: String,
    },
    /// The bus was shut down.
    #[error("bus `{bus}` is closed")]
    Closed {
        /// The bus id.
        bus: String,
    },
    /// The bus failed to carry the request or its response.
    #[error("bus `{bus}` failed on request `{topic}`: {reason}")]
    Bus {
        /// The bus id.
        bus: String,
        /// The topic.
        topic: String,
        /// What went wrong.
        reason: String,
    },
}

impl RequestError {
    /// True for [`RequestError::TimedOut`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RequestError::TimedOut { .. })
    }

    /// True for [`RequestError::NoResponder`] and [`RequestError::NoRoute`]: nobody could take it.
    pub fn is_no_responder(&self) -> bool {
        matches!(
            self,
            RequestError::NoResponder { .. } | RequestError::NoRoute { .. }
        )
    }

    /// True for [`RequestError::Dropped`]: the handler went away without answering.
    pub fn is_dropped(&self) -> bool {
        matches!(self, RequestError::Dropped { .. })
    }

    /// True for [`RequestError::Closed`]: the process is stopping.
    pub fn is_closed(&self) -> bool {
        matches!(self, RequestError::Closed { .. })
    }

    /// True for [`RequestError::Bus`]: the bus failed to carry it.
    pub fn is_bus(&self) -> bool {
        matches!(self, RequestError::Bus { .. })
    }

    /// The handler's error, if the handler failed.
    pub fn handler_error(&self) -> Option<&HandlerError> {
        match self {
            RequestError::Handler { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// An error a request handler returns; it travels back to the requester, also
/// across processes, so it is plain data: a message and an optional code.
///
/// Any `std::error::Error` converts into it, so handlers can use `?`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerError {
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
}

impl HandlerError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            code: None,
        }
    }

    /// Adds a machine-readable code (e.g. `"division-by-zero"`).
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code, if one was set.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "[{code}] {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandlerError({self})")
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::new(error_chain(&e))
    }
}

/// An error from a module's constructor or `init`; startup stops and names the module.
///
/// Any `std::error::Error` converts into it, so `init` can use `?`.
pub struct ModuleError {
    message: String,
}

impl ModuleError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        ModuleError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for ModuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleError({:?})", self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for ModuleError {
    fn from(e: E) -> Self {
        ModuleError::new(error_chain(&e))
    }
}

/// `outer: inner: innermost`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
