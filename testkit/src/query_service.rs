//! `QueryService`: handler streams and the `Query` rpc over [`crate::query_router`].
//!
//! The `Query` response stream is wrapped so that the server notices the
//! caller: every [`STREAMING_BATCH`] responses taken by the transport grant a
//! streaming handler more permits (caller demand → `QueryFlowControl`), and
//! dropping the stream before completion (caller cancel) sends `query_cancel`
//! to the handlers still working. `Subscription` calls run one task each
//! (see `query_router::subscription_query`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use std::future::Future;
use telamon_axon_proto::pb::query::query_provider_inbound::Request as ToHandler;
use telamon_axon_proto::pb::query::query_provider_outbound::Request as FromHandler;
use telamon_axon_proto::pb::query::query_service_server::QueryService;
use telamon_axon_proto::pb::query::subscription_query_request::Request as SubscriptionRequest;
use telamon_axon_proto::pb::query::{
    QueryProviderInbound, QueryProviderOutbound, QueryRequest, QueryResponse,
    SubscriptionQueryRequest, SubscriptionQueryResponse,
};
use tokio::sync::mpsc;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status, Streaming};

use crate::axon_status::{ack_ok, ack_unsupported};
use crate::query_router::{STREAMING_BATCH, SubscriptionError};
use crate::queue_limits::QueueLimits;
use crate::state::{Outbound, ResponseStream, Shared, lock, next_message_id};
use crate::stream_registry::{StreamGuard, StreamKind};

/// The `QueryService` implementation.
#[derive(Debug, Clone)]
pub(crate) struct QueryServiceImpl {
    pub(crate) shared: Arc<Shared>,
}

fn limits(shared: &Shared) -> QueueLimits {
    QueueLimits {
        soft: shared.config.handler_queue_soft_limit,
        hard: shared.config.handler_queue_hard_limit,
    }
}

/// Response stream of one `Query` call.
struct QueryCallStream {
    rx: mpsc::UnboundedReceiver<Result<QueryResponse, Status>>,
    request_id: String,
    shared: Arc<Shared>,
    taken: i64,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    ended: bool,
    guard: StreamGuard,
}

impl Stream for QueryCallStream {
    type Item = Result<QueryResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.rx.poll_recv(cx);
        if polled.is_pending() && self.cancelled.as_mut().poll(cx).is_ready() {
            // Fault injection or shutdown ended this call.
            self.ended = true;
            return Poll::Ready(Some(Err(self.guard.close_status())));
        }
        if let Poll::Ready(Some(_)) = &polled {
            self.taken += 1;
            if self.taken % STREAMING_BATCH == 0 {
                let withheld = self.shared.faults.withheld();
                lock(&self.shared.queries).demand(&self.request_id, withheld);
            }
        }
        polled
    }
}

impl Drop for QueryCallStream {
    fn drop(&mut self) {
        // No-op when the query already completed.
        let withheld = self.shared.faults.withheld();
        lock(&self.shared.queries).cancel(&self.request_id, withheld);
    }
}

#[tonic::async_trait]
impl QueryService for QueryServiceImpl {
    type OpenStreamStream = ResponseStream<QueryProviderInbound>;

    async fn open_stream(
        &self,
        request: Request<Streaming<QueryProviderOutbound>>,
    ) -> Result<Response<Self::OpenStreamStream>, Status> {
        Ok(self.shared.open_bidi(
            request,
            StreamKind::QueryHandler,
            |shared, id, tx| lock(&shared.queries).open(id, tx),
            run_handler_stream,
        ))
    }

    type QueryStream = ResponseStream<QueryResponse>;

    async fn query(
        &self,
        request: Request<QueryRequest>,
    ) -> Result<Response<Self::QueryStream>, Status> {
        let mut query = request.into_inner();
        if query.message_identifier.is_empty() {
            query.message_identifier = next_message_id();
        }
        let request_id = query.message_identifier.clone();
        let guard = self
            .shared
            .streams
            .open(StreamKind::QueryCall, &query.client_id);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.shared.queries).query(
            query,
            tx,
            self.shared.config.query_delivery_timeout,
            limits(&self.shared),
            self.shared.faults.withheld(),
        );
        Ok(Response::new(Box::pin(QueryCallStream {
            rx,
            request_id,
            shared: Arc::clone(&self.shared),
            taken: 0,
            cancelled: Box::pin(guard.token.clone().cancelled_owned()),
            ended: false,
            guard,
        })))
    }

    type SubscriptionStream = ResponseStream<SubscriptionQueryResponse>;

    async fn subscription(
        &self,
        request: Request<Streaming<SubscriptionQueryRequest>>,
    ) -> Result<Response<Self::SubscriptionStream>, Status> {
        Ok(self.shared.open_bidi(
            request,
            StreamKind::Subscription,
            |shared, id, tx| lock(&shared.queries).open_subscriber(id, tx),
            run_subscription_call,
        ))
    }
}

