//! `PlatformService`: routing answer and the control stream.
//!
//! Control stream rules (SEMANTICS §2–§4): `register` records the client;
//! every inbound instruction with a non-empty `instruction_id` is acked when
//! received (success), unknown or unhandled cases (topology subscriptions, an
//! empty oneof) get a failed ack with AXONIQ-1002. Instructions before
//! `register` are acked but otherwise ignored, as SE does. Heartbeats with an
//! id are always acked. With `heartbeat_interval` set, the server sends its
//! own heartbeats to clients whose version is >= 4.2.1 and, once a client has
//! sent one heartbeat, drops all its streams after `heartbeat_timeout` of
//! silence. The control stream has no flow control (as in SE): outbound
//! messages queue without bound, which is fine for the few it carries.

use std::sync::Arc;
use std::time::Instant;

use telamon_axon_proto::pb::InstructionResult;
use telamon_axon_proto::pb::control::platform_inbound_instruction::Request as Inbound;
use telamon_axon_proto::pb::control::platform_outbound_instruction::Request as Outgoing;
use telamon_axon_proto::pb::control::platform_service_server::PlatformService;
use telamon_axon_proto::pb::control::{
    ClientIdentification, Heartbeat, NodeInfo, PlatformInboundInstruction, PlatformInfo,
    PlatformOutboundInstruction,
};
use tonic::{Request, Response, Status, Streaming};

use crate::axon_status::{ack_ok, ack_unsupported};
use crate::handler_info::ConnectedClient;
use crate::platform_state::{ClientEntry, outbound};
use crate::state::{Outbound, ResponseStream, Shared, lock};
use crate::stream_registry::{StreamGuard, StreamKind};

/// Oldest client version that gets server heartbeats.
const HEARTBEAT_MIN_VERSION: [u64; 3] = [4, 2, 1];

/// The `PlatformService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct PlatformServiceImpl {
    pub(crate) shared: Arc<Shared>,
}

fn version_at_least(version: &str, minimum: [u64; 3]) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let actual = [
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    ];
    actual >= minimum
}

#[tonic::async_trait]
impl PlatformService for PlatformServiceImpl {
    async fn get_platform_server(
        &self,
        _request: Request<ClientIdentification>,
    ) -> Result<Response<PlatformInfo>, Status> {
        let shared = &self.shared;
        if let Some(node) = shared.config.redirect_to {
            return Ok(Response::new(PlatformInfo {
                primary: Some(NodeInfo {
                    host_name: node.ip().to_string(),
                    grpc_port: i32::from(node.port()),
                    http_port: i32::from(shared.config.http_port),
                    version: 0,
                    node_name: format!("{}-primary", shared.config.node_name),
                }),
                same_connection: false,
            }));
        }
        Ok(Response::new(PlatformInfo {
            primary: Some(NodeInfo {
                host_name: shared.host.clone(),
                grpc_port: i32::from(shared.port),
                http_port: i32::from(shared.config.http_port),
                version: 0,
                node_name: shared.config.node_name.clone(),
            }),
            same_connection: true,
        }))
    }

    type OpenStreamStream = ResponseStream<PlatformOutboundInstruction>;

    async fn open_stream(
        &self,
        request: Request<Streaming<PlatformInboundInstruction>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        Ok(self.shared.open_bidi(
            request,
            StreamKind::Platform,
            |_, _, _| {},
            run_control_stream,
        ))
    }
}

