//! Plain tonic peers: what a Java application on the other side of
//! AxonServer would send and receive, byte for byte.

use telamon_axon_proto::headers;
use telamon_axon_proto::pb::command::command_provider_inbound::Request as CmdIn;
use telamon_axon_proto::pb::command::command_provider_outbound::Request as CmdOut;
use telamon_axon_proto::pb::command::command_service_client::CommandServiceClient;
use telamon_axon_proto::pb::command::{
    Command, CommandProviderInbound, CommandProviderOutbound, CommandResponse, CommandSubscription,
};
use telamon_axon_proto::pb::{FlowControl, SerializedObject};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

/// A request with the default context header.
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert(headers::CONTEXT, headers::DEFAULT_CONTEXT.parse().unwrap());
    r
}

/// A JSON payload.
pub fn json_payload(type_name: &str, data: &[u8]) -> SerializedObject {
    SerializedObject {
        r#type: type_name.to_owned(),
        revision: String::new(),
        data: data.to_vec(),
    }
}

/// Dispatches `command` as a Java application would.
pub async fn dispatch(url: &str, command: Command) -> CommandResponse {
    let mut client = CommandServiceClient::connect(url.to_owned()).await.unwrap();
    client
        .dispatch(request(command))
        .await
        .unwrap()
        .into_inner()
}

/// A command handler on a plain stream.
pub struct RawCommandHandler {
    tx: mpsc::UnboundedSender<CommandProviderOutbound>,
    inbound: Streaming<CommandProviderInbound>,
    client_id: String,
}

impl RawCommandHandler {
    /// Subscribes `names` with `permits` and waits for the acks.
    pub async fn start(url: &str, client_id: &str, names: &[&str], permits: i64) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        for (i, name) in names.iter().enumerate() {
            tx.send(CommandProviderOutbound {
                instruction_id: format!("sub-{i}"),
                request: Some(CmdOut::Subscribe(CommandSubscription {
                    message_id: format!("sub-{i}"),
                    command: (*name).to_owned(),
                    component_name: "raw".to_owned(),
                    client_id: client_id.to_owned(),
                    load_factor: 100,
                })),
            })
            .unwrap();
        }
        tx.send(CommandProviderOutbound {
            instruction_id: String::new(),
            request: Some(CmdOut::FlowControl(FlowControl {
                client_id: client_id.to_owned(),
                permits,
            })),
        })
        .unwrap();
        let mut client = CommandServiceClient::connect(url.to_owned()).await.unwrap();
        let mut inbound = client
            .open_stream(request(UnboundedReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        let mut acked = 0;
        while acked < names.len() {
            match inbound.message().await.unwrap().unwrap().request {
                Some(CmdIn::Ack(a)) => {
                    assert!(a.success, "subscription refused: {a:?}");
                    acked += 1;
                }
                other => panic!("expected an ack, got {other:?}"),
            }
        }
        RawCommandHandler {
            tx,
            inbound,
            client_id: client_id.to_owned(),
        }
    }

    /// The next command.
    pub async fn next(&mut self) -> Command {
        loop {
            match self
                .inbound
                .message()
                .await
                .unwrap()
                .expect("stream open")
                .request
            {
                Some(CmdIn::Command(c)) => return c,
                _ => continue,
            }
        }
    }

    /// Answers `command` with `response` (its ids are filled in) and grants one permit.
    pub fn respond(&self, command: &Command, mut response: CommandResponse) {
        response.request_identifier = command.message_identifier.clone();
        response.message_identifier = format!("r-{}", command.message_identifier);
        self.tx
            .send(CommandProviderOutbound {
                instruction_id: String::new(),
                request: Some(CmdOut::CommandResponse(response)),
            })
            .unwrap();
        self.tx
            .send(CommandProviderOutbound {
                instruction_id: String::new(),
                request: Some(CmdOut::FlowControl(FlowControl {
                    client_id: self.client_id.clone(),
                    permits: 1,
                })),
            })
            .unwrap();
    }
}

/// Appends `events` in one transaction, as a Java application would.
pub async fn append(url: &str, events: Vec<telamon_axon_proto::pb::event::Event>) {
    use telamon_axon_proto::pb::event::event_store_client::EventStoreClient;
    let mut client = EventStoreClient::connect(url.to_owned()).await.unwrap();
    client
        .append_event(request(tokio_stream::iter(events)))
        .await
        .unwrap();
}

/// A domain event with a JSON payload.
pub fn event(
    aggregate: &str,
    sequence: i64,
    type_name: &str,
    data: &[u8],
) -> telamon_axon_proto::pb::event::Event {
    telamon_axon_proto::pb::event::Event {
        message_identifier: format!("{aggregate}-{sequence}"),
        aggregate_identifier: aggregate.to_owned(),
        aggregate_sequence_number: sequence,
        aggregate_type: "Account".to_owned(),
        timestamp: 1_700_000_000_000 + sequence,
        payload: Some(json_payload(type_name, data)),
        meta_data: Default::default(),
        snapshot: false,
    }
}

/// `count` deposit events for aggregate `aggregate`, sequences from `first`.
pub fn deposits(
    aggregate: &str,
    first: i64,
    count: i64,
) -> Vec<telamon_axon_proto::pb::event::Event> {
    (first..first + count)
        .map(|s| {
            event(
                aggregate,
                s,
                "com.example.bank.MoneyDeposited",
                format!(r#"{{"accountId":"{aggregate}","amount":1,"sequence":{s}}}"#).as_bytes(),
            )
        })
        .collect()
}
