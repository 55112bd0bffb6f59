//! The bridge's `[module.<id>]` table: connection settings, every default
//! spelled out, and the mapping tables from bus topics to Axon names and
//! back. [`AxonConfig::validate`] turns it into [`Settings`], checking every
//! pattern, template and selector and naming the key of the first problem.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use telamon_axon_proto::defaults;
use telamon_sdk::duration::deserialize as duration;
use telamon_sdk::{Pattern, Topic};

use crate::selector::Selector;
use crate::template::Template;

/// `[module.<id>]` of class `axon`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AxonConfig {
    /// `host:port` of the AxonServer nodes, tried in turn; `GetPlatformServer`
    /// may route the bridge to another node.
    pub servers: Vec<String>,
    /// The context (`axoniq-context` header on every call).
    pub context: String,
    /// Component name: groups instances of one application (query fan-out).
    pub component: String,
    /// Client id; `-<8 hex>` is always appended so every instance is unique.
    /// Default: the component name.
    pub client_id: Option<String>,
    /// Access token (`axoniq-access-token`); set it from the environment
    /// (`TELAMON_MODULE__<ID>__TOKEN`). Never logged.
    pub token: Option<Token>,
    /// Client tags, matched by the server against message metadata.
    pub tags: BTreeMap<String, String>,
    /// TLS to the servers (needs the cargo feature `tls`).
    pub tls: bool,
    /// Deadline of connecting to one server (TCP, `GetPlatformServer`, `register`).
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Default deadline of an outbound call (Dispatch, Query, appends, reads).
    #[serde(deserialize_with = "duration")]
    pub call_timeout: Duration,
    /// How long an incoming command or query waits for the bus's answer.
    #[serde(deserialize_with = "duration")]
    pub handler_timeout: Duration,
    /// Interval of client heartbeats on the control stream; `0s` turns them off.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_interval: Duration,
    /// A heartbeat not acknowledged within this is a lost connection.
    #[serde(deserialize_with = "duration")]
    pub heartbeat_timeout: Duration,
    /// HTTP/2 keep-alive ping interval (at least 1 s: servers refuse faster pings).
    #[serde(deserialize_with = "duration")]
    pub keep_alive_interval: Duration,
    /// Largest gRPC message sent or accepted, in bytes.
    pub max_message_size: usize,
    /// How often each tracking processor's status is reported.
    #[serde(deserialize_with = "duration")]
    pub processor_info_interval: Duration,
    /// Permits granted on the command handler stream.
    pub command_permits: u32,
    /// Permits re-granted at once, after this many commands finished (default permits / 4).
    pub command_refill: Option<u32>,
    /// Permits granted on the query handler stream.
    pub query_permits: u32,
    /// Query refill batch (default permits / 4).
    pub query_refill: Option<u32>,
    /// Default permit window of tracking processors.
    pub event_permits: u32,
    /// Default refill batch of tracking processors (default permits / 4).
    pub event_refill: Option<u32>,
    /// Folder of the file token store (one file per processor).
    pub token_dir: PathBuf,
    /// Reconnect back-off.
    pub reconnect: BackoffConfig,
    /// Retries of outbound calls.
    pub retry: RetryConfig,
    /// The circuit breaker in front of outbound calls.
    pub circuit_breaker: BreakerConfig,
    /// How payloads are written and read.
    pub payload: PayloadConfig,
    /// Message variant (or bridge document) name → Axon payload type.
    pub types: BTreeMap<String, TypeEntry>,
    /// Bus requests on a pattern → `Dispatch`.
    pub send_command: Vec<SendCommand>,
    /// Axon command names → bus requests.
    pub handle_command: Vec<HandleCommand>,
    /// Bus requests → `Query`.
    pub send_query: Vec<SendQuery>,
    /// Axon query names → bus requests (and subscription-query updates).
    pub handle_query: Vec<HandleQuery>,
    /// Bus requests → remote subscription queries whose updates are published.
    pub subscribe_query: Vec<SubscribeQuery>,
    /// Bus publishes and requests → `AppendEvent`.
    pub append_events: Vec<AppendEvents>,
    /// Bus requests → `AppendSnapshot`.
    pub append_snapshot: Vec<AppendEvents>,
    /// Bus requests → the events of one aggregate (from its latest snapshot).
    pub read_aggregate: Vec<ReadAggregate>,
    /// Tracking event processors: `ListEvents` → bus publishes.
    pub tracking: Vec<Tracking>,
}

