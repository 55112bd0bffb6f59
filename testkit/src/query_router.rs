//! Query routing state: handler streams, registrations, permits, queues and
//! the queries in progress (SEMANTICS §7.1–§7.3).
//!
//! A query goes to one handler stream per component (round-robin within the
//! component). Successful responses are forwarded as they arrive; error
//! responses are held back and only forwarded when no success arrived by the
//! time every selected handler completed. Under stress: queries, cancels and
//! query flow-control messages share the handler's permit-bounded queue; a
//! full queue answers that handler's share with AXONIQ-1900; a query still
//! queued after its delivery deadline (TIMEOUT instruction, default
//! `query_delivery_timeout`) is answered AXONIQ-5006 for that handler; a
//! non-streaming query older than the pending-request timeout is cancelled
//! with AXONIQ-5006; a handler stream that closes counts as an AXONIQ-4001
//! error from that handler.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::query::query_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::query::{
    QueryFlowControl, QueryProviderInbound, QueryReference, QueryRequest, QueryResponse,
    QuerySubscription,
};
use telamon_axon_proto::pb::{
    MetaDataValue, ProcessingInstruction, ProcessingKey, meta_data_value,
};

use crate::axon_status::error_message;
use crate::handler_info::QueryHandlerInfo;
use crate::queue_limits::QueueLimits;
use crate::support::{Outbound, next_message_id};

mod subscription_query;

pub(crate) use subscription_query::SubscriptionError;

/// Permits the server grants a streaming handler per step of caller demand.
pub(crate) const STREAMING_BATCH: i64 = 32;

#[derive(Debug)]
struct Queued {
    priority: i64,
    request_id: String,
    /// Delivery deadline; only set for the query itself.
    deadline: Option<Instant>,
    message: QueryProviderInbound,
}

#[derive(Debug)]
struct HandlerStream {
    client_id: String,
    component: String,
    tx: Outbound<QueryProviderInbound>,
    permits: i64,
    queue: VecDeque<Queued>,
    subscriptions: BTreeMap<String, BTreeSet<String>>,
    /// Client tags from the control-stream `register`, taken at subscription time.
    tags: HashMap<String, String>,
}

#[derive(Debug)]
struct ActiveQuery {
    caller: Outbound<QueryResponse>,
    targets: HashSet<u64>,
    held_error: Option<QueryResponse>,
    had_success: bool,
    streaming: bool,
    responder: Option<u64>,
    since: Instant,
}

/// All query routing state of one server.
#[derive(Debug, Default)]
pub(crate) struct QueryRouter {
    streams: HashMap<u64, HandlerStream>,
    active: HashMap<String, ActiveQuery>,
    round_robin: HashMap<(String, String), usize>,
    subscribers: HashMap<u64, subscription_query::SubscriberCall>,
    live: HashMap<String, subscription_query::LiveSubscription>,
}

/// An in-band error response to `request_id`.
pub(crate) fn error_response(request_id: &str, code: &str, text: String) -> QueryResponse {
    QueryResponse {
        message_identifier: next_message_id(),
        error_code: code.to_owned(),
        error_message: Some(error_message(code, text)),
        request_identifier: request_id.to_owned(),
        ..QueryResponse::default()
    }
}

fn instruction_number(request: &QueryRequest, key: ProcessingKey) -> Option<i64> {
    request
        .processing_instructions
        .iter()
        .filter(|pi| pi.key == key as i32)
        .find_map(|pi| match pi.value.as_ref().and_then(|v| v.data.as_ref()) {
            Some(meta_data_value::Data::NumberValue(n)) => Some(*n),
            _ => None,
        })
}

fn client_streaming(request: &QueryRequest) -> bool {
    request.processing_instructions.iter().any(|pi| {
        pi.key == ProcessingKey::ClientSupportsStreaming as i32
            && matches!(
                pi.value.as_ref().and_then(|v| v.data.as_ref()),
                Some(meta_data_value::Data::BooleanValue(true))
            )
    })
}

fn set_instruction(request: &mut QueryRequest, key: ProcessingKey, data: meta_data_value::Data) {
    request
        .processing_instructions
        .retain(|pi| pi.key != key as i32);
    request.processing_instructions.push(ProcessingInstruction {
        key: key as i32,
        value: Some(MetaDataValue { data: Some(data) }),
    });
}

fn inbound(request: ToHandler) -> QueryProviderInbound {
    QueryProviderInbound {
        request: Some(request),
        instruction_id: String::new(),
    }
}

impl HandlerStream {
    fn enqueue(&mut self, queued: Queued) {
        let position = self
            .queue
            .iter()
            .rposition(|q| q.priority >= queued.priority)
            .map_or(0, |p| p + 1);
        self.queue.insert(position, queued);
    }
}