async fn next_heartbeat(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn run_control_stream(
    shared: Arc<Shared>,
    guard: StreamGuard,
    mut inbound: Streaming<PlatformInboundInstruction>,
    tx: Outbound<PlatformOutboundInstruction>,
) {
    let mut registered: Option<String> = None;
    let mut heartbeat = shared.config.heartbeat_interval.map(|period| {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    });
    loop {
        tokio::select! {
            () = guard.token.cancelled() => {
                let _ = tx.send(Err(guard.close_status()));
                break;
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => handle(&shared, &guard, &tx, &mut registered, message),
                Ok(None) | Err(_) => break,
            },
            () = next_heartbeat(&mut heartbeat) => {
                if let Some(client_id) = &registered {
                    beat(&shared, client_id, &tx);
                }
            }
        }
    }
    if let Some(client_id) = registered {
        let mut platform = lock(&shared.platform);
        if platform
            .clients
            .get(&client_id)
            .is_some_and(|entry| entry.stream_id == guard.id)
        {
            platform.clients.remove(&client_id);
        }
    }
}

/// Sends a server heartbeat and enforces the inactivity rule.
fn beat(shared: &Shared, client_id: &str, tx: &Outbound<PlatformOutboundInstruction>) {
    let (send, silent) = {
        let platform = lock(&shared.platform);
        let Some(entry) = platform.clients.get(client_id) else {
            return;
        };
        let send = version_at_least(&entry.info.identification.version, HEARTBEAT_MIN_VERSION);
        let silent = entry
            .last_heartbeat
            .is_some_and(|at| at.elapsed() > shared.config.heartbeat_timeout);
        (send, silent)
    };
    if silent {
        let status = Status::unavailable(format!(
            "{client_id}: stream inactivity for {} ms",
            shared.config.heartbeat_timeout.as_millis()
        ));
        // SE fails the control, command and query streams of the silent client.
        shared
            .streams
            .close_client_kinds(client_id, &status, |kind| {
                matches!(
                    kind,
                    StreamKind::Platform | StreamKind::CommandHandler | StreamKind::QueryHandler
                )
            });
        return;
    }
    if send {
        let _ = tx.send(Ok(outbound(Outgoing::Heartbeat(Heartbeat {}), "")));
    }
}

fn handle(
    shared: &Shared,
    guard: &StreamGuard,
    tx: &Outbound<PlatformOutboundInstruction>,
    registered: &mut Option<String>,
    message: PlatformInboundInstruction,
) {
    let id = message.instruction_id;
    let supported = match message.request {
        Some(Inbound::Register(identification)) => {
            let client_id = identification.client_id.clone();
            guard.set_client(&client_id);
            lock(&shared.platform).clients.insert(
                client_id.clone(),
                ClientEntry {
                    info: ConnectedClient {
                        identification,
                        heartbeats_received: 0,
                        processors: std::collections::BTreeMap::new(),
                        acks_received: Vec::new(),
                    },
                    stream_id: guard.id,
                    tx: tx.clone(),
                    last_heartbeat: None,
                },
            );
            *registered = Some(client_id);
            true
        }
        Some(Inbound::Heartbeat(_)) => {
            with_client(shared, registered.as_deref(), |entry| {
                entry.info.heartbeats_received += 1;
                entry.last_heartbeat = Some(Instant::now());
            });
            true
        }
        Some(Inbound::EventProcessorInfo(info)) => {
            with_client(shared, registered.as_deref(), |entry| {
                entry
                    .info
                    .processors
                    .insert(info.processor_name.clone(), info);
            });
            true
        }
        Some(Inbound::Ack(ack)) => {
            if !ack.success {
                // A refused instruction never gets a result.
                lock(&shared.platform).complete_instruction(InstructionResult {
                    instruction_id: ack.instruction_id.clone(),
                    success: false,
                    error: ack.error.clone(),
                });
            }
            with_client(shared, registered.as_deref(), |entry| {
                entry.info.acks_received.push(ack);
            });
            // Acks are never acked themselves.
            return;
        }
        Some(Inbound::Result(result)) => {
            lock(&shared.platform).complete_instruction(result);
            true
        }
        Some(Inbound::SubscribeTopologyChanges(_) | Inbound::UnsubscribeTopologyChanges(_))
        | None => false,
    };
    if id.is_empty() {
        return;
    }
    let ack = if supported {
        ack_ok(&id)
    } else {
        ack_unsupported(&id)
    };
    shared.send_ack(tx, outbound(Outgoing::Ack(ack), ""));
}

fn with_client(shared: &Shared, client_id: Option<&str>, update: impl FnOnce(&mut ClientEntry)) {
    let Some(client_id) = client_id else {
        return;
    };
    if let Some(entry) = lock(&shared.platform).clients.get_mut(client_id) {
        update(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::{HEARTBEAT_MIN_VERSION, version_at_least};

    #[test]
    fn heartbeat_version_threshold() {
        for (version, expected) in [
            ("4.6", true),
            ("4.2.1", true),
            ("4.2.0", false),
            ("4.1.9-SNAPSHOT", false),
            ("2024.1.0", true),
            ("", false),
        ] {
            assert_eq!(
                version_at_least(version, HEARTBEAT_MIN_VERSION),
                expected,
                "{version}"
            );
        }
    }
}
