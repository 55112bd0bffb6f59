//! The AxonServer bridge: bus topics ↔ AxonServer commands, events and
//! queries, so a Telamon service takes part in an Axon (CQRS /
//! event-sourcing) system while its modules only publish, subscribe and
//! request on the bus.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::{json, Value};
//! use telamon_module_axon::Axon;
//! use telamon_process::{ConfigLoader, Process};
//! use telamon_sdk::{module, Context, HandlerError, ModuleError};
//!
//! /// Answers `bank.handle.open-account` (the commands the bridge receives).
//! #[derive(serde::Deserialize)]
//! struct Accounts {}
//!
//! #[module(name = "accounts", message = Value)]
//! impl Accounts {
//!     async fn init(self: Arc<Self>, ctx: Context<Value>) -> Result<(), ModuleError> {
//!         ctx.handle("bank.handle.open-account", |request| {
//!             let id = request.message()["accountId"].clone();
//!             async move { Ok::<_, HandlerError>(json!({ "opened": id })) }
//!         })
//!         .await?;
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An AxonServer-compatible server on a free port (a real one: port 8124).
//! let server = telamon_testkit::AxonTestServer::builder().start().await?;
//! let config = format!(
//!     r#"
//!     [module.accounts]
//!
//!     [module.axon]
//!     servers = ["{}"]
//!     component = "bank"
//!
//!     [[module.axon.send-command]]        # bus request → Dispatch
//!     pattern = "bank.command.*"
//!     command = "com.example.bank.{{2|pascal}}"
//!     routing-key = "/accountId"
//!
//!     [[module.axon.handle-command]]      # AxonServer → bus request
//!     command = "com.example.bank.OpenAccount"
//!     topic = "bank.handle.{{command|simple|kebab}}"
//!     "#,
//!     server.address()
//! );
//! let config = ConfigLoader::new().embedded(config).env_prefix(None).load()?;
//! let process = Process::<Value>::new(config)
//!     .module::<Accounts>()
//!     .module::<Axon<Value>>()
//!     .start()
//!     .await?;
//! let answer = process
//!     .context("teller")
//!     .request("bank.command.open-account", json!({ "accountId": "a-1" }))
//!     .await?;
//! assert_eq!(*answer, json!({ "opened": "a-1" }));
//! process.stop().await;
//! server.stop().await?;
//! # Ok(()) }
//! ```
//!
//! `start` returns once the bridge is connected and its command handler is
//! registered (or `connect-timeout` passed, with a warning). The request on
//! `bank.command.open-account` went to AxonServer as the
//! command `com.example.bank.OpenAccount` (payload `{"accountId":"a-1"}`,
//! routing key `a-1`); AxonServer sent it to the bridge's command handler
//! stream, which asked the bus on `bank.handle.open-account`; the module's
//! answer came back as the `CommandResponse`, and then as the response to
//! the request.
//!
//! # Mappings
//!
//! Every mapping is a table in `[module.<id>]` (class `axon`), from topic to
//! Axon name and back; `docs/axon-bridge.md` has every key.
//!
//! | table | bus side | Axon side |
//! |---|---|---|
//! | `[[send-command]]` | a request on `pattern` | `Dispatch`; the answer is the result payload, or a `HandlerError` with the `AXONIQ-nnnn` code |
//! | `[[handle-command]]` | a request on `topic` | the command handler stream (registered, permits refilled as answers go back) |
//! | `[[append-events]]` | a publish or request on `pattern` | `AppendEvent`, one transaction per message |
//! | `[[append-snapshot]]`, `[[read-aggregate]]` | a request | `AppendSnapshot`; `ListAggregateEvents` from the latest snapshot |
//! | `[[tracking]]` | publishes on `topic` | `ListEvents` from the stored token |
//! | `[[send-query]]` | a request | `Query`: first result or all |
//! | `[[handle-query]]` | a request on `topic`; updates from `updates` | the query handler stream, subscription queries |
//! | `[[subscribe-query]]` | a request; updates published on `updates-topic` | `Subscription` |
//!
//! Payloads are the bare JSON object Axon Framework's Jackson serializer
//! reads and writes (see [`payload`](crate#payloads)); headers and Axon
//! metadata map both ways (`metadata` below).
//!
//! # Payloads
//!
//! With an application message enum, a variant's *content* goes on the
//! wire and the payload type names the variant (`[types]`, or
//! `payload.type-prefix` + the variant name); a payload read back becomes
//! the variant its type names (by `[types]`, the prefix, or the type's
//! simple name). With `serde_json::Value` (or any other type that is not an
//! externally tagged enum) the message is the payload, typed by the
//! `axon-payload-type` header or the mapping's `payload-type`. Documents the
//! bridge makes — [`QUERY_RESULTS_TYPE`], [`AGGREGATE_EVENTS_TYPE`],
//! [`CAUGHT_UP_TYPE`], [`UNDECODABLE_TYPE`], [`EMPTY_TYPE`] — follow the same
//! rule: an enum needs a variant with the document's simple name.
//!
//! # Under stress
//!
//! - **AxonServer away or silent**: the bridge reconnects with back-off,
//!   re-registers every handler and reopens every stream; outbound calls
//!   wait for a connection up to their deadline, are retried on transient
//!   errors and are cut short by a circuit breaker. Nothing waits forever.
//! - **Full windows**: inbound commands and queries are bounded by their
//!   permit windows, tracked events by theirs; permits come back as the bus
//!   finishes, so a slow module slows AxonServer down instead of filling
//!   memory.
//! - **Over-size messages** are refused before they are sent
//!   (`max-message-size`), with an error to the requester.
//! - **Stop**: handlers are unsubscribed, work in hand finishes, queued
//!   appends are written, tracking processors checkpoint, then the
//!   connection closes — all within the process's shutdown deadline.
//!
//! # Metrics
//!
//! On the process's `/metrics`, labelled `module="<id>"`:
//! `telamon_axon_state` (0 connecting, 1 ready, 2 degraded),
//! `telamon_axon_reconnects_total`, `telamon_axon_permits_available{stream}`,
//! `telamon_axon_circuit_state` (0 closed, 1 open, 2 half-open),
//! `telamon_axon_call_failures_total{call}`,
//! `telamon_axon_append_failures_total{pattern}`,
//! `telamon_axon_tracking_position{processor}`,
//! `telamon_axon_tracking_lag{processor}`,
//! `telamon_axon_tracking_caught_up{processor}`,
//! `telamon_axon_tracked_events_total{processor}`,
//! `telamon_axon_undecodable_events_total{processor}`.