async fn run_subscription_call(
    shared: Arc<Shared>,
    guard: StreamGuard,
    mut inbound: Streaming<SubscriptionQueryRequest>,
    tx: Outbound<SubscriptionQueryResponse>,
) {
    loop {
        tokio::select! {
            () = guard.token.cancelled() => {
                let _ = tx.send(Err(guard.close_status()));
                break;
            }
            message = inbound.message() => match message {
                Ok(Some(message)) => {
                    if let Err(error) = handle_subscription(&shared, &guard, message) {
                        let _ = tx.send(Err(error.status()));
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            },
        }
    }
    lock(&shared.queries).close_subscriber(guard.id);
}

fn handle_subscription(
    shared: &Shared,
    guard: &StreamGuard,
    message: SubscriptionQueryRequest,
) -> Result<(), SubscriptionError> {
    let mut queries = lock(&shared.queries);
    match message.request {
        Some(SubscriptionRequest::FlowControl(flow)) => {
            queries.subscriber_permits(guard.id, flow.number_of_permits);
        }
        Some(SubscriptionRequest::Subscribe(query)) => {
            if let Some(request) = &query.query_request {
                guard.set_client(&request.client_id);
            }
            queries.subscribe_query(guard.id, query)?;
        }
        Some(SubscriptionRequest::GetInitialResult(query)) => queries.initial_result(query)?,
        Some(SubscriptionRequest::Unsubscribe(query)) => {
            queries.unsubscribe_query(&query.subscription_identifier);
        }
        None => {}
    }
    Ok(())
}

async fn run_handler_stream(
    shared: Arc<Shared>,
    guard: StreamGuard,
    mut inbound: Streaming<QueryProviderOutbound>,
    tx: Outbound<QueryProviderInbound>,
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
    lock(&shared.queries).close(guard.id);
}

fn handle(
    shared: &Shared,
    guard: &StreamGuard,
    tx: &Outbound<QueryProviderInbound>,
    message: QueryProviderOutbound,
) {
    let withheld = shared.faults.withheld();
    // Live subscription queries are replayed to a new registration after its ack.
    let mut replay = None;
    let supported = match message.request {
        Some(FromHandler::Subscribe(subscription)) => {
            guard.set_client(&subscription.client_id);
            let tags = lock(&shared.platform).tags(&subscription.client_id);
            let mut queries = lock(&shared.queries);
            if queries.subscribe(guard.id, &subscription) {
                replay = Some(subscription.query);
            }
            if let Some(tags) = tags {
                queries.set_tags(guard.id, tags);
            }
            true
        }
        Some(FromHandler::Unsubscribe(subscription)) => {
            lock(&shared.queries).unsubscribe(guard.id, &subscription);
            true
        }
        Some(FromHandler::FlowControl(flow)) => {
            guard.set_client(&flow.client_id);
            lock(&shared.queries).flow_control(guard.id, &flow.client_id, flow.permits, withheld);
            true
        }
        Some(FromHandler::QueryResponse(response)) => {
            lock(&shared.queries).response(guard.id, response, withheld);
            true
        }
        Some(FromHandler::QueryComplete(complete)) => {
            lock(&shared.queries).complete(guard.id, &complete.request_id);
            true
        }
        Some(FromHandler::Ack(_)) => return,
        Some(FromHandler::SubscriptionQueryResponse(response)) => {
            lock(&shared.queries).subscription_response(guard.id, response);
            true
        }
        None => false,
    };
    if !message.instruction_id.is_empty() {
        let ack = if supported {
            ack_ok(&message.instruction_id)
        } else {
            ack_unsupported(&message.instruction_id)
        };
        shared.send_ack(
            tx,
            QueryProviderInbound {
                request: Some(ToHandler::Ack(ack)),
                instruction_id: String::new(),
            },
        );
    }
    if let Some(name) = replay {
        lock(&shared.queries).replay_subscriptions(guard.id, &name);
    }
}
