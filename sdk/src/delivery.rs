//! One message as a subscriber receives it.

use std::sync::Arc;

use crate::headers::Headers;
use crate::topic::Topic;

/// A message, the topic it was published on, and its headers.
///
/// On the in-process bus every subscriber's `Delivery` points at the same
/// `Arc<M>` and the same headers: nothing is serialised, cloned or allocated
/// per subscriber. A delivery is five words (topic, message, headers — two:
/// which set of a [`HeaderBlock`](crate::HeaderBlock) they are); the id a
/// bus gives it travels inside the headers' allocation.
pub struct Delivery<M> {
    topic: Topic,
    message: Arc<M>,
    headers: Headers,
}

impl<M: std::fmt::Debug> std::fmt::Debug for Delivery<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("topic", &self.topic)
            .field("message", &self.message)
            .field("id", &self.id())
            .field("headers", &self.headers)
            .finish()
    }
}

impl<M> Clone for Delivery<M> {
    fn clone(&self) -> Self {
        Delivery {
            topic: self.topic.clone(),
            message: self.message.clone(),
            headers: self.headers.clone(),
        }
    }
}

impl<M> Delivery<M> {
    /// Pairs a topic with a message (for bus implementations).
    pub fn new(topic: Topic, message: Arc<M>) -> Self {
        Delivery {
            topic,
            message,
            headers: Headers::new(),
        }
    }

    /// Adds the headers the message was published with (shared, not copied;
    /// an id they carried from an earlier delivery is not this one's).
    pub fn with_headers(mut self, mut headers: Headers) -> Self {
        let id = self.headers.delivery_id().map(Box::from);
        headers.set_delivery_id(id);
        self.headers = headers;
        self
    }

    /// The headers the message was published with.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Adds the message id a bus carried (e.g. the AMQP `message-id`).
    pub fn with_id(mut self, id: impl Into<Box<str>>) -> Self {
        self.headers.set_delivery_id(Some(id.into()));
        self
    }

    /// The id the publishing bus gave the message, where it has one (RabbitMQ:
    /// the same for a redelivered duplicate, so consumers can de-duplicate).
    pub fn id(&self) -> Option<&str> {
        self.headers.delivery_id()
    }

    /// The topic the message was published on.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The shared message.
    pub fn message(&self) -> &Arc<M> {
        &self.message
    }

    /// Splits into topic and message.
    pub fn into_parts(self) -> (Topic, Arc<M>) {
        (self.topic, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_five_words_and_keeps_its_id_apart_from_its_headers() {
        assert_eq!(
            std::mem::size_of::<Delivery<u64>>(),
            5 * std::mem::size_of::<usize>()
        );
        let t = Topic::new("a.b").unwrap();
        let plain = Delivery::new(t.clone(), Arc::new(1u64)).with_headers(Headers::new());
        assert!(plain.headers().is_empty() && plain.id().is_none());
        let rich = Delivery::new(t, Arc::new(2u64))
            .with_id("m-1")
            .with_headers(Headers::new().with("k", "v"));
        assert_eq!(
            (rich.id(), rich.headers().get("k")),
            (Some("m-1"), Some("v"))
        );
        // The id is not a header: not listed, compared or shown.
        assert_eq!(rich.headers(), &Headers::new().with("k", "v"));
        assert_eq!(rich.headers().len(), 1);
        assert!(!format!("{:?}", rich.headers()).contains("m-1"));
        // Headers taken from a delivery and published again do not bring its id.
        let again = Delivery::new(rich.topic().clone(), Arc::new(3u64))
            .with_headers(rich.headers().clone());
        assert_eq!((again.id(), again.headers().get("k")), (None, Some("v")));
        assert_eq!(rich.id(), Some("m-1"));
        // An id set before headers is kept.
        let both = Delivery::new(rich.topic().clone(), Arc::new(4u64))
            .with_id("m-2")
            .with_headers(rich.headers().clone());
        assert_eq!(
            (both.id(), both.headers().get("k")),
            (Some("m-2"), Some("v"))
        );
    }

    #[test]
    fn an_id_given_to_a_delivery_of_a_block_set_stays_with_that_delivery() {
        let mut block = crate::HeaderBlock::new();
        block.push([("k", "1")]);
        block.push([("k", "2")]);
        let sets: Vec<Headers> = block.finish().collect();
        let t = Topic::new("a.b").unwrap();
        let one = Delivery::new(t.clone(), Arc::new(1u64))
            .with_id("m-1")
            .with_headers(sets[0].clone());
        assert_eq!((one.id(), one.headers().get("k")), (Some("m-1"), Some("1")));
        let two = Delivery::new(t, Arc::new(2u64)).with_headers(sets[1].clone());
        assert_eq!((two.id(), two.headers().get("k")), (None, Some("2")));
        assert_eq!((sets[0].delivery_id(), sets[0].get("k")), (None, Some("1")));
    }
}
