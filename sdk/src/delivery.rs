//! One message as a subscriber receives it.

use std::sync::Arc;

use crate::headers::Headers;
use crate::topic::Topic;

/// A message, the topic it was published on, and its headers.
///
/// On the in-process bus every subscriber's `Delivery` points at the same
/// `Arc<M>`: nothing is serialised or cloned per subscriber. A delivery with
/// no id and no headers is four words (topic, message, one optional `Arc`
/// for both).
#[derive(Debug)]
pub struct Delivery<M> {
    topic: Topic,
    message: Arc<M>,
    extras: Option<Arc<Extras>>,
}

/// What only some deliveries carry.
#[derive(Debug, Default, Clone)]
struct Extras {
    id: Option<Box<str>>,
    headers: Headers,
}

/// The headers of a delivery that has none.
static NO_HEADERS: Headers = Headers::new();

impl<M> Clone for Delivery<M> {
    fn clone(&self) -> Self {
        Delivery {
            topic: self.topic.clone(),
            message: self.message.clone(),
            extras: self.extras.clone(),
        }
    }
}

impl<M> Delivery<M> {
    /// Pairs a topic with a message (for bus implementations).
    pub fn new(topic: Topic, message: Arc<M>) -> Self {
        Delivery {
            topic,
            message,
            extras: None,
        }
    }

    fn extras_mut(&mut self) -> &mut Extras {
        Arc::make_mut(self.extras.get_or_insert_with(Default::default))
    }

    /// Adds the headers the message was published with (none: nothing is allocated).
    pub fn with_headers(mut self, headers: Headers) -> Self {
        if !headers.is_empty() || self.extras.is_some() {
            self.extras_mut().headers = headers;
        }
        self
    }

    /// The headers the message was published with.
    pub fn headers(&self) -> &Headers {
        self.extras.as_ref().map_or(&NO_HEADERS, |e| &e.headers)
    }

    /// Adds the message id a bus carried (e.g. the AMQP `message-id`).
    pub fn with_id(mut self, id: impl Into<Box<str>>) -> Self {
        self.extras_mut().id = Some(id.into());
        self
    }

    /// The id the publishing bus gave the message, where it has one (RabbitMQ:
    /// the same for a redelivered duplicate, so consumers can de-duplicate).
    pub fn id(&self) -> Option<&str> {
        self.extras.as_ref().and_then(|e| e.id.as_deref())
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
    fn a_plain_delivery_is_four_words_and_extras_are_kept() {
        assert_eq!(
            std::mem::size_of::<Delivery<u64>>(),
            4 * std::mem::size_of::<usize>()
        );
        let t = Topic::new("a.b").unwrap();
        let plain = Delivery::new(t.clone(), Arc::new(1u64)).with_headers(Headers::new());
        assert!(plain.extras.is_none() && plain.headers().is_empty() && plain.id().is_none());
        let rich = Delivery::new(t, Arc::new(2u64))
            .with_id("m-1")
            .with_headers(Headers::new().with("k", "v"));
        assert_eq!(
            (rich.id(), rich.headers().get("k")),
            (Some("m-1"), Some("v"))
        );
    }
}