/// Default AxonServer address.
pub const DEFAULT_SERVER: &str = "127.0.0.1:8124";

impl Default for AxonConfig {
    fn default() -> Self {
        AxonConfig {
            servers: vec![DEFAULT_SERVER.to_owned()],
            context: telamon_axon_proto::headers::DEFAULT_CONTEXT.to_owned(),
            component: "telamon".to_owned(),
            client_id: None,
            token: None,
            tags: BTreeMap::new(),
            tls: false,
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_millis(7_500),
            keep_alive_interval: Duration::from_secs(10),
            max_message_size: defaults::MAX_MESSAGE_SIZE,
            processor_info_interval: Duration::from_secs(2),
            command_permits: 5_000,
            command_refill: None,
            query_permits: 5_000,
            query_refill: None,
            event_permits: 1_024,
            event_refill: None,
            token_dir: PathBuf::from("axon-tokens"),
            reconnect: BackoffConfig::default(),
            retry: RetryConfig::default(),
            circuit_breaker: BreakerConfig::default(),
            payload: PayloadConfig::default(),
            types: BTreeMap::new(),
            send_command: Vec::new(),
            handle_command: Vec::new(),
            send_query: Vec::new(),
            handle_query: Vec::new(),
            subscribe_query: Vec::new(),
            append_events: Vec::new(),
            append_snapshot: Vec::new(),
            read_aggregate: Vec::new(),
            tracking: Vec::new(),
        }
    }
}

/// An access token: `Debug` and `Display` never show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// A token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The secret itself, for the call header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Exponential back-off with jitter and a cap.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BackoffConfig {
    /// First delay.
    #[serde(deserialize_with = "duration")]
    pub initial: Duration,
    /// Largest delay.
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
    /// Growth per attempt.
    pub multiplier: f64,
    /// Each delay is drawn from `[delay × (1 − jitter), delay]`.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

/// Retries of outbound calls that failed for a reason worth another try.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryConfig {
    /// Tries in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the second try, growing like the reconnect back-off.
    #[serde(deserialize_with = "duration")]
    pub initial: Duration,
    /// Largest delay between tries.
    #[serde(deserialize_with = "duration")]
    pub max: Duration,
    /// What counts as transient: gRPC status names (`UNAVAILABLE`) and
    /// `AXONIQ-nnnn` codes.
    pub on: Vec<String>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            on: vec![
                "UNAVAILABLE".to_owned(),
                "AXONIQ-4000".to_owned(),
                "AXONIQ-5000".to_owned(),
                "AXONIQ-1900".to_owned(),
            ],
        }
    }
}

/// The circuit breaker in front of outbound calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BreakerConfig {
    /// Consecutive failed calls (transport failures, timeouts, not
    /// business errors) that open it; 0 turns it off.
    pub failures: u32,
    /// How long it stays open before one trial call goes through.
    #[serde(deserialize_with = "duration")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// `SerializedObject` encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PayloadFormat {
    /// JSON, as Axon Framework's Jackson serializer writes it.
    #[default]
    Json,
    /// CBOR.
    Cbor,
}

/// How payloads are written and read.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PayloadConfig {
    /// JSON (default) or CBOR.
    pub format: PayloadFormat,
    /// Type name of a variant without a `[types]` entry: prefix + variant
    /// name; read back, a type with this prefix names the variant after it.
    pub type_prefix: String,
    /// Type of a payload nothing else names (a plain message without a
    /// configured type).
    pub default_type: String,
    /// Deepest nesting accepted in a payload from the server.
    pub max_nesting_depth: usize,
}

impl Default for PayloadConfig {
    fn default() -> Self {
        PayloadConfig {
            format: PayloadFormat::Json,
            type_prefix: String::new(),
            default_type: "java.lang.Object".to_owned(),
            max_nesting_depth: telamon_process::codec::DEFAULT_MAX_DEPTH,
        }
    }
}

/// `[types]` entry: a type name, or a table with a revision.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum TypeEntry {
    /// Just the type name.
    Name(String),
    /// Type name and revision.
    Full {
        /// The type name.
        #[serde(rename = "type")]
        name: String,
        /// The revision (empty: none).
        #[serde(default)]
        revision: String,
    },
}

