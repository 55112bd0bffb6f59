//! Command routing state: handler streams, their subscriptions, permits and
//! queues, and the commands in flight (SEMANTICS §5, §6).
//!
//! Under stress: each handler stream has a priority queue of commands waiting
//! for permits; at `handler_queue_soft_limit` entries, commands with
//! priority <= 0 are answered AXONIQ-1900, at `handler_queue_hard_limit`
//! every command is. When a handler stream closes, commands already sent to
//! it are answered AXONIQ-4001 and commands still queued are re-routed to the
//! remaining handlers (AXONIQ-4000 when none is left). Commands pending longer
//! than the pending-request timeout are answered AXONIQ-4002 by the sweeper.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderInbound, CommandResponse, CommandSubscription,
};
use telamon_axon_proto::pb::{ProcessingKey, meta_data_value};
use tokio::sync::oneshot;

use crate::axon_status::error_message;
use crate::consistent_hash;
use crate::handler_info::CommandHandlerInfo;
use crate::queue_limits::QueueLimits;
use crate::support::{Outbound, next_message_id};

/// Load factor used when a subscription sends 0.
const DEFAULT_LOAD_FACTOR: i32 = 100;

#[derive(Debug)]
struct Queued {
    priority: i64,
    command: Command,
}

#[derive(Debug)]
struct HandlerStream {
    name: String,
    client_id: String,
    component: String,
    tx: Outbound<CommandProviderInbound>,
    permits: i64,
    queue: VecDeque<Queued>,
    subscriptions: BTreeMap<String, i32>,
    /// Client tags from the control-stream `register`, taken at subscription time.
    tags: HashMap<String, String>,
}

#[derive(Debug)]
struct Pending {
    reply: oneshot::Sender<CommandResponse>,
    stream: u64,
    delivered: bool,
    since: Instant,
}

/// All command routing state of one server.
#[derive(Debug, Default)]
pub(crate) struct CommandRouter {
    streams: HashMap<u64, HandlerStream>,
    pending: HashMap<String, Pending>,
}

/// An in-band error response to `request_id`.
pub(crate) fn error_response(request_id: &str, code: &str, text: String) -> CommandResponse {
    CommandResponse {
        message_identifier: next_message_id(),
        error_code: code.to_owned(),
        error_message: Some(error_message(code, text)),
        request_identifier: request_id.to_owned(),
        ..CommandResponse::default()
    }
}

fn routing_key(command: &Command) -> &str {
    command
        .processing_instructions
        .iter()
        .filter(|pi| pi.key == ProcessingKey::RoutingKey as i32)
        .find_map(|pi| match pi.value.as_ref().and_then(|v| v.data.as_ref()) {
            Some(meta_data_value::Data::TextValue(text)) => Some(text.as_str()),
            _ => None,
        })
        .unwrap_or(&command.message_identifier)
}

fn priority(command: &Command) -> i64 {
    command
        .processing_instructions
        .iter()
        .filter(|pi| pi.key == ProcessingKey::Priority as i32)
        .find_map(|pi| match pi.value.as_ref().and_then(|v| v.data.as_ref()) {
            Some(meta_data_value::Data::NumberValue(n)) => Some(*n),
            _ => None,
        })
        .unwrap_or(0)
}

impl HandlerStream {
    fn enqueue(&mut self, queued: Queued) {
        // Higher priority first, FIFO within one priority.
        let position = self
            .queue
            .iter()
            .rposition(|q| q.priority >= queued.priority)
            .map_or(0, |p| p + 1);
        self.queue.insert(position, queued);
    }

    fn drain(&mut self, pending: &mut HashMap<String, Pending>, withheld: bool) {
        while !withheld && self.permits > 0 {
            let Some(queued) = self.queue.pop_front() else {
                break;
            };
            let id = queued.command.message_identifier.clone();
            let message = CommandProviderInbound {
                request: Some(ToHandler::Command(queued.command)),
                instruction_id: String::new(),
            };
            if let Err(failed) = self.tx.send(Ok(message)) {
                // Stream is going away; its cleanup re-routes what is queued.
                if let Ok(CommandProviderInbound {
                    request: Some(ToHandler::Command(command)),
                    ..
                }) = failed.0
                {
                    self.queue.push_front(Queued {
                        priority: queued.priority,
                        command,
                    });
                }
                break;
            }
            self.permits -= 1;
            if let Some(p) = pending.get_mut(&id) {
                p.delivered = true;
            }
        }
    }
}

impl CommandRouter {
    /// Registers a new handler stream.
    pub(crate) fn open(&mut self, stream_id: u64, tx: Outbound<CommandProviderInbound>) {
        self.streams.insert(
            stream_id,
            HandlerStream {
                name: String::new(),
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
            if stream.name.is_empty() {
                stream.name = format!("{}.{stream_id}", stream.client_id);
            }
        }
    }

    /// Adds or updates a subscription of `stream_id`.
    pub(crate) fn subscribe(&mut self, stream_id: u64, subscription: &CommandSubscription) {
        self.identify(
            stream_id,
            &subscription.client_id,
            &subscription.component_name,
        );
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            let load_factor = if subscription.load_factor <= 0 {
                DEFAULT_LOAD_FACTOR
            } else {
                subscription.load_factor
            };
            stream
                .subscriptions
                .insert(subscription.command.clone(), load_factor);
        }
    }

