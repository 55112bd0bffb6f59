//! One message as a subscriber receives it.

use std::sync::Arc;

use crate::headers::Headers;
use crate::topic::Topic;

/// A message, the topic it was published on, and its headers.
///
/// On the in-process bus every subscriber's `Delivery` points at the same
/// `Arc<M>`: nothing is serialised or cloned per subscriber.
#[derive(Debug)]
pub struct Delivery<M> {
    topic: Topic,
    message: Arc<M>,
    id: Option<Arc<str>>,
    headers: Headers,
}

impl<M> Clone for Delivery<M> {
    fn clone(&self) -> Self {
        Delivery {
            topic: self.topic.clone(),
            message: self.message.clone(),
            id: self.id.clone(),
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
            id: None,
            headers: Headers::new(),
        }
    }

    /// Adds the headers the message was published with.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// The headers the message was published with.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Adds the message id a bus carried (e.g. the AMQP `message-id`).
    pub fn with_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The id the publishing bus gave the message, where it has one (RabbitMQ:
    /// the same for a redelivered duplicate, so consumers can de-duplicate).
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
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
