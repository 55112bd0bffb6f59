//! The router: sends each topic to the buses of the first route that matches it.
//!
//! - **Publish**: first matching route wins (config order); the message goes to
//!   every bus of that route. No route: `PublishError::NoRoute`, or a counted,
//!   logged drop under `unrouted = "drop"`. Never a silent `Ok`.
//! - **Subscribe / handle**: the subscription listens on every bus of every
//!   route that can carry a topic matching its pattern (pattern overlap, not
//!   literal comparison), all through one queue. A pattern no route can carry
//!   is an error.
//! - **Request**: first matching route; its buses are asked in order, and the
//!   first that has a handler takes it. No route or no handler fails at once.
//!
//! A topic routed to two buses reaches a subscriber listening on both twice;
//! that is what routing to two buses means.

use std::sync::Arc;
use std::time::{Duration, Instant};

use telamon_sdk::bus::{BoxFuture, MessageBus, PatternIndex, Publish, queue, request_queue};
use telamon_sdk::{
    BatchPublishError, HandleOptions, Headers, Pattern, PublishError, RequestError, RequestQueue,
    SubscribeError, SubscribeOptions, Subscription, Topic,
};

use crate::bus::Bus;
use crate::metrics::Metrics;
use crate::process_config::Unrouted;

/// A route as given to [`Router::new`]: a pattern and the buses it sends to.
pub type RouteBuses<M> = (Pattern, Vec<Arc<dyn Bus<M>>>);

struct Route<M> {
    pattern: Pattern,
    buses: Vec<Arc<dyn Bus<M>>>,
}

/// Routes topics to buses; what every module [`Context`](telamon_sdk::Context) talks to.
pub struct Router<M> {
    routes: Vec<Route<M>>,
    /// Route positions by pattern: the first route is the smallest position.
    index: PatternIndex<usize>,
    request_timeout: Duration,
    unrouted: Unrouted,
    metrics: Arc<Metrics>,
}

impl<M: 'static> std::fmt::Debug for Router<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let routes: Vec<(String, Vec<&str>)> = self
            .routes
            .iter()
            .map(|r| {
                (
                    r.pattern.to_string(),
                    r.buses.iter().map(|b| b.id()).collect(),
                )
            })
            .collect();
        f.debug_struct("Router")
            .field("routes", &routes)
            .field("request_timeout", &self.request_timeout)
            .field("unrouted", &self.unrouted)
            .finish()
    }
}

impl<M: Send + Sync + 'static> Router<M> {
    /// A router over `routes` (pattern → buses, first match wins).
    pub fn new(
        routes: Vec<RouteBuses<M>>,
        request_timeout: Duration,
        unrouted: Unrouted,
        metrics: Arc<Metrics>,
    ) -> Self {
        let routes: Vec<Route<M>> = routes
            .into_iter()
            .map(|(pattern, buses)| Route { pattern, buses })
            .collect();
        let mut index = PatternIndex::new();
        for (at, r) in routes.iter().enumerate() {
            index.insert(at as u64, &r.pattern, at);
        }
        Router {
            routes,
            index,
            request_timeout,
            unrouted,
            metrics,
        }
    }

    fn route_for(&self, topic: &Topic) -> Option<&Route<M>> {
        self.index
            .first_match(topic.as_str(), |_| true)
            .map(|at| &self.routes[*at])
    }

    /// Every bus that can carry a topic matching `pattern`, each once, in route order.
    fn buses_for(&self, pattern: &Pattern) -> Vec<Arc<dyn Bus<M>>> {
        let mut out: Vec<Arc<dyn Bus<M>>> = Vec::new();
        for (_, at) in self.index.overlapping(pattern) {
            for bus in &self.routes[*at].buses {
                if !out.iter().any(|b| Arc::ptr_eq(b, bus)) {
                    out.push(bus.clone());
                }
            }
        }
        out
    }
}