mod bridge;
mod commands;
mod config;
mod connection;
mod control;
mod error;
mod events;
mod ids;
mod instruction;
pub mod metadata;
mod payload;
mod permits;
mod queries;
mod resilience;
mod selector;
mod subscription_queries;
mod template;
mod token_store;
mod tracking;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use telamon_sdk::{Context, HandleOptions, Message, Module, ModuleError};
use tokio_util::task::TaskTracker;

pub use config::{
    AppendEvents, AxonConfig, BackoffConfig, BreakerConfig, ConfigProblem, DEFAULT_SERVER,
    HandleCommand, HandleQuery, PayloadConfig, PayloadFormat, ReadAggregate, Results, RetryConfig,
    SendCommand, SendQuery, StartAt, SubscribeQuery, Token, Tracking, TypeEntry, Undecodable,
};
pub use connection::BridgeState;
pub use error::BridgeError;
pub use events::AGGREGATE_EVENTS_TYPE;
pub use payload::{EMPTY_TYPE, PAYLOAD_TYPE_HEADER, PayloadError};
pub use queries::QUERY_RESULTS_TYPE;
pub use token_store::{
    BuiltInStores, FileTokenStore, MemoryTokenStore, TokenStore, TokenStoreError, TokenStoreFactory,
};
pub use tracking::{CAUGHT_UP_TYPE, UNDECODABLE_TYPE};

use crate::bridge::{Bridge, METRIC};
use crate::config::Settings;
use crate::connection::{ConnectError, Connection, Readiness};
use crate::payload::{PayloadCodec, Shape};
use crate::resilience::{CircuitBreaker, RetryPolicy};
use crate::tracking::ProcessorRegistry;

/// How many bus requests one outbound mapping serves at once.
const OUTBOUND_CONCURRENCY: usize = 256;

/// The bridge module, `class = "axon"`, for message type `M`, with token
/// stores made by `F` (the built-in `file` and `memory` by default).
pub struct Axon<M, F = BuiltInStores> {
    settings: Arc<Settings>,
    stores: Vec<Arc<dyn TokenStore>>,
    _types: PhantomData<fn() -> (M, F)>,
}

impl<M, F> std::fmt::Debug for Axon<M, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Axon")
            .field("client_id", &self.settings.client_id)
            .field("servers", &self.settings.raw.servers)
            .field("context", &self.settings.raw.context)
            .field("token", &self.settings.raw.token)
            .finish_non_exhaustive()
    }
}

impl<M: Message, F: TokenStoreFactory> Module<M> for Axon<M, F> {
    const NAME: &'static str = "axon";
    const DESCRIPTION: &'static str =
        "bridges bus topics to AxonServer commands, events and queries";
    type Config = AxonConfig;

