//! `EventStore` service over the in-memory [`crate::event_store`].
//!
//! `ListEvents` runs one tracker task per call: the first request gives the
//! first token to send and initial permits; later requests only add permits
//! and blacklist entries. The tracker never sends more events than granted,
//! then tails new commits. Under stress: the outgoing buffer is bounded (64),
//! so a client that grants many permits but stops reading blocks only its
//! own tracker; a tracker left at zero permits longer than
//! `event_permit_timeout` is failed (CANCELLED, AXONIQ-0001), as in SE.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use telamon_axon_proto::error_code;
use telamon_axon_proto::pb::event::event_store_server::EventStore as EventStoreRpc;
use telamon_axon_proto::pb::event::{
    Confirmation, ConfirmationWithConsistencyMarker, Event, EventWithToken,
    GetAggregateEventsRequest, GetAggregateSnapshotsRequest, GetEventsRequest,
    GetFirstTokenRequest, GetLastTokenRequest, GetTokenAtRequest, QueryEventsRequest,
    QueryEventsResponse, ReadHighestSequenceNrRequest, ReadHighestSequenceNrResponse,
    TrackingToken,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::axon_status::axon_status;
use crate::event_store::SequenceError;
use crate::handler_info::EventTrackerInfo;
use crate::state::{ResponseStream, Shared};
use crate::stream_registry::{StreamGuard, StreamKind};
use crate::support::lock;

/// Outgoing buffer of one tracker.
const TRACKER_BUFFER: usize = 64;

/// SE sends a blacklisted event anyway after this many consecutive skips.
const BLACKLIST_SEND_AFTER: u32 = telamon_axon_proto::defaults::BLACKLIST_SEND_AFTER;

/// The `EventStore` implementation.
#[derive(Debug, Clone)]
pub(crate) struct EventServiceImpl {
    pub(crate) shared: Arc<Shared>,
}

fn sequence_status(error: &SequenceError) -> Status {
    axon_status(
        Code::OutOfRange,
        error_code::INVALID_SEQUENCE,
        &error.to_string(),
    )
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl EventStoreRpc for EventServiceImpl {
    async fn append_event(
        &self,
        request: Request<Streaming<Event>>,
    ) -> Result<Response<ConfirmationWithConsistencyMarker>, Status> {
        let mut inbound = request.into_inner();
        let mut transaction = Vec::new();
        // Nothing is stored before the half-close; an error or cancel is a rollback,
        // and so is a server stop while the transaction is open.
        loop {
            let message = tokio::select! {
                message = inbound.message() => message?,
                () = self.shared.shutdown.cancelled() => {
                    return Err(Status::unavailable("server stopping; transaction rolled back"));
                }
            };
            match message {
                Some(event) => transaction.push(event),
                None => break,
            }
        }
        self.shared
            .events
            .append(transaction)
            .map_err(|e| sequence_status(&e))?;
        Ok(Response::new(ConfirmationWithConsistencyMarker {
            success: true,
            consistency_marker: None,
        }))
    }

    async fn append_snapshot(
        &self,
        request: Request<Event>,
    ) -> Result<Response<Confirmation>, Status> {
        self.shared
            .events
            .append_snapshot(request.into_inner())
            .map_err(|e| sequence_status(&e))?;
        Ok(Response::new(Confirmation { success: true }))
    }

    type ListAggregateEventsStream = ResponseStream<Event>;

    async fn list_aggregate_events(
        &self,
        request: Request<GetAggregateEventsRequest>,
    ) -> Result<Response<Self::ListAggregateEventsStream>, Status> {
        let r = request.into_inner();
        let events = self.shared.events.aggregate_events(
            &r.aggregate_id,
            r.initial_sequence,
            r.max_sequence,
            r.allow_snapshots,
        );
        Ok(Response::new(Box::pin(tokio_stream::iter(
            events.into_iter().map(Ok),
        ))))
    }

    type ListAggregateSnapshotsStream = ResponseStream<Event>;

    async fn list_aggregate_snapshots(
        &self,
        request: Request<GetAggregateSnapshotsRequest>,
    ) -> Result<Response<Self::ListAggregateSnapshotsStream>, Status> {
        let r = request.into_inner();
        let snapshots = self.shared.events.snapshots(
            &r.aggregate_id,
            r.initial_sequence,
            r.max_sequence,
            r.max_results,
        );
        Ok(Response::new(Box::pin(tokio_stream::iter(
            snapshots.into_iter().map(Ok),
        ))))
    }

    type ListEventsStream = ResponseStream<EventWithToken>;

    async fn list_events(
        &self,
        request: Request<Streaming<GetEventsRequest>>,
    ) -> Result<Response<Self::ListEventsStream>, Status> {
        let client_id = crate::auth::client_id_header(&request);
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(TRACKER_BUFFER);
        let guard = self
            .shared
            .streams
            .open(StreamKind::EventTracker, &client_id);
        let shared = Arc::clone(&self.shared);
        self.shared
            .tasks
            .spawn(run_tracker(shared, guard, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn read_highest_sequence_nr(
        &self,
        request: Request<ReadHighestSequenceNrRequest>,
    ) -> Result<Response<ReadHighestSequenceNrResponse>, Status> {
        let to_sequence_nr = self
            .shared
            .events
            .highest_sequence(&request.into_inner().aggregate_id);
        Ok(Response::new(ReadHighestSequenceNrResponse {
            to_sequence_nr,
        }))
    }

    type QueryEventsStream = ResponseStream<QueryEventsResponse>;

    async fn query_events(
        &self,
        _request: Request<Streaming<QueryEventsRequest>>,
    ) -> Result<Response<Self::QueryEventsStream>, Status> {
        Err(Status::unimplemented(
            "ad-hoc event queries are not implemented by the test server",
        ))
    }

    async fn get_first_token(
        &self,
        _request: Request<GetFirstTokenRequest>,
    ) -> Result<Response<TrackingToken>, Status> {
        // Nothing is ever deleted, so the oldest retained event is token 0.
        Ok(Response::new(TrackingToken { token: 0 }))
    }

    async fn get_last_token(
        &self,
        _request: Request<GetLastTokenRequest>,
    ) -> Result<Response<TrackingToken>, Status> {
        let token = to_i64(self.shared.events.len()) - 1;
        Ok(Response::new(TrackingToken { token }))
    }

    async fn get_token_at(
        &self,
        request: Request<GetTokenAtRequest>,
    ) -> Result<Response<TrackingToken>, Status> {
        let token = self.shared.events.token_at(request.into_inner().instant);
        Ok(Response::new(TrackingToken { token }))
    }
}

type TrackerTx = mpsc::Sender<Result<EventWithToken, Status>>;

/// Removes a tracker from [`Shared::trackers`] when its stream ends.
struct Forget(Arc<Shared>, u64);

impl Drop for Forget {
    fn drop(&mut self) {
        lock(&self.0.trackers).remove(&self.1);
    }
}

struct Tracker {
    next: usize,
    permits: i64,
    blacklist: HashSet<(String, String)>,
    skipped: u32,
}

impl Tracker {
    fn absorb(&mut self, request: GetEventsRequest) {
        self.permits = self
            .permits
            .saturating_add(request.number_of_permits.max(0));
        self.blacklist.extend(
            request
                .blacklist
                .into_iter()
                .map(|p| (p.r#type, p.revision)),
        );
    }

    fn skip(&mut self, event: &Event) -> bool {
        if self.blacklist.is_empty() {
            return false;
        }
        let key = event
            .payload
            .as_ref()
            .map(|p| (p.r#type.clone(), p.revision.clone()))
            .unwrap_or_default();
        if self.blacklist.contains(&key) && self.skipped < BLACKLIST_SEND_AFTER {
            self.skipped += 1;
            return true;
        }
        self.skipped = 0;
        false
    }
}

async fn run_tracker(
    shared: Arc<Shared>,
    guard: StreamGuard,
    mut inbound: Streaming<GetEventsRequest>,
    tx: TrackerTx,
) {
    let first = tokio::select! {
        () = guard.token.cancelled() => {
            let _ = tx.send(Err(guard.close_status())).await;
            return;
        }
        first = inbound.message() => first,
    };
    let Ok(Some(first)) = first else {
        return;
    };
    guard.set_client(&first.client_id);
    let first_client = first.client_id.clone();
    let _forget = Forget(shared.clone(), guard.id);
    let mut tracker = Tracker {
        next: usize::try_from(first.tracking_token.max(0)).unwrap_or(usize::MAX),
        permits: 0,
        blacklist: HashSet::new(),
        skipped: 0,
    };
    tracker.absorb(first);
    let mut changed = shared.events.subscribe();
    let mut starved_since: Option<Instant> = None;
    loop {
        let events_seen = to_i64(shared.events.len());
        if !shared.faults.withheld() && tracker.permits > 0 {
            starved_since = None;
            let batch_size = usize::try_from(tracker.permits)
                .unwrap_or(usize::MAX)
                .min(telamon_axon_proto::defaults::TRACKING_BATCH_SIZE);
            let batch = shared.events.read(tracker.next, batch_size);
            if !batch.is_empty() {
                for event in batch {
                    let token = to_i64(tracker.next);
                    tracker.next += 1;
                    if tracker.skip(&event) {
                        continue;
                    }
                    let message = EventWithToken {
                        token,
                        event: Some(event),
                    };
                    tokio::select! {
                        () = guard.token.cancelled() => {
                            let _ = tx.send(Err(guard.close_status())).await;
                            return;
                        }
                        sent = tx.send(Ok(message)) => if sent.is_err() { return; },
                    }
                    tracker.permits -= 1;
                }
                continue;
            }
        }
        // What it holds back, for tests (`RunningAxonServer::event_trackers`).
        lock(&shared.trackers).insert(
            guard.id,
            EventTrackerInfo {
                client_id: first_client.clone(),
                next_token: to_i64(tracker.next),
                permits: tracker.permits,
                events_seen,
            },
        );
        if tracker.permits <= 0 && starved_since.is_none() {
            starved_since = Some(Instant::now());
        }
        let starvation = async {
            match starved_since {
                Some(since) => {
                    tokio::time::sleep_until((since + shared.config.event_permit_timeout).into())
                        .await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = guard.token.cancelled() => {
                let _ = tx.send(Err(guard.close_status())).await;
                return;
            }
            message = inbound.message() => match message {
                Ok(Some(request)) => tracker.absorb(request),
                Ok(None) | Err(_) => return,
            },
            result = changed.changed() => if result.is_err() { return; },
            () = starvation => {
                let status = axon_status(
                    Code::Cancelled,
                    error_code::OTHER,
                    "Timeout waiting for permits from client",
                );
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}
