//! Subscription queries (SEMANTICS §7.4): subscriber calls, live
//! subscriptions and their routing to and from handler streams.
//!
//! `subscribe` is forwarded to every handler stream registered for the query
//! name (outside the handler permits), and replayed to handlers that register
//! later. Handler updates are routed by subscription id; every message sent
//! to a subscriber consumes one of its call's permits, and a call that has no
//! permit left when a message must be delivered is failed (as SE does) and
//! its subscriptions are unsubscribed at the handlers. Withheld permits
//! (fault injection) do not apply to subscription queries.

use std::collections::BTreeMap;

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::query::query_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::query::subscription_query_request::Request as SubscriptionRequest;
use telamon_axon_proto::pb::query::subscription_query_response::Response as Update;
use telamon_axon_proto::pb::query::{
    QueryProviderInbound, SubscriptionQuery, SubscriptionQueryRequest, SubscriptionQueryResponse,
};
use tonic::{Code, Status};

use super::QueryRouter;
use crate::axon_status::axon_status;
use crate::support::Outbound;

/// One `QueryService.Subscription` call.
#[derive(Debug)]
pub(crate) struct SubscriberCall {
    tx: Outbound<SubscriptionQueryResponse>,
    permits: i64,
}

/// A subscription that is live on some call.
#[derive(Debug)]
pub(crate) struct LiveSubscription {
    call: u64,
    query: SubscriptionQuery,
}

/// Why a subscriber call must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SubscriptionError {
    /// No handler is registered for the query.
    #[error("no handler for query {0}")]
    NoHandler(String),
    /// The request carried no query.
    #[error("subscription query without a query request")]
    Malformed,
}

impl SubscriptionError {
    /// The status that ends the subscriber call.
    pub(crate) fn status(&self) -> Status {
        match self {
            // SE wraps an IllegalArgumentException("AXONIQ-5000") as OTHER.
            Self::NoHandler(_) => axon_status(
                Code::Cancelled,
                error_code::OTHER,
                error_code::NO_HANDLER_FOR_QUERY,
            ),
            Self::Malformed => Status::invalid_argument(self.to_string()),
        }
    }
}

fn to_handler(request: SubscriptionRequest) -> QueryProviderInbound {
    QueryProviderInbound {
        request: Some(ToHandler::SubscriptionQueryRequest(
            SubscriptionQueryRequest {
                request: Some(request),
            },
        )),
        instruction_id: String::new(),
    }
}

fn query_name(query: &SubscriptionQuery) -> Option<&str> {
    query.query_request.as_ref().map(|r| r.query.as_str())
}

impl QueryRouter {
    /// Registers a subscriber call.
    pub(crate) fn open_subscriber(&mut self, call: u64, tx: Outbound<SubscriptionQueryResponse>) {
        self.subscribers
            .insert(call, SubscriberCall { tx, permits: 0 });
    }

    /// Adds permits to a subscriber call.
    pub(crate) fn subscriber_permits(&mut self, call: u64, permits: i64) {
        if let Some(subscriber) = self.subscribers.get_mut(&call) {
            subscriber.permits = subscriber.permits.saturating_add(permits.max(0));
        }
    }

    fn handlers_of(&self, name: &str) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.subscriptions.contains_key(name))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn send_to_handlers(&self, handlers: &[u64], request: &SubscriptionRequest) {
        for id in handlers {
            if let Some(stream) = self.streams.get(id) {
                let _ = stream.tx.send(Ok(to_handler(request.clone())));
            }
        }
    }

    /// Starts a subscription and forwards it to every handler of the query.
    pub(crate) fn subscribe_query(
        &mut self,
        call: u64,
        query: SubscriptionQuery,
    ) -> Result<(), SubscriptionError> {
        let name = query_name(&query).ok_or(SubscriptionError::Malformed)?;
        let handlers = self.handlers_of(name);
        if handlers.is_empty() {
            return Err(SubscriptionError::NoHandler(name.to_owned()));
        }
        self.send_to_handlers(&handlers, &SubscriptionRequest::Subscribe(query.clone()));
        self.live.insert(
            query.subscription_identifier.clone(),
            LiveSubscription { call, query },
        );
        Ok(())
    }

    /// Asks one handler per component for the initial result (deprecated flow).
    pub(crate) fn initial_result(
        &mut self,
        query: SubscriptionQuery,
    ) -> Result<(), SubscriptionError> {
        let name = query_name(&query).ok_or(SubscriptionError::Malformed)?;
        let mut per_component: BTreeMap<&str, u64> = BTreeMap::new();
        for id in self.handlers_of(name) {
            if let Some(stream) = self.streams.get(&id) {
                per_component.entry(stream.component.as_str()).or_insert(id);
            }
        }
        if per_component.is_empty() {
            return Err(SubscriptionError::NoHandler(name.to_owned()));
        }
        let targets: Vec<u64> = per_component.into_values().collect();
        self.send_to_handlers(&targets, &SubscriptionRequest::GetInitialResult(query));
        Ok(())
    }

    /// Ends one subscription and tells the handlers.
    pub(crate) fn unsubscribe_query(&mut self, subscription_id: &str) {
        if let Some(live) = self.live.remove(subscription_id)
            && let Some(name) = query_name(&live.query)
        {
            let handlers = self.handlers_of(name);
            self.send_to_handlers(&handlers, &SubscriptionRequest::Unsubscribe(live.query));
        }
    }

    /// The subscriber call ended: unsubscribe everything it held.
    pub(crate) fn close_subscriber(&mut self, call: u64) {
        self.subscribers.remove(&call);
        let ids: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.call == call)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.unsubscribe_query(&id);
        }
    }

    /// Routes a handler's subscription response to its subscriber.
    pub(crate) fn subscription_response(
        &mut self,
        stream_id: u64,
        response: SubscriptionQueryResponse,
    ) {
        let id = response.subscription_identifier.clone();
        let Some(live) = self.live.get(&id) else {
            // Unknown subscription: tell that handler to stop (as SE does).
            if let Some(stream) = self.streams.get(&stream_id) {
                let _ = stream
                    .tx
                    .send(Ok(to_handler(SubscriptionRequest::Unsubscribe(
                        SubscriptionQuery {
                            subscription_identifier: id,
                            ..SubscriptionQuery::default()
                        },
                    ))));
            }
            return;
        };
        let call = live.call;
        let ends = matches!(
            response.response,
            Some(Update::Complete(_) | Update::CompleteExceptionally(_))
        );
        let delivered = match self.subscribers.get_mut(&call) {
            Some(subscriber) if subscriber.permits > 0 => {
                subscriber.permits -= 1;
                subscriber.tx.send(Ok(response)).is_ok()
            }
            Some(subscriber) => {
                let _ = subscriber.tx.send(Err(axon_status(
                    Code::Cancelled,
                    error_code::OTHER,
                    "Zero remaining permits",
                )));
                false
            }
            None => false,
        };
        if !delivered {
            self.close_subscriber(call);
        } else if ends {
            self.unsubscribe_query(&id);
        }
    }

    /// Sends every live subscription of `name` to a handler that just registered it.
    pub(crate) fn replay_subscriptions(&self, stream_id: u64, name: &str) {
        let Some(stream) = self.streams.get(&stream_id) else {
            return;
        };
        for live in self.live.values() {
            if query_name(&live.query) == Some(name) {
                let _ = stream.tx.send(Ok(to_handler(SubscriptionRequest::Subscribe(
                    live.query.clone(),
                ))));
            }
        }
    }

    /// Number of live subscription queries.
    pub(crate) fn live_subscriptions(&self) -> usize {
        self.live.len()
    }
}