impl TypeEntry {
    /// The type name.
    pub fn name(&self) -> &str {
        match self {
            TypeEntry::Name(n) | TypeEntry::Full { name: n, .. } => n,
        }
    }

    /// The revision.
    pub fn revision(&self) -> &str {
        match self {
            TypeEntry::Name(_) => "",
            TypeEntry::Full { revision, .. } => revision,
        }
    }
}

/// `[[send-command]]`: bus requests on `pattern` become `Dispatch` calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SendCommand {
    /// Bus pattern the bridge answers requests on.
    pub pattern: String,
    /// Command name template (default `{type}`: the payload type).
    #[serde(default = "type_template")]
    pub command: String,
    /// Payload type template for a plain message (an enum's variant names its own).
    pub payload_type: Option<String>,
    /// Where the routing key comes from (default: the message id, as the Java connector does).
    pub routing_key: Option<String>,
    /// `PRIORITY` processing instruction.
    pub priority: Option<i64>,
    /// Deadline of one call (default `call-timeout`).
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
}

/// `[[handle-command]]`: commands with this name become bus requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HandleCommand {
    /// The command name registered with AxonServer.
    pub command: String,
    /// Bus topic template of the request (`{command}`, `{type}` and filters).
    pub topic: String,
    /// Share of the commands this instance takes when several handle the name.
    #[serde(default = "load_factor")]
    pub load_factor: i32,
    /// Type name of the answer when the message type is plain.
    pub response_type: Option<String>,
}

/// How many results a sent query waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Results {
    /// The first successful result.
    #[default]
    First,
    /// Every result (scatter-gather), as a `telamon.axon.QueryResults` list.
    All,
}

/// `[[send-query]]`: bus requests on `pattern` become `Query` calls.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SendQuery {
    /// Bus pattern the bridge answers requests on.
    pub pattern: String,
    /// Query name template (default `{type}`).
    #[serde(default = "type_template")]
    pub query: String,
    /// Payload type template for a plain message.
    pub payload_type: Option<String>,
    /// `response_type` sent with the query (informational for AxonServer).
    pub response_type: Option<String>,
    /// First result, or all of them.
    #[serde(default)]
    pub results: Results,
    /// `NR_OF_RESULTS`: stop after this many (default 1 for `first`, all for `all`).
    pub expected_results: Option<i64>,
    /// Deadline (`TIMEOUT` instruction and local), default `call-timeout`.
    #[serde(default, deserialize_with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Where the routing key comes from.
    pub routing_key: Option<String>,
    /// `PRIORITY` processing instruction.
    pub priority: Option<i64>,
}

/// `[[handle-query]]`: queries with this name become bus requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HandleQuery {
    /// The query name registered with AxonServer.
    pub query: String,
    /// Bus topic template of the request.
    pub topic: String,
    /// Result name sent with the registration, and type of a plain answer.
    pub response_type: Option<String>,
    /// Bus pattern whose messages are sent as updates to every live
    /// subscription query of this name.
    pub updates: Option<String>,
    /// With `query-key`: an update goes only to subscriptions whose query
    /// value at `query-key` equals the update's value here.
    pub update_key: Option<String>,
    /// See `update-key`.
    pub query_key: Option<String>,
}

/// `[[subscribe-query]]`: a bus request opens a remote subscription query;
/// the answer is the initial result, updates are published on a topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SubscribeQuery {
    /// Bus pattern the bridge answers requests on.
    pub pattern: String,
    /// Query name template (default `{type}`).
    #[serde(default = "type_template")]
    pub query: String,
    /// Payload type template for a plain message.
    pub payload_type: Option<String>,
    /// Topic template the updates are published on (from the request topic's words).
    pub updates_topic: String,
    /// Bus pattern of requests that end a subscription: the one whose
    /// `updates-topic`, rendered from the cancel request's topic, is the same.
    pub cancel_pattern: Option<String>,
    /// Update permits granted at a time.
    #[serde(default = "subscription_buffer")]
    pub buffer: u32,
}