impl<M: Send + Sync + 'static> MessageBus<M> for Router<M> {
    fn publish(&self, topic: Topic, message: Arc<M>, headers: Headers) -> Publish<'_> {
        let Some(route) = self.route_for(&topic) else {
            self.metrics.unrouted(&topic);
            return match self.unrouted {
                Unrouted::Error => Publish::ready(Err(PublishError::NoRoute {
                    topic: topic.to_string(),
                })),
                Unrouted::Drop => {
                    tracing::warn!(topic = %topic, "no route matches; message dropped (unrouted = \"drop\")");
                    Publish::ready(Ok(()))
                }
            };
        };
        self.metrics.published(&topic);
        if let [bus] = route.buses.as_slice() {
            return bus.publish(topic, message, headers);
        }
        let publishes: Vec<Publish<'_>> = route
            .buses
            .iter()
            .map(|b| b.publish(topic.clone(), message.clone(), headers.clone()))
            .collect();
        Publish::pending(async move {
            let mut first_error = None;
            for p in publishes {
                if let Err(e) = p.await {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }

    fn publish_batch(
        &self,
        topic: Topic,
        batch: Vec<(Arc<M>, Headers)>,
    ) -> BoxFuture<'_, Result<(), BatchPublishError<M>>> {
        let Some(route) = self.route_for(&topic) else {
            for _ in &batch {
                self.metrics.unrouted(&topic);
            }
            let result = match self.unrouted {
                Unrouted::Error => Err(BatchPublishError::new(
                    0,
                    batch,
                    PublishError::NoRoute {
                        topic: topic.to_string(),
                    },
                )),
                Unrouted::Drop => {
                    tracing::warn!(topic = %topic, messages = batch.len(), "no route matches; messages dropped (unrouted = \"drop\")");
                    Ok(())
                }
            };
            return Box::pin(std::future::ready(result));
        };
        self.metrics.published_many(&topic, batch.len() as u64);
        if let [bus] = route.buses.as_slice() {
            return bus.publish_batch(topic, batch);
        }
        // Several buses: each message to each, as `publish` does.
        Box::pin(async move {
            for (published, (message, headers)) in batch.iter().enumerate() {
                let mut first_error = None;
                for bus in &route.buses {
                    let p = bus.publish(topic.clone(), message.clone(), headers.clone());
                    if let Err(e) = p.await {
                        first_error.get_or_insert(e);
                    }
                }
                if let Some(e) = first_error {
                    // This one reached the buses that took it; like a
                    // failed `publish`, it counts as not published.
                    return Err(BatchPublishError::stopped_at(published, batch, e));
                }
            }
            Ok(())
        })
    }

    fn subscribe(
        &self,
        pattern: Pattern,
        options: SubscribeOptions,
    ) -> BoxFuture<'_, Result<Subscription<M>, SubscribeError>> {
        Box::pin(async move {
            let buses = self.buses_for(&pattern);
            let Some(first) = buses.first() else {
                return Err(SubscribeError::NoRoute {
                    pattern: pattern.to_string(),
                });
            };
            let defaults = first.defaults();
            let (sender, mut subscription) = queue(
                pattern.clone(),
                options.capacity_or(defaults.capacity),
                options.policy_or(defaults.policy),
            );
            self.metrics.track_subscription(&pattern, sender.counters());
            for bus in &buses {
                let guard = bus.subscribe(pattern.clone(), sender.clone()).await?;
                subscription.attach(guard);
            }
            Ok(subscription)
        })
    }

    fn handle(
        &self,
        pattern: Pattern,
        options: HandleOptions,
    ) -> BoxFuture<'_, Result<RequestQueue<M>, SubscribeError>> {
        Box::pin(async move {
            let buses = self.buses_for(&pattern);
            let Some(first) = buses.first() else {
                return Err(SubscribeError::NoRoute {
                    pattern: pattern.to_string(),
                });
            };
            let capacity = options.capacity_or(first.defaults().request_capacity);
            let (sender, mut queue) = request_queue(pattern.clone(), capacity);
            for bus in &buses {
                let guard = bus.handle(pattern.clone(), sender.clone()).await?;
                queue.attach(guard);
            }
            Ok(queue)
        })
    }

    fn request(
        &self,
        topic: Topic,
        message: Arc<M>,
        headers: Headers,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Arc<M>, RequestError>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = match self.route_for(&topic) {
                None => Err(RequestError::NoRoute {
                    topic: topic.to_string(),
                }),
                Some(route) => {
                    let mut result = Err(RequestError::NoResponder {
                        topic: topic.to_string(),
                    });
                    for bus in &route.buses {
                        let left = timeout.saturating_sub(started.elapsed());
                        let asked =
                            bus.request(topic.clone(), message.clone(), headers.clone(), left);
                        result = match asked.await {
                            Err(RequestError::TimedOut { topic, .. }) => {
                                Err(RequestError::TimedOut {
                                    topic,
                                    after: timeout,
                                })
                            }
                            other => other,
                        };
                        if !matches!(result, Err(RequestError::NoResponder { .. })) {
                            break;
                        }
                    }
                    result
                }
            };
            self.metrics.request(&topic, started.elapsed(), &result);
            result
        })
    }

    fn default_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(async move {
            let mut seen: Vec<&Arc<dyn Bus<M>>> = Vec::new();
            for bus in self.routes.iter().flat_map(|r| r.buses.iter()) {
                if !seen.iter().any(|b| Arc::ptr_eq(b, bus)) {
                    seen.push(bus);
                    bus.flush().await?;
                }
            }
            Ok(())
        })
    }
}