    fn new(config: AxonConfig) -> Result<Self, ModuleError> {
        let settings = config
            .validate(&ids::hex8())
            .map_err(|p| ModuleError::new(p.to_string()))?;
        let codec = PayloadCodec::<M>::new(
            &settings.raw.payload,
            &settings.raw.types,
            settings.raw.max_message_size,
        );
        if let Some(key) = codec.unknown_type_keys().first() {
            return Err(ModuleError::new(format!(
                "`types.{key}`: the message enum has no variant `{key}`"
            )));
        }
        if codec.shape() == Shape::Plain {
            for (i, m) in settings.raw.send_command.iter().enumerate() {
                if m.command.contains("{type}") && m.payload_type.is_none() {
                    tracing::debug!(
                        mapping = i,
                        "send-command names commands by payload type; plain messages need an `axon-payload-type` header, or get `payload.default-type`"
                    );
                }
            }
        }
        let mut stores = Vec::new();
        for (i, t) in settings.tracking.iter().enumerate() {
            let store = F::open(&t.token_store, &settings.raw.token_dir)
                .map_err(|e| ModuleError::new(format!("`tracking[{i}].token-store`: {e}")))?;
            stores.push(store);
        }
        Ok(Axon {
            settings: Arc::new(settings),
            stores,
            _types: PhantomData,
        })
    }

    async fn init(self: Arc<Self>, ctx: Context<M>) -> Result<(), ModuleError> {
        let settings = self.settings.clone();
        let readiness = Readiness::new(ctx.gauge(
            &format!("{METRIC}_state"),
            "AxonServer bridge state: 0 connecting, 1 ready, 2 degraded (a stream down or not registered).",
            &[],
        ));
        let reconnects = ctx.counter(
            &format!("{METRIC}_reconnects_total"),
            "Connections to AxonServer made again after one was lost.",
            &[],
        );
        let conn = Arc::new(
            Connection::new(settings.clone(), readiness.clone(), reconnects)
                .map_err(ModuleError::new)?,
        );
        let first = match conn.connect_any().await {
            Ok(established) => Some(established),
            Err(ConnectError::Refused { server, error }) => {
                let hint = match error.code() {
                    "AXONIQ-1000" | "AXONIQ-1001" => format!(
                        "check `module.{id}.token` (TELAMON_MODULE__{ID}__TOKEN)",
                        id = ctx.id(),
                        ID = ctx.id().to_uppercase().replace('-', "_")
                    ),
                    "AXONIQ-1302" => format!("check `module.{}.context`", ctx.id()),
                    _ => format!("check `module.{}.token` and `context`", ctx.id()),
                };
                return Err(ModuleError::new(format!(
                    "AxonServer at {server} refused the bridge: {error}; {hint}"
                )));
            }
            Err(e @ ConnectError::Unreachable { .. }) => {
                tracing::warn!(error = %e, "AxonServer not reachable yet; the bridge keeps trying and starts anyway");
                None
            }
        };
        let mut processors = ProcessorRegistry::default();
        let states: Vec<_> = settings
            .tracking
            .iter()
            .zip(&self.stores)
            .map(|(t, s)| processors.add(&t.processor, s.describe()))
            .collect();
        let processors = Arc::new(processors);
        let bridge = Arc::new(Bridge {
            codec: PayloadCodec::new(
                &settings.raw.payload,
                &settings.raw.types,
                settings.raw.max_message_size,
            ),
            retry: RetryPolicy::new(&settings.raw.retry),
            breaker: CircuitBreaker::new(
                &settings.raw.circuit_breaker,
                ctx.gauge(
                    &format!("{METRIC}_circuit_state"),
                    "Circuit breaker of outbound AxonServer calls: 0 closed, 1 open, 2 half-open.",
                    &[],
                ),
            ),
            ctx: ctx.clone(),
            settings: settings.clone(),
            conn: conn.clone(),
            handled_subscriptions: Default::default(),
            opened_subscriptions: Default::default(),
            drain: tokio_util::sync::CancellationToken::new(),
        });
        // Slots before the connection is installed, so `ready` is never
        // reported while a handler stream is still to come.
        let command_slot =
            (!settings.handle_command.is_empty()).then(|| readiness.slot("commands"));
        let query_slot = (!settings.handle_query.is_empty()).then(|| readiness.slot("queries"));
        // Connected now: `start` waits below until every handler is
        // registered (the supervisor installs the link on its own task, so
        // whether it did yet says nothing).
        let connected = first.is_some();
        ctx.run_draining(control::supervise(conn.clone(), processors, first));
        register_outbound(&bridge).await?;
        let workers = TaskTracker::new();
        // Handler streams register now, so the bridge is ready when the
        // process has started; a command or query that arrives before every
        // module is initialised waits for that (see `commands::handle`).
        if let Some(slot) = command_slot {
            ctx.run_draining(workers.track_future(commands::serve(bridge.clone(), slot)));
        }
        if let Some(slot) = query_slot {
            ctx.run_draining(workers.track_future(queries::serve(bridge.clone(), slot)));
            for (i, rule) in settings.handle_query.iter().enumerate() {
                if rule.updates.is_some() {
                    ctx.run_draining(
                        workers
                            .track_future(subscription_queries::serve_updates(bridge.clone(), i)),
                    );
                }
            }
        }
        for (i, (state, store)) in states.into_iter().zip(&self.stores).enumerate() {
            ctx.run_draining(workers.track_future(tracking::run(
                bridge.clone(),
                i,
                state,
                store.clone(),
            )));
        }
        for (i, rule) in settings.append_events.iter().enumerate() {
            let mut published = ctx.subscribe(rule.pattern.clone()).await?;
            let b = bridge.clone();
            ctx.run_draining(workers.track_future(async move {
                let rule = &b.settings.append_events[i];
                loop {
                    let delivery = tokio::select! {
                        d = published.recv() => d,
                        () = b.drain.cancelled() => None,
                    };
                    let Some(delivery) = delivery else { break };
                    events::append_published(&b, rule, &delivery).await;
                }
                // Published before the stop: still appended.
                while let Some(delivery) = published.try_recv() {
                    events::append_published(&b, rule, &delivery).await;
                }
            }));
        }
        if connected && !readiness.wait_ready(settings.raw.connect_timeout).await {
            tracing::warn!(
                state = ?readiness.state(),
                timeout = ?settings.raw.connect_timeout,
                "AxonServer bridge not ready yet (handler registrations not all acknowledged); starting anyway"
            );
        }
        // Stop in order: no new work, finish what is in hand, then close
        // the connection.
        let (b, drain_for) = (
            bridge.clone(),
            settings.raw.handler_timeout.max(Duration::from_secs(1)),
        );
        ctx.run_draining(async move {
            b.ctx.stopping().await;
            readiness.closing();
            b.drain.cancel();
            workers.close();
            if tokio::time::timeout(drain_for, workers.wait()).await.is_err() {
                tracing::warn!(timeout = ?drain_for, "AxonServer bridge work still running at its drain deadline");
            }
            b.conn.stop.cancel();
            tracing::info!("AxonServer bridge stopped");
        });
        Ok(())
    }
}