/// `[[append-events]]` / `[[append-snapshot]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AppendEvents {
    /// Bus pattern: publishes are appended (failures logged and counted),
    /// requests are answered with the outcome.
    pub pattern: String,
    /// Where the aggregate id comes from; without it, events are not domain events.
    pub aggregate_id: Option<String>,
    /// Aggregate type template (required with `aggregate-id`).
    pub aggregate_type: Option<String>,
    /// Where the aggregate sequence number comes from (required with `aggregate-id`).
    pub sequence: Option<String>,
    /// Payload type template for a plain message.
    pub payload_type: Option<String>,
    /// A message whose content is a list appends each element, in one transaction.
    #[serde(default = "yes")]
    pub batch: bool,
}

/// `[[read-aggregate]]`: a bus request returns one aggregate's events.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReadAggregate {
    /// Bus pattern the bridge answers requests on.
    pub pattern: String,
    /// Where the aggregate id comes from.
    pub aggregate_id: String,
    /// Start from the latest snapshot when there is one.
    #[serde(default = "yes")]
    pub snapshots: bool,
}

/// Where a processor without a stored token starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAt {
    /// The first event in the store.
    #[default]
    Tail,
    /// Only events appended from now on.
    Head,
}

/// What a processor does with an event it cannot turn into a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Undecodable {
    /// Stop at the event (error state, reported and counted) until restarted.
    #[default]
    Stop,
    /// Log and count it, publish a `telamon.axon.UndecodableEvent` on
    /// `dead-letter-topic` when one is set, and go on.
    Skip,
}

/// `[[tracking]]`: a tracking event processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tracking {
    /// Processor name (reported to AxonServer, names the token).
    pub processor: String,
    /// Topic template each event is published on (`{type}` and filters).
    pub topic: String,
    /// Token store: `file` (one file per processor in `token-dir`, replaced
    /// atomically), `memory` (every start begins at `start`), or a kind a
    /// custom `TokenStoreFactory` makes.
    #[serde(default = "file_store")]
    pub token_store: String,
    /// Where to start without a stored token.
    #[serde(default)]
    pub start: StartAt,
    /// Permit window (default `event-permits`).
    pub permits: Option<u32>,
    /// Refill batch (default `event-refill`).
    pub refill: Option<u32>,
    /// Checkpoint after this many published events.
    #[serde(default = "checkpoint_every")]
    pub checkpoint_every: u32,
    /// …and at least this often while events flow.
    #[serde(default = "checkpoint_interval", deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
    /// What to do with an undecodable event.
    #[serde(default)]
    pub undecodable: Undecodable,
    /// Topic of `telamon.axon.UndecodableEvent` documents (with `undecodable = "skip"`).
    pub dead_letter_topic: Option<String>,
    /// Topic of a `telamon.axon.CaughtUp` document each time the processor reaches the head.
    pub caught_up_topic: Option<String>,
}

fn file_store() -> String {
    "file".to_owned()
}

fn type_template() -> String {
    "{type}".to_owned()
}

fn load_factor() -> i32 {
    100
}

fn subscription_buffer() -> u32 {
    64
}

fn yes() -> bool {
    true
}

fn checkpoint_every() -> u32 {
    100
}

fn checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A config problem: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {problem}")]
pub struct ConfigProblem {
    /// The key, relative to the module table (`send-command[0].pattern`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

fn problem(key: impl Into<String>, problem: impl fmt::Display) -> ConfigProblem {
    ConfigProblem {
        key: key.into(),
        problem: problem.to_string(),
    }
}

/// The validated settings the bridge runs with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) raw: AxonConfig,
    pub(crate) client_id: String,
    pub(crate) send_command: Vec<SendCommandRule>,
    pub(crate) handle_command: Vec<HandleCommandRule>,
    pub(crate) send_query: Vec<SendQueryRule>,
    pub(crate) handle_query: Vec<HandleQueryRule>,
    pub(crate) subscribe_query: Vec<SubscribeQueryRule>,
    pub(crate) append_events: Vec<AppendRule>,
    pub(crate) append_snapshot: Vec<AppendRule>,
    pub(crate) read_aggregate: Vec<ReadAggregateRule>,
    pub(crate) tracking: Vec<TrackingRule>,
}

#[derive(Debug)]
pub(crate) struct SendCommandRule {
    pub(crate) pattern: Pattern,
    pub(crate) command: Template,
    pub(crate) payload_type: Option<Template>,
    pub(crate) routing_key: Option<Selector>,
    pub(crate) priority: Option<i64>,
    pub(crate) timeout: Duration,
}