impl QueryRouter {
    /// Registers a new handler stream.
    pub(crate) fn open(&mut self, stream_id: u64, tx: Outbound<QueryProviderInbound>) {
        self.streams.insert(
            stream_id,
            HandlerStream {
                client_id: String::new(),
                component: String::new(),
                tx,
                permits: 0,
                queue: VecDeque::new(),
                subscriptions: BTreeMap::new(),
                tags: HashMap::new(),
            },
        );
    }

    /// Sets the client tags used for metadata scoring of `stream_id`.
    pub(crate) fn set_tags(&mut self, stream_id: u64, tags: HashMap<String, String>) {
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            stream.tags = tags;
        }
    }

    fn identify(&mut self, stream_id: u64, client_id: &str, component: &str) {
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            if stream.client_id.is_empty() && !client_id.is_empty() {
                stream.client_id = client_id.to_owned();
            }
            if stream.component.is_empty() && !component.is_empty() {
                stream.component = component.to_owned();
            }
        }
    }

    /// Adds a registration (query name, result name) of `stream_id`; true when
    /// the stream had no registration for that query name yet (then call
    /// [`Self::replay_subscriptions`] after acking).
    pub(crate) fn subscribe(&mut self, stream_id: u64, subscription: &QuerySubscription) -> bool {
        self.identify(
            stream_id,
            &subscription.client_id,
            &subscription.component_name,
        );
        let mut first = false;
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            first = !stream.subscriptions.contains_key(&subscription.query);
            stream
                .subscriptions
                .entry(subscription.query.clone())
                .or_default()
                .insert(subscription.result_name.clone());
        }
        first
    }

    /// Removes a registration of `stream_id`.
    pub(crate) fn unsubscribe(&mut self, stream_id: u64, subscription: &QuerySubscription) {
        if let Some(stream) = self.streams.get_mut(&stream_id)
            && let Some(results) = stream.subscriptions.get_mut(&subscription.query)
        {
            results.remove(&subscription.result_name);
            if results.is_empty() {
                stream.subscriptions.remove(&subscription.query);
            }
        }
    }

    /// Adds permits to `stream_id` and delivers what they allow.
    pub(crate) fn flow_control(
        &mut self,
        stream_id: u64,
        client_id: &str,
        permits: i64,
        withheld: bool,
    ) {
        self.identify(stream_id, client_id, "");
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            stream.permits = stream.permits.saturating_add(permits.max(0));
        }
        self.drain(stream_id, withheld);
    }

    /// Starts a query; `caller` receives the responses and is dropped on completion.
    pub(crate) fn query(
        &mut self,
        request: QueryRequest,
        caller: Outbound<QueryResponse>,
        default_delivery: Duration,
        limits: QueueLimits,
        withheld: bool,
    ) {
        let id = request.message_identifier.clone();
        if self.active.contains_key(&id) {
            let _ = caller.send(Ok(error_response(
                &id,
                error_code::QUERY_DUPLICATED,
                format!("Query id {id} duplicated"),
            )));
            return;
        }
        let mut by_component: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for (stream_id, stream) in &self.streams {
            if stream.subscriptions.contains_key(&request.query) {
                by_component
                    .entry(stream.component.as_str())
                    .or_default()
                    .push(*stream_id);
            }
        }
        if by_component.is_empty() {
            let _ = caller.send(Ok(error_response(
                &id,
                error_code::NO_HANDLER_FOR_QUERY,
                format!("No handler for query: {}", request.query),
            )));
            return;
        }
        let mut chosen = Vec::new();
        for (component, mut members) in by_component {
            if members.len() > 1 && !request.meta_data.is_empty() {
                let score = |id: &u64| {
                    self.streams.get(id).map_or(0, |s| {
                        crate::tag_scoring::score(&s.tags, &request.meta_data)
                    })
                };
                let best = members.iter().map(score).max().unwrap_or(0);
                members.retain(|m| score(m) == best);
            }
            members.sort_unstable();
            let counter = self
                .round_robin
                .entry((request.query.clone(), component.to_owned()))
                .or_insert(0);
            chosen.push(members[*counter % members.len()]);
            *counter = counter.wrapping_add(1);
        }
        let streaming = client_streaming(&request);
        let timeout_ms = instruction_number(&request, ProcessingKey::Timeout)
            .and_then(|ms| u64::try_from(ms).ok())
            .map_or(default_delivery, Duration::from_millis);
        let deadline = Instant::now() + timeout_ms;
        let priority = instruction_number(&request, ProcessingKey::Priority).unwrap_or(0);
        let mut forwarded = request;
        set_instruction(
            &mut forwarded,
            ProcessingKey::ServerSupportsStreaming,
            meta_data_value::Data::BooleanValue(true),
        );
        let mut active = ActiveQuery {
            caller,
            targets: HashSet::new(),
            held_error: None,
            had_success: false,
            streaming,
            responder: None,
            since: Instant::now(),
        };
        for stream_id in &chosen {
            let Some(stream) = self.streams.get_mut(stream_id) else {
                continue;
            };
            let length = stream.queue.len();
            if length >= limits.hard || (priority <= 0 && length >= limits.soft) {
                active.held_error.get_or_insert_with(|| {
                    error_response(
                        &id,
                        error_code::TOO_MANY_REQUESTS,
                        format!("Too many requests for {}", stream.client_id),
                    )
                });
                continue;
            }
            stream.enqueue(Queued {
                priority,
                request_id: id.clone(),
                deadline: Some(deadline),
                message: inbound(ToHandler::Query(forwarded.clone())),
            });
            if streaming {
                stream.enqueue(Queued {
                    priority,
                    request_id: id.clone(),
                    deadline: None,
                    message: inbound(ToHandler::QueryFlowControl(QueryFlowControl {
                        query_reference: Some(QueryReference {
                            request_id: id.clone(),
                        }),
                        permits: STREAMING_BATCH,
                    })),
                });
            }
            active.targets.insert(*stream_id);
        }
        if active.targets.is_empty() {
            finish(active);
            return;
        }
        self.active.insert(id, active);
        for stream_id in chosen {
            self.drain(stream_id, withheld);
        }
    }

    /// Forwards or holds a handler response.
    pub(crate) fn response(&mut self, stream_id: u64, response: QueryResponse, withheld: bool) {
        let id = response.request_identifier.clone();
        let Some(active) = self.active.get_mut(&id) else {
            return;
        };
        if !active.targets.contains(&stream_id) {
            return;
        }
        let mut others = Vec::new();
        if active.streaming && active.responder.is_none() {
            // Only the first handler that responds is kept (SEMANTICS §7.3).
            active.responder = Some(stream_id);
            others = active
                .targets
                .iter()
                .copied()
                .filter(|t| *t != stream_id)
                .collect();
            for other in &others {
                active.targets.remove(other);
            }
        }
        if response.error_code.is_empty() {
            active.had_success = true;
            if active.caller.send(Ok(response)).is_err() {
                self.cancel(&id, withheld);
                return;
            }
        } else {
            active.held_error.get_or_insert(response);
        }
        for other in others {
            self.cancel_at(other, &id, withheld);
        }
    }

    /// Records `QueryComplete` of one handler; completes the query when it was the last.
    pub(crate) fn complete(&mut self, stream_id: u64, request_id: &str) {
        if let Some(active) = self.active.get_mut(request_id) {
            active.targets.remove(&stream_id);
            if active.targets.is_empty()
                && let Some(active) = self.active.remove(request_id)
            {
                finish(active);
            }
        }
    }

    /// More caller demand for a streaming query: grant the responder more permits.
    pub(crate) fn demand(&mut self, request_id: &str, withheld: bool) {
        let Some(active) = self.active.get(request_id) else {
            return;
        };
        if !active.streaming {
            return;
        }
        let targets: Vec<u64> = active.targets.iter().copied().collect();
        for target in targets {
            if let Some(stream) = self.streams.get_mut(&target) {
                stream.enqueue(Queued {
                    priority: 0,
                    request_id: request_id.to_owned(),
                    deadline: None,
                    message: inbound(ToHandler::QueryFlowControl(QueryFlowControl {
                        query_reference: Some(QueryReference {
                            request_id: request_id.to_owned(),
                        }),
                        permits: STREAMING_BATCH,
                    })),
                });
            }
            self.drain(target, withheld);
        }
    }

    /// The caller went away: drop queued messages and send `query_cancel` to handlers.
    pub(crate) fn cancel(&mut self, request_id: &str, withheld: bool) {
        let Some(active) = self.active.remove(request_id) else {
            return;
        };
        for target in active.targets {
            self.cancel_at(target, request_id, withheld);
        }
    }

    fn cancel_at(&mut self, stream_id: u64, request_id: &str, withheld: bool) {
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        let before = stream.queue.len();
        stream.queue.retain(|q| {
            !(q.request_id == request_id && matches!(q.message.request, Some(ToHandler::Query(_))))
        });
        let was_queued = stream.queue.len() < before;
        stream.queue.retain(|q| q.request_id != request_id);
        if !was_queued {
            stream.enqueue(Queued {
                priority: i64::MAX,
                request_id: request_id.to_owned(),
                deadline: None,
                message: inbound(ToHandler::QueryCancel(QueryReference {
                    request_id: request_id.to_owned(),
                })),
            });
            self.drain(stream_id, withheld);
        }
    }

    /// Removes a handler stream; its share of every pending query becomes AXONIQ-4001.
    pub(crate) fn close(&mut self, stream_id: u64) {
        let Some(stream) = self.streams.remove(&stream_id) else {
            return;
        };
        let affected: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| a.targets.contains(&stream_id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in affected {
            if let Some(active) = self.active.get_mut(&id) {
                active.held_error.get_or_insert_with(|| {
                    error_response(
                        &id,
                        error_code::CONNECTION_TO_HANDLER_LOST,
                        format!("Connection to handler {} lost", stream.client_id),
                    )
                });
            }
            self.complete(stream_id, &id);
        }
    }

    fn drain(&mut self, stream_id: u64, withheld: bool) {
        let mut expired = Vec::new();
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            while !withheld && stream.permits > 0 {
                let Some(mut queued) = stream.queue.pop_front() else {
                    break;
                };
                if let (Some(deadline), Some(ToHandler::Query(query))) =
                    (queued.deadline, queued.message.request.as_mut())
                {
                    let now = Instant::now();
                    if now >= deadline {
                        expired.push(queued.request_id);
                        continue;
                    }
                    let remaining = i64::try_from((deadline - now).as_millis()).unwrap_or(i64::MAX);
                    set_instruction(
                        query,
                        ProcessingKey::Timeout,
                        meta_data_value::Data::NumberValue(remaining),
                    );
                }
                if stream.tx.send(Ok(queued.message)).is_err() {
                    break;
                }
                stream.permits -= 1;
            }
        }
        for id in expired {
            self.delivery_timeout(stream_id, &id);
        }
    }

    fn delivery_timeout(&mut self, stream_id: u64, request_id: &str) {
        if let Some(active) = self.active.get_mut(request_id) {
            active.held_error.get_or_insert_with(|| {
                error_response(
                    request_id,
                    error_code::QUERY_TIMEOUT,
                    "Query timed out before it could be delivered".to_owned(),
                )
            });
        }
        self.complete(stream_id, request_id);
    }

    /// Expires queued deliveries and non-streaming queries older than `timeout`.
    pub(crate) fn sweep(&mut self, timeout: Duration, withheld: bool) {
        let now = Instant::now();
        let mut expired = Vec::new();
        for (stream_id, stream) in &mut self.streams {
            stream.queue.retain(|q| {
                let late = q.deadline.is_some_and(|d| now >= d);
                if late {
                    expired.push((*stream_id, q.request_id.clone()));
                }
                !late
            });
        }
        for (stream_id, id) in expired {
            self.delivery_timeout(stream_id, &id);
        }
        let old: Vec<String> = self
            .active
            .iter()
            .filter(|(_, a)| !a.streaming && a.since.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            if let Some(active) = self.active.get(&id) {
                let _ = active.caller.send(Ok(error_response(
                    &id,
                    error_code::QUERY_TIMEOUT,
                    "Query cancelled due to timeout".to_owned(),
                )));
            }
            self.cancel(&id, withheld);
        }
    }

    /// Delivers whatever the permits of every stream allow.
    pub(crate) fn drain_all(&mut self, withheld: bool) {
        let ids: Vec<u64> = self.streams.keys().copied().collect();
        for id in ids {
            self.drain(id, withheld);
        }
    }

    /// Registered handlers by query name.
    /// Queries dispatched and not yet completed by every target.
    pub(crate) fn active_count(&self) -> usize {
        self.active.len()
    }

    pub(crate) fn handlers(&self) -> BTreeMap<String, Vec<QueryHandlerInfo>> {
        let mut handlers: BTreeMap<String, Vec<QueryHandlerInfo>> = BTreeMap::new();
        for stream in self.streams.values() {
            for name in stream.subscriptions.keys() {
                handlers
                    .entry(name.clone())
                    .or_default()
                    .push(QueryHandlerInfo {
                        client_id: stream.client_id.clone(),
                        component_name: stream.component.clone(),
                        permits: stream.permits,
                        queued: stream.queue.len(),
                    });
            }
        }
        for list in handlers.values_mut() {
            list.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        }
        handlers
    }
}

/// Sends the held error if nothing succeeded, then drops the caller (ends its stream).
fn finish(active: ActiveQuery) {
    if !active.had_success
        && let Some(error) = active.held_error
    {
        let _ = active.caller.send(Ok(error));
    }
}