/// Registers the bus handlers of every outbound mapping.
async fn register_outbound<M: Message>(bridge: &Arc<Bridge<M>>) -> Result<(), ModuleError> {
    let ctx = &bridge.ctx;
    let options = HandleOptions::new().concurrency(OUTBOUND_CONCURRENCY);
    macro_rules! handle {
        ($pattern:expr, |$b:ident, $request:ident| $body:expr) => {{
            let b = bridge.clone();
            let _ = ctx
                .handle_with($pattern.clone(), options, move |$request| {
                    let $b = b.clone();
                    async move { $body.await.map_err(BridgeError::into_handler_error) }
                })
                .await?;
        }};
    }
    for (i, rule) in bridge.settings.send_command.iter().enumerate() {
        handle!(rule.pattern, |b, request| async move {
            commands::dispatch(&b, &b.settings.send_command[i], request).await
        });
    }
    for (i, rule) in bridge.settings.send_query.iter().enumerate() {
        handle!(rule.pattern, |b, request| async move {
            queries::send(&b, &b.settings.send_query[i], request).await
        });
    }
    for (i, rule) in bridge.settings.subscribe_query.iter().enumerate() {
        handle!(rule.pattern, |b, request| async move {
            subscription_queries::subscribe(&b, i, request).await
        });
        if let Some(cancel) = &rule.cancel_pattern {
            handle!(cancel, |b, request| async move {
                subscription_queries::cancel(&b, i, request).await
            });
        }
    }
    for (i, rule) in bridge.settings.append_events.iter().enumerate() {
        handle!(rule.pattern, |b, request| async move {
            events::append_request(&b, &b.settings.append_events[i], false, request).await
        });
    }
    for (i, rule) in bridge.settings.append_snapshot.iter().enumerate() {
        handle!(rule.pattern, |b, request| async move {
            events::append_request(&b, &b.settings.append_snapshot[i], true, request).await
        });
    }
    for (i, rule) in bridge.settings.read_aggregate.iter().enumerate() {
        handle!(rule.pattern, |b, request| async move {
            events::read(&b, &b.settings.read_aggregate[i], request).await
        });
    }
    Ok(())
}
