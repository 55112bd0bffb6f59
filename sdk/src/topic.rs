//! Topics: dot-separated words naming where a message goes.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use crate::error::TopicError;

/// Longest topic or pattern accepted, in bytes (the AMQP routing-key limit).
pub const MAX_TOPIC_LEN: usize = 255;

/// A validated topic: one or more non-empty words separated by `.`, no wildcards.
///
/// Cloning is a reference-count increment, so a publisher that sends many
/// messages on one topic builds the `Topic` once and passes `&topic` (or a
/// clone) to every publish.
///
/// ```
/// use telamon_sdk::Topic;
/// let t = Topic::new("sensor.kitchen.temperature").unwrap();
/// assert_eq!(t.as_str(), "sensor.kitchen.temperature");
/// assert!(Topic::new("sensor.*").is_err());
/// assert!(Topic::new("a..b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `topic` and wraps it.
    pub fn new(topic: impl AsRef<str>) -> Result<Self, TopicError> {
        let topic = topic.as_ref();
        validate(topic, false)?;
        Ok(Topic(Arc::from(topic)))
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The words of the topic.
    pub fn words(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

/// Checks the shared rules of topics and patterns; with `wildcards`, `*` and `#`
/// are allowed as whole words.
pub(crate) fn validate(text: &str, wildcards: bool) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty);
    }
    if text.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            topic: text.chars().take(40).collect(),
            len: text.len(),
        });
    }
    for word in text.split('.') {
        if word.is_empty() {
            return Err(TopicError::EmptyWord {
                topic: text.to_owned(),
            });
        }
        let wild = word.contains(['*', '#']);
        if wild && !(wildcards && (word == "*" || word == "#")) {
            return Err(TopicError::Wildcard {
                topic: text.to_owned(),
                word: word.to_owned(),
            });
        }
    }
    Ok(())
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({:?})", &*self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Anything that names a topic: `&str`, `String`, `Topic` or `&Topic`.
///
/// Strings are validated on each call; a `Topic` was validated when it was made.
pub trait IntoTopic {
    /// Converts into a validated topic.
    fn into_topic(self) -> Result<Topic, TopicError>;
}

impl IntoTopic for Topic {
    fn into_topic(self) -> Result<Topic, TopicError> {
        Ok(self)
    }
}

impl IntoTopic for &Topic {
    fn into_topic(self) -> Result<Topic, TopicError> {
        Ok(self.clone())
    }
}

impl IntoTopic for &str {
    fn into_topic(self) -> Result<Topic, TopicError> {
        Topic::new(self)
    }
}

impl IntoTopic for String {
    fn into_topic(self) -> Result<Topic, TopicError> {
        validate(&self, false)?;
        Ok(Topic(Arc::from(self)))
    }
}

impl IntoTopic for &String {
    fn into_topic(self) -> Result<Topic, TopicError> {
        Topic::new(self)
    }
}