#[derive(Debug)]
pub(crate) struct HandleCommandRule {
    pub(crate) command: String,
    pub(crate) topic: Template,
    pub(crate) load_factor: i32,
    pub(crate) response_type: Option<String>,
}

#[derive(Debug)]
pub(crate) struct SendQueryRule {
    pub(crate) pattern: Pattern,
    pub(crate) query: Template,
    pub(crate) payload_type: Option<Template>,
    pub(crate) response_type: Option<String>,
    pub(crate) results: Results,
    pub(crate) expected_results: i64,
    pub(crate) timeout: Duration,
    pub(crate) routing_key: Option<Selector>,
    pub(crate) priority: Option<i64>,
}

#[derive(Debug)]
pub(crate) struct HandleQueryRule {
    pub(crate) query: String,
    pub(crate) topic: Template,
    pub(crate) response_type: Option<String>,
    pub(crate) updates: Option<Pattern>,
    pub(crate) update_key: Option<Selector>,
    pub(crate) query_key: Option<Selector>,
}

#[derive(Debug)]
pub(crate) struct SubscribeQueryRule {
    pub(crate) pattern: Pattern,
    pub(crate) query: Template,
    pub(crate) payload_type: Option<Template>,
    pub(crate) updates_topic: Template,
    pub(crate) cancel_pattern: Option<Pattern>,
    pub(crate) buffer: u32,
}

#[derive(Debug)]
pub(crate) struct AppendRule {
    pub(crate) pattern: Pattern,
    pub(crate) aggregate: Option<AggregateRule>,
    pub(crate) payload_type: Option<Template>,
    pub(crate) batch: bool,
}

#[derive(Debug)]
pub(crate) struct AggregateRule {
    pub(crate) id: Selector,
    pub(crate) kind: Template,
    pub(crate) sequence: Selector,
}

#[derive(Debug)]
pub(crate) struct ReadAggregateRule {
    pub(crate) pattern: Pattern,
    pub(crate) aggregate_id: Selector,
    pub(crate) snapshots: bool,
}

#[derive(Debug)]
pub(crate) struct TrackingRule {
    pub(crate) processor: String,
    pub(crate) topic: Template,
    pub(crate) token_store: String,
    pub(crate) start: StartAt,
    pub(crate) permits: u32,
    pub(crate) refill: u32,
    pub(crate) checkpoint_every: u32,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) undecodable: Undecodable,
    pub(crate) dead_letter_topic: Option<Topic>,
    pub(crate) caught_up_topic: Option<Topic>,
}

/// The smallest permit window the Java connector allows.
const MIN_PERMITS: u32 = 16;

fn pattern(key: String, text: &str) -> Result<Pattern, ConfigProblem> {
    Pattern::new(text).map_err(|e| problem(key, e))
}

fn topic(key: String, text: &str) -> Result<Topic, ConfigProblem> {
    Topic::new(text).map_err(|e| problem(key, e))
}

/// A template whose placeholders can all be filled: `named` values, and
/// topic words where there is a bus topic (`words`).
fn template(
    key: String,
    text: &str,
    named: &[&str],
    words: bool,
) -> Result<Template, ConfigProblem> {
    let t = Template::parse(text).map_err(|e| problem(key.clone(), e))?;
    t.check(named, words).map_err(|e| problem(key, e))?;
    Ok(t)
}

fn selector(key: String, text: &str) -> Result<Selector, ConfigProblem> {
    Selector::parse(text).map_err(|e| problem(key, e))
}

fn window(key: &str, permits: u32, refill: Option<u32>) -> Result<(u32, u32), ConfigProblem> {
    if permits < MIN_PERMITS {
        return Err(problem(
            key,
            format!("{permits} permits is below the minimum of {MIN_PERMITS}"),
        ));
    }
    let refill = refill.unwrap_or(permits / 4).max(1);
    if refill > permits {
        return Err(problem(
            key,
            format!("refill {refill} is larger than the window of {permits}"),
        ));
    }
    Ok((permits, refill))
}

