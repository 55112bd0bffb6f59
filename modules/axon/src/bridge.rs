//! The running bridge: what every mapping shares (the context, settings,
//! payload codec, connection, retry policy and circuit breaker) and the one
//! way outbound calls are made.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use telamon_axon_proto::pb::SerializedObject;
use telamon_sdk::{Context, Counter, Headers, Message, Topic};

use crate::config::Settings;
use crate::connection::{Connection, Link};
use crate::error::BridgeError;
use crate::metadata::PAYLOAD_TYPE;
use crate::payload::PayloadCodec;
use crate::resilience::{CircuitBreaker, RetryPolicy};
use crate::subscription_queries::{HandledSubscriptions, OpenedSubscriptions};
use crate::template::{Template, Vars};
use tokio_util::sync::CancellationToken;

/// Metric name prefix.
pub(crate) const METRIC: &str = "telamon_axon";

/// Everything one bridge instance's tasks share.
pub(crate) struct Bridge<M> {
    pub(crate) ctx: Context<M>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) codec: PayloadCodec<M>,
    pub(crate) conn: Arc<Connection>,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) handled_subscriptions: HandledSubscriptions,
    pub(crate) opened_subscriptions: OpenedSubscriptions,
    /// Fired at stop: take no new work, finish what is in hand. The
    /// connection closes (`conn.stop`) only after that.
    pub(crate) drain: CancellationToken,
}

impl<M> std::fmt::Debug for Bridge<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("client_id", &self.settings.client_id)
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl<M: Message> Bridge<M> {
    /// A counter of this bridge, named `telamon_axon_<name>`.
    pub(crate) fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        self.ctx.counter(&format!("{METRIC}_{name}"), help, labels)
    }

    /// Refuses a message larger than `max-message-size` before it is sent.
    pub(crate) fn check_size(&self, message: &impl prost::Message) -> Result<(), BridgeError> {
        let size = message.encoded_len();
        let limit = self.settings.raw.max_message_size;
        if size > limit {
            return Err(BridgeError::TooLarge { size, limit });
        }
        Ok(())
    }

    /// The `ErrorMessage` of an in-band error this bridge answers with.
    pub(crate) fn error_message(
        &self,
        code: &str,
        message: String,
        details: Vec<String>,
    ) -> telamon_axon_proto::pb::ErrorMessage {
        telamon_axon_proto::pb::ErrorMessage {
            message,
            location: self.settings.client_id.clone(),
            details,
            error_code: code.to_owned(),
        }
    }

    /// Makes an outbound call: waits for a link, goes through the circuit
    /// breaker, retries what the policy calls transient, all within
    /// `deadline`. `op` returns in-band errors as `Err` too, so they can be
    /// retried (AXONIQ-4000 while handlers re-register).
    pub(crate) async fn call<T, F, Fut>(
        &self,
        call: &'static str,
        deadline: Duration,
        op: F,
    ) -> Result<T, BridgeError>
    where
        F: FnMut(Link) -> Fut,
        Fut: Future<Output = Result<T, BridgeError>>,
    {
        self.call_with(call, deadline, true, op).await
    }

    /// [`call`](Self::call) without retries, for calls that must not be
    /// made twice (an append whose commit may have happened).
    pub(crate) async fn call_once<T, F, Fut>(
        &self,
        call: &'static str,
        deadline: Duration,
        op: F,
    ) -> Result<T, BridgeError>
    where
        F: FnMut(Link) -> Fut,
        Fut: Future<Output = Result<T, BridgeError>>,
    {
        self.call_with(call, deadline, false, op).await
    }

    async fn call_with<T, F, Fut>(
        &self,
        call: &'static str,
        deadline: Duration,
        retry: bool,
        mut op: F,
    ) -> Result<T, BridgeError>
    where
        F: FnMut(Link) -> Fut,
        Fut: Future<Output = Result<T, BridgeError>>,
    {
        let until = Instant::now() + deadline;
        // One call is one outcome for the breaker, however many tries it
        // took: a burst of calls cut by one lost connection, all of which
        // succeed on the next, does not open it.
        let permit = match self.breaker.acquire() {
            Ok(p) => p,
            Err(e) => {
                self.failed(call, &e);
                return Err(e);
            }
        };
        let mut attempt = 1;
        let outcome = loop {
            let left = until.saturating_duration_since(Instant::now());
            let outcome = async {
                let link = self.conn.current(left).await?;
                let left = until.saturating_duration_since(Instant::now());
                tokio::time::timeout(left, op(link))
                    .await
                    .map_err(|_| BridgeError::Timeout(deadline))?
            }
            .await;
            match outcome {
                Ok(v) => break Ok(v),
                Err(e) => match self.retry.next(attempt, &e).filter(|_| retry) {
                    Some(delay)
                        if Instant::now() + delay < until && !self.conn.stop.is_cancelled() =>
                    {
                        tracing::debug!(call, attempt, error = %e, ?delay, "retrying AxonServer call");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                    }
                    _ => break Err(e),
                },
            }
        };
        self.breaker.record(permit, outcome.as_ref().map(|_| ()));
        if let Err(e) = &outcome {
            self.failed(call, e);
        }
        outcome
    }

    /// The payload for a bus message, and its content as JSON when a
    /// selector needs to look inside (`with_content`). The type is the
    /// message's `axon-payload-type` header, else `type_template` rendered
    /// from the topic, else the variant's name or the default type.
    pub(crate) fn payload(
        &self,
        topic: &Topic,
        message: &M,
        headers: &Headers,
        type_template: Option<&Template>,
        with_content: bool,
    ) -> Result<(SerializedObject, Option<Value>), BridgeError> {
        let explicit = match headers.get(PAYLOAD_TYPE) {
            Some(t) => Some(t.to_owned()),
            None => type_template
                .map(|t| {
                    t.render(Vars {
                        topic: Some(topic),
                        named: &[],
                    })
                })
                .transpose()?,
        };
        if with_content {
            let content = self.codec.content(message)?;
            let data = self.codec.encode_value(&content.value)?;
            Ok((
                self.codec.serialized(content.variant, explicit, data),
                Some(content.value),
            ))
        } else {
            let (variant, data) = self.codec.encode(message)?;
            Ok((self.codec.serialized(variant, explicit, data), None))
        }
    }

    fn failed(&self, call: &'static str, error: &BridgeError) {
        if error.is_transport() || matches!(error, BridgeError::CircuitOpen(_)) {
            self.counter(
                "call_failures_total",
                "Outbound AxonServer calls that failed for lack of a working connection (transport, timeout, open circuit).",
                &[("call", call)],
            )
            .inc();
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
