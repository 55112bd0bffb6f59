//! `CommandService`: handler streams and unary dispatch over [`crate::command_router`].
//!
//! Every inbound message with a non-empty `instruction_id` is acked when
//! received; an empty oneof gets AXONIQ-1002. Responses are correlated by
//! `request_identifier` only; unknown ones are dropped (as SE logs and drops
//! them). A Dispatch caller that goes away does not cancel the command.

use std::sync::Arc;

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::command::command_service_server::CommandService;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderInbound, CommandProviderOutbound, CommandResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::axon_status::{ack_ok, ack_unsupported};
use crate::command_router::error_response;
use crate::queue_limits::QueueLimits;
use crate::state::{Outbound, ResponseStream, Shared, lock, next_message_id};
use crate::stream_registry::{StreamGuard, StreamKind};

/// The `CommandService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct CommandServiceImpl {
    pub(crate) shared: Arc<Shared>,
}

fn limits(shared: &Shared) -> QueueLimits {
    QueueLimits {
        soft: shared.config.handler_queue_soft_limit,
        hard: shared.config.handler_queue_hard_limit,
    }
}

#[tonic::async_trait]
impl CommandService for CommandServiceImpl {
    type OpenStreamStream = ResponseStream<CommandProviderInbound>;

    async fn open_stream(
        &self,
        request: Request<Streaming<CommandProviderOutbound>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        Ok(self.shared.open_bidi(
            request,
            StreamKind::CommandHandler,
            |shared, id, tx| lock(&shared.commands).open(id, tx),
            run_handler_stream,
        ))
    }

    async fn dispatch(
        &self,
        request: Request<Command>,
    ) -> Result<Response<CommandResponse>, Status> {
        let mut command = request.into_inner();
        if command.message_identifier.is_empty() {
            command.message_identifier = next_message_id();
        }
        let id = command.message_identifier.clone();
        let receiver = lock(&self.shared.commands).dispatch(
            command,
            limits(&self.shared),
            self.shared.faults.withheld(),
        );
        let response = receiver.await.unwrap_or_else(|_| {
            error_response(
                &id,
                error_code::CONNECTION_TO_HANDLER_LOST,
                "Command was dropped by the server".to_owned(),
            )
        });
        Ok(Response::new(response))
    }
}

async fn run_handler_stream(
    shared: Arc<Shared>,
    guard: StreamGuard,
    mut inbound: Streaming<CommandProviderOutbound>,
    tx: Outbound<CommandProviderInbound>,
) {
    loop {
        tokio::select! {
            () = guard.token.cancelled() => {
                let _ = tx.send(Err(guard.close_status()));
                break;
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => handle(&shared, &guard, &tx, message),
                Ok(None) | Err(_) => break,
            },
        }
    }
    lock(&shared.commands).close(guard.id, limits(&shared), shared.faults.withheld());
}

fn handle(
    shared: &Shared,
    guard: &StreamGuard,
    tx: &Outbound<CommandProviderInbound>,
    message: CommandProviderOutbound,
) {
    let withheld = shared.faults.withheld();
    let supported = match message.request {
        Some(FromHandler::Subscribe(subscription)) => {
            guard.set_client(&subscription.client_id);
            let tags = lock(&shared.platform).tags(&subscription.client_id);
            let mut commands = lock(&shared.commands);
            commands.subscribe(guard.id, &subscription);
            if let Some(tags) = tags {
                commands.set_tags(guard.id, tags);
            }
            true
        }
        Some(FromHandler::Unsubscribe(subscription)) => {
            lock(&shared.commands).unsubscribe(guard.id, &subscription.command);
            true
        }
        Some(FromHandler::FlowControl(flow)) => {
            guard.set_client(&flow.client_id);
            lock(&shared.commands).flow_control(guard.id, &flow.client_id, flow.permits, withheld);
            true
        }
        Some(FromHandler::CommandResponse(response)) => {
            if !lock(&shared.commands).respond(response) {
                tracing::debug!("command response for an unknown request dropped");
            }
            true
        }
        Some(FromHandler::Ack(_)) => return,
        None => false,
    };
    if message.instruction_id.is_empty() {
        return;
    }
    let ack = if supported {
        ack_ok(&message.instruction_id)
    } else {
        ack_unsupported(&message.instruction_id)
    };
    shared.send_ack(
        tx,
        CommandProviderInbound {
            request: Some(ToHandler::Ack(ack)),
            instruction_id: String::new(),
        },
    );
}