impl AxonConfig {
    /// Checks everything and builds the settings; `suffix` is appended to
    /// the client id (`-<8 hex>`).
    pub(crate) fn validate(self, suffix: &str) -> Result<Settings, ConfigProblem> {
        let c = &self;
        if c.servers.is_empty() {
            return Err(problem("servers", "no server address given"));
        }
        for (i, s) in c.servers.iter().enumerate() {
            crate::connection::endpoint_url(s, c.tls)
                .map_err(|e| problem(format!("servers[{i}]"), e))?;
        }
        if c.tls && !cfg!(feature = "tls") {
            return Err(problem(
                "tls",
                "TLS needs telamon-module-axon built with the cargo feature `tls`",
            ));
        }
        if c.context.is_empty() {
            return Err(problem("context", "must not be empty"));
        }
        if c.component.is_empty() {
            return Err(problem("component", "must not be empty"));
        }
        for (key, d) in [
            ("connect-timeout", c.connect_timeout),
            ("call-timeout", c.call_timeout),
            ("handler-timeout", c.handler_timeout),
            ("processor-info-interval", c.processor_info_interval),
            ("reconnect.initial", c.reconnect.initial),
            ("reconnect.max", c.reconnect.max),
            ("circuit-breaker.open-for", c.circuit_breaker.open_for),
        ] {
            if d.is_zero() {
                return Err(problem(key, "must be greater than zero"));
            }
        }
        if !c.heartbeat_interval.is_zero() && c.heartbeat_timeout.is_zero() {
            return Err(problem("heartbeat-timeout", "must be greater than zero"));
        }
        if c.keep_alive_interval < Duration::from_secs(1) {
            return Err(problem(
                "keep-alive-interval",
                "AxonServer refuses HTTP/2 pings more often than once a second (GOAWAY too_many_pings); use at least 1s",
            ));
        }
        if c.max_message_size < 1024 {
            return Err(problem("max-message-size", "must be at least 1024 bytes"));
        }
        if c.reconnect.multiplier.is_nan() || c.reconnect.multiplier < 1.0 {
            return Err(problem("reconnect.multiplier", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&c.reconnect.jitter) {
            return Err(problem("reconnect.jitter", "must be between 0 and 1"));
        }
        if c.retry.attempts == 0 {
            return Err(problem("retry.attempts", "must be at least 1"));
        }
        for (i, code) in c.retry.on.iter().enumerate() {
            if !crate::resilience::is_known_condition(code) {
                return Err(problem(
                    format!("retry.on[{i}]"),
                    format!(
                        "`{code}` is neither a gRPC status name (UNAVAILABLE …) nor an AXONIQ-nnnn code"
                    ),
                ));
            }
        }
        if c.payload.max_nesting_depth == 0
            || c.payload.max_nesting_depth > telamon_process::codec::MAX_SAFE_DEPTH
        {
            return Err(problem(
                "payload.max-nesting-depth",
                format!(
                    "must be between 1 and {}",
                    telamon_process::codec::MAX_SAFE_DEPTH
                ),
            ));
        }
        for (variant, entry) in &c.types {
            if entry.name().is_empty() {
                return Err(problem(format!("types.{variant}"), "type name is empty"));
            }
        }
        window("command-permits", c.command_permits, c.command_refill)?;
        window("query-permits", c.query_permits, c.query_refill)?;
        window("event-permits", c.event_permits, c.event_refill)?;

        let mut send_command = Vec::new();
        for (i, m) in c.send_command.iter().enumerate() {
            let k = |f: &str| format!("send-command[{i}].{f}");
            send_command.push(SendCommandRule {
                pattern: pattern(k("pattern"), &m.pattern)?,
                command: template(k("command"), &m.command, &["type"], true)?,
                payload_type: m
                    .payload_type
                    .as_deref()
                    .map(|t| template(k("payload-type"), t, &[], true))
                    .transpose()?,
                routing_key: m
                    .routing_key
                    .as_deref()
                    .map(|t| selector(k("routing-key"), t))
                    .transpose()?,
                priority: m.priority,
                timeout: m.timeout.unwrap_or(c.call_timeout),
            });
        }
        let mut handle_command = Vec::new();
        for (i, m) in c.handle_command.iter().enumerate() {
            let k = |f: &str| format!("handle-command[{i}].{f}");
            if m.command.is_empty() {
                return Err(problem(k("command"), "must not be empty"));
            }
            if handle_command
                .iter()
                .any(|h: &HandleCommandRule| h.command == m.command)
            {
                return Err(problem(
                    k("command"),
                    format!("command `{}` is handled twice", m.command),
                ));
            }
            if m.load_factor < 0 {
                return Err(problem(k("load-factor"), "must not be negative"));
            }
            handle_command.push(HandleCommandRule {
                command: m.command.clone(),
                topic: template(k("topic"), &m.topic, &["command", "type"], false)?,
                load_factor: if m.load_factor == 0 {
                    100
                } else {
                    m.load_factor
                },
                response_type: m.response_type.clone(),
            });
        }
        let mut send_query = Vec::new();
        for (i, m) in c.send_query.iter().enumerate() {
            let k = |f: &str| format!("send-query[{i}].{f}");
            let expected = m.expected_results.unwrap_or(match m.results {
                Results::First => 1,
                Results::All => -1,
            });
            if expected == 0 || expected < -1 {
                return Err(problem(
                    k("expected-results"),
                    "must be a positive count, or -1 for no limit",
                ));
            }
            send_query.push(SendQueryRule {
                pattern: pattern(k("pattern"), &m.pattern)?,
                query: template(k("query"), &m.query, &["type"], true)?,
                payload_type: m
                    .payload_type
                    .as_deref()
                    .map(|t| template(k("payload-type"), t, &[], true))
                    .transpose()?,
                response_type: m.response_type.clone(),
                results: m.results,
                expected_results: expected,
                timeout: m.timeout.unwrap_or(c.call_timeout),
                routing_key: m
                    .routing_key
                    .as_deref()
                    .map(|t| selector(k("routing-key"), t))
                    .transpose()?,
                priority: m.priority,
            });
        }
        let mut handle_query = Vec::new();
        for (i, m) in c.handle_query.iter().enumerate() {
            let k = |f: &str| format!("handle-query[{i}].{f}");
            if m.query.is_empty() {
                return Err(problem(k("query"), "must not be empty"));
            }
            if m.update_key.is_some() != m.query_key.is_some() {
                return Err(problem(
                    k("update-key"),
                    "`update-key` and `query-key` go together",
                ));
            }
            if m.update_key.is_some() && m.updates.is_none() {
                return Err(problem(k("update-key"), "needs `updates`"));
            }
            handle_query.push(HandleQueryRule {
                query: m.query.clone(),
                topic: template(k("topic"), &m.topic, &["query", "type"], false)?,
                response_type: m.response_type.clone(),
                updates: m
                    .updates
                    .as_deref()
                    .map(|p| pattern(k("updates"), p))
                    .transpose()?,
                update_key: m
                    .update_key
                    .as_deref()
                    .map(|s| selector(k("update-key"), s))
                    .transpose()?,
                query_key: m
                    .query_key
                    .as_deref()
                    .map(|s| selector(k("query-key"), s))
                    .transpose()?,
            });
        }
        let mut subscribe_query = Vec::new();
        for (i, m) in c.subscribe_query.iter().enumerate() {
            let k = |f: &str| format!("subscribe-query[{i}].{f}");
            if m.buffer < MIN_PERMITS {
                return Err(problem(
                    k("buffer"),
                    format!("must be at least {MIN_PERMITS}"),
                ));
            }
            subscribe_query.push(SubscribeQueryRule {
                pattern: pattern(k("pattern"), &m.pattern)?,
                query: template(k("query"), &m.query, &["type"], true)?,
                payload_type: m
                    .payload_type
                    .as_deref()
                    .map(|t| template(k("payload-type"), t, &[], true))
                    .transpose()?,
                updates_topic: template(k("updates-topic"), &m.updates_topic, &[], true)?,
                cancel_pattern: m
                    .cancel_pattern
                    .as_deref()
                    .map(|p| pattern(k("cancel-pattern"), p))
                    .transpose()?,
                buffer: m.buffer,
            });
        }
        let appends = |table: &str,
                       list: &[AppendEvents]|
         -> Result<Vec<AppendRule>, ConfigProblem> {
            let mut out = Vec::new();
            for (i, m) in list.iter().enumerate() {
                let k = |f: &str| format!("{table}[{i}].{f}");
                let aggregate = match (&m.aggregate_id, &m.aggregate_type, &m.sequence) {
                    (None, None, None) => None,
                    (Some(id), Some(kind), Some(seq)) => Some(AggregateRule {
                        id: selector(k("aggregate-id"), id)?,
                        kind: template(k("aggregate-type"), kind, &["type"], true)?,
                        sequence: selector(k("sequence"), seq)?,
                    }),
                    _ => {
                        return Err(problem(
                            k("aggregate-id"),
                            "`aggregate-id`, `aggregate-type` and `sequence` go together (a domain event needs all three)",
                        ));
                    }
                };
                if table == "append-snapshot" && aggregate.is_none() {
                    return Err(problem(
                        k("aggregate-id"),
                        "a snapshot needs `aggregate-id`, `aggregate-type` and `sequence`",
                    ));
                }
                out.push(AppendRule {
                    pattern: pattern(k("pattern"), &m.pattern)?,
                    aggregate,
                    payload_type: m
                        .payload_type
                        .as_deref()
                        .map(|t| template(k("payload-type"), t, &[], true))
                        .transpose()?,
                    batch: m.batch,
                });
            }
            Ok(out)
        };
        let append_events = appends("append-events", &c.append_events)?;
        let append_snapshot = appends("append-snapshot", &c.append_snapshot)?;
        let mut read_aggregate = Vec::new();
        for (i, m) in c.read_aggregate.iter().enumerate() {
            let k = |f: &str| format!("read-aggregate[{i}].{f}");
            read_aggregate.push(ReadAggregateRule {
                pattern: pattern(k("pattern"), &m.pattern)?,
                aggregate_id: selector(k("aggregate-id"), &m.aggregate_id)?,
                snapshots: m.snapshots,
            });
        }
        let mut tracking = Vec::new();
        for (i, m) in c.tracking.iter().enumerate() {
            let k = |f: &str| format!("tracking[{i}].{f}");
            if m.processor.is_empty()
                || !m
                    .processor
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                return Err(problem(
                    k("processor"),
                    "use letters, digits, `-`, `_` and `.` (it names the token file)",
                ));
            }
            if tracking
                .iter()
                .any(|t: &TrackingRule| t.processor == m.processor)
            {
                return Err(problem(
                    k("processor"),
                    format!("processor `{}` is configured twice", m.processor),
                ));
            }
            let (permits, refill) = window(
                &k("permits"),
                m.permits.unwrap_or(c.event_permits),
                m.refill.or(c.event_refill),
            )?;
            if m.checkpoint_every == 0 {
                return Err(problem(k("checkpoint-every"), "must be at least 1"));
            }
            if m.checkpoint_interval.is_zero() {
                return Err(problem(
                    k("checkpoint-interval"),
                    "must be greater than zero",
                ));
            }
            if m.dead_letter_topic.is_some() && m.undecodable != Undecodable::Skip {
                return Err(problem(
                    k("dead-letter-topic"),
                    "only used with `undecodable = \"skip\"`",
                ));
            }
            tracking.push(TrackingRule {
                processor: m.processor.clone(),
                topic: template(k("topic"), &m.topic, &["type", "processor"], false)?,
                token_store: m.token_store.clone(),
                start: m.start,
                permits,
                refill,
                checkpoint_every: m.checkpoint_every,
                checkpoint_interval: m.checkpoint_interval,
                undecodable: m.undecodable,
                dead_letter_topic: m
                    .dead_letter_topic
                    .as_deref()
                    .map(|t| topic(k("dead-letter-topic"), t))
                    .transpose()?,
                caught_up_topic: m
                    .caught_up_topic
                    .as_deref()
                    .map(|t| topic(k("caught-up-topic"), t))
                    .transpose()?,
            });
        }
        let base = c.client_id.clone().unwrap_or_else(|| c.component.clone());
        Ok(Settings {
            client_id: format!("{base}-{suffix}"),
            send_command,
            handle_command,
            send_query,
            handle_query,
            subscribe_query,
            append_events,
            append_snapshot,
            read_aggregate,
            tracking,
            raw: self,
        })
    }
}

impl Settings {
    /// Command permit window and refill batch.
    pub(crate) fn command_window(&self) -> (u32, u32) {
        let c = &self.raw;
        (
            c.command_permits,
            c.command_refill.unwrap_or(c.command_permits / 4).max(1),
        )
    }

    /// Query permit window and refill batch.
    pub(crate) fn query_window(&self) -> (u32, u32) {
        let c = &self.raw;
        (
            c.query_permits,
            c.query_refill.unwrap_or(c.query_permits / 4).max(1),
        )
    }
}