    /// Removes one subscription of `stream_id`.
    pub(crate) fn unsubscribe(&mut self, stream_id: u64, command: &str) {
        if let Some(stream) = self.streams.get_mut(&stream_id) {
            stream.subscriptions.remove(command);
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
            stream.drain(&mut self.pending, withheld);
        }
    }

    /// Completes the command that `response` answers; false when unknown.
    pub(crate) fn respond(&mut self, response: CommandResponse) -> bool {
        match self.pending.remove(&response.request_identifier) {
            Some(pending) => {
                let _ = pending.reply.send(response);
                true
            }
            None => false,
        }
    }

    fn route(&self, command: &Command) -> Option<u64> {
        let mut members: Vec<(u64, &str, i32)> = self
            .streams
            .iter()
            .filter_map(|(id, s)| {
                s.subscriptions
                    .get(&command.name)
                    .map(|lf| (*id, s.name.as_str(), *lf))
            })
            .collect();
        if members.len() > 1 && !command.meta_data.is_empty() {
            // Metadata/tag scoring (SEMANTICS §6.2): keep the best-scoring handlers.
            let score = |id: &u64| {
                self.streams.get(id).map_or(0, |s| {
                    crate::tag_scoring::score(&s.tags, &command.meta_data)
                })
            };
            let best = members.iter().map(|m| score(&m.0)).max().unwrap_or(0);
            members.retain(|m| score(&m.0) == best);
        }
        consistent_hash::pick(routing_key(command), &members)
    }

    /// Routes and queues `command`; the receiver yields its response (possibly an in-band error).
    pub(crate) fn dispatch(
        &mut self,
        command: Command,
        limits: QueueLimits,
        withheld: bool,
    ) -> oneshot::Receiver<CommandResponse> {
        let (reply, receiver) = oneshot::channel();
        let id = command.message_identifier.clone();
        if self.pending.contains_key(&id) {
            let _ = reply.send(error_response(
                &id,
                error_code::COMMAND_DUPLICATED,
                format!("command id {id} duplicated"),
            ));
        } else {
            self.place(command, reply, limits, withheld);
        }
        receiver
    }

    /// Routes `command` and queues it, or answers `reply` in band.
    fn place(
        &mut self,
        command: Command,
        reply: oneshot::Sender<CommandResponse>,
        limits: QueueLimits,
        withheld: bool,
    ) {
        let id = command.message_identifier.clone();
        let Some(stream_id) = self.route(&command) else {
            let _ = reply.send(error_response(
                &id,
                error_code::NO_HANDLER_FOR_COMMAND,
                format!("No Handler for command: {}", command.name),
            ));
            return;
        };
        let priority = priority(&command);
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return;
        };
        let length = stream.queue.len();
        if length >= limits.hard || (priority <= 0 && length >= limits.soft) {
            let _ = reply.send(error_response(
                &id,
                error_code::TOO_MANY_REQUESTS,
                format!("Too many requests for {}", stream.client_id),
            ));
            return;
        }
        self.pending.insert(
            id,
            Pending {
                reply,
                stream: stream_id,
                delivered: false,
                since: Instant::now(),
            },
        );
        stream.enqueue(Queued { priority, command });
        stream.drain(&mut self.pending, withheld);
    }

    /// Removes a handler stream: sent commands get AXONIQ-4001, queued ones are re-routed.
    pub(crate) fn close(&mut self, stream_id: u64, limits: QueueLimits, withheld: bool) {
        let Some(stream) = self.streams.remove(&stream_id) else {
            return;
        };
        let lost: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.stream == stream_id && p.delivered)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            if let Some(pending) = self.pending.remove(&id) {
                let _ = pending.reply.send(error_response(
                    &id,
                    error_code::CONNECTION_TO_HANDLER_LOST,
                    format!(
                        "Connection lost while executing command on: {}",
                        stream.client_id
                    ),
                ));
            }
        }
        for queued in stream.queue {
            let id = queued.command.message_identifier.clone();
            let Some(pending) = self.pending.remove(&id) else {
                continue;
            };
            self.place(queued.command, pending.reply, limits, withheld);
        }
    }

    /// Answers commands pending longer than `timeout` with AXONIQ-4002.
    pub(crate) fn sweep(&mut self, timeout: Duration) {
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            if let Some(pending) = self.pending.remove(&id) {
                if let Some(stream) = self.streams.get_mut(&pending.stream) {
                    stream.queue.retain(|q| q.command.message_identifier != id);
                }
                let _ = pending.reply.send(error_response(
                    &id,
                    error_code::COMMAND_TIMEOUT,
                    "Cancelled by AxonServer due to timeout".to_owned(),
                ));
            }
        }
    }

    /// Delivers whatever the permits of every stream allow.
    pub(crate) fn drain_all(&mut self, withheld: bool) {
        for stream in self.streams.values_mut() {
            stream.drain(&mut self.pending, withheld);
        }
    }

    /// Registered handlers by command name.
    pub(crate) fn handlers(&self) -> BTreeMap<String, Vec<CommandHandlerInfo>> {
        let mut handlers: BTreeMap<String, Vec<CommandHandlerInfo>> = BTreeMap::new();
        for stream in self.streams.values() {
            for (name, load_factor) in &stream.subscriptions {
                handlers
                    .entry(name.clone())
                    .or_default()
                    .push(CommandHandlerInfo {
                        client_id: stream.client_id.clone(),
                        component_name: stream.component.clone(),
                        load_factor: *load_factor,
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

    /// Number of commands in flight (queued or delivered).
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }
}
