//! Assembling a process from registered modules and config, and running it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telamon_sdk::bus::{Lifecycle, MessageBus};
use telamon_sdk::{Context, Message, Module};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusClass, BusStats};
use crate::error::{ConfigError, ProcessError};
use crate::in_memory_bus::InMemoryClass;
use crate::loaded_config::{BusTable, Config};
use crate::metrics::Metrics;
use crate::metrics_endpoint::{self, ReadinessCheck};
use crate::process_config::ProcessConfig;
use crate::registration::{BuildError, Instance, Registration};
use crate::router::Router;
use crate::signal::shutdown_signal;

/// Built module instances with their ids, in init order.
type Instances<M> = Vec<(String, Box<dyn Instance<M>>)>;

/// A process being assembled: config, module classes, bus classes.
///
/// ```no_run
/// # use telamon_process::{ConfigLoader, Process};
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = ConfigLoader::new().embedded("[module.x]\n").load()?;
/// Process::<serde_json::Value>::new(config)
///     // .module::<MyModule>()
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
pub struct Process<M> {
    config: Config,
    registrations: Vec<Registration<M>>,
    bus_classes: Vec<Arc<dyn BusClass<M>>>,
}

impl<M: 'static> std::fmt::Debug for Process<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field(
                "modules",
                &self
                    .registrations
                    .iter()
                    .map(|r| r.name)
                    .collect::<Vec<_>>(),
            )
            .field(
                "bus_classes",
                &self
                    .bus_classes
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<M: Message> Process<M> {
    /// A process over `config` (see [`ConfigLoader`](crate::ConfigLoader)), with
    /// the `in-memory` and (feature `rabbit-mq`, on by default) `rabbit-mq` bus
    /// classes and no modules.
    pub fn new(config: Config) -> Self {
        let bus_classes: Vec<Arc<dyn BusClass<M>>> = vec![
            Arc::new(InMemoryClass),
            #[cfg(feature = "rabbit-mq")]
            Arc::new(crate::rabbit::RabbitMqClass),
        ];
        Process {
            config,
            registrations: Vec::new(),
            bus_classes,
        }
    }

    /// Registers module class `T`. Instances are made for each `[module.<id>]`
    /// whose `class` (or id) is `T::NAME`, and initialised in registration order.
    pub fn module<T: Module<M>>(mut self) -> Self {
        self.registrations.push(Registration::of::<T>());
        self
    }

    /// Registers a bus class (e.g. RabbitMQ) for `[message-bus.<id>] class = "…"`.
    pub fn bus_class(mut self, class: impl BusClass<M>) -> Self {
        self.bus_classes.push(Arc::new(class));
        self
    }

    /// Checks the whole config without starting anything: sections, keys and
    /// values, that every module and bus class is registered, and every
    /// module's and bus's own table. [`start`](Self::start) does the same first.
    pub fn check(&self) -> Result<(), ProcessError> {
        self.plan().map(|_| ())
    }

    /// The parsed config and a built (not yet initialised) instance of every
    /// configured module, so a config error anywhere stops startup before
    /// anything connects or runs.
    fn plan(&self) -> Result<(ProcessConfig, Instances<M>), ProcessError> {
        for (i, r) in self.registrations.iter().enumerate() {
            if self.registrations[..i].iter().any(|o| o.name == r.name) {
                return Err(ProcessError::DuplicateClass(r.name.to_owned()));
            }
        }
        let spec = ProcessConfig::parse(&self.config.0)?;
        for m in &spec.modules {
            if !self.registrations.iter().any(|r| r.name == m.class) {
                let known: Vec<&str> = self.registrations.iter().map(|r| r.name).collect();
                let key = if m.class == m.id {
                    format!("module.{}", m.id)
                } else {
                    format!("module.{}.class", m.id)
                };
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "no registered module class `{}` (registered: {})",
                        m.class,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                )
                .into());
            }
        }
        for b in &spec.buses {
            self.class_of(&b.id, &b.class)?
                .check(&b.id, BusTable::new(&b.id, b.config.clone()))?;
        }
        let mut instances: Instances<M> = Vec::new();
        for r in &self.registrations {
            for m in spec.modules.iter().filter(|m| m.class == r.name) {
                match (r.build)(&m.id, m.config.clone()) {
                    Ok(instance) => {
                        tracing::debug!(module = %m.id, class = r.name, description = r.description, "built");
                        instances.push((m.id.clone(), instance));
                    }
                    Err(BuildError::Config(e)) => return Err(e.into()),
                    Err(BuildError::Module(e)) => {
                        return Err(ProcessError::Module {
                            module: m.id.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok((spec, instances))
    }

    /// The registered class for `[message-bus.<id>] class`.
    fn class_of(&self, id: &str, class: &str) -> Result<&Arc<dyn BusClass<M>>, ConfigError> {
        self.bus_classes
            .iter()
            .find(|c| c.name() == class)
            .ok_or_else(|| {
                let known: Vec<&str> = self.bus_classes.iter().map(|c| c.name()).collect();
                ConfigError::invalid(
                    format!("message-bus.{id}.class"),
                    format!(
                        "unknown bus class `{class}` (available: {})",
                        known.join(", ")
                    ),
                )
            })
    }

    /// Builds every bus; on a failure closes the ones already built.
    async fn build_buses(
        &self,
        spec: &ProcessConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Vec<Arc<dyn Bus<M>>>, ProcessError> {
        let mut buses: Vec<Arc<dyn Bus<M>>> = Vec::new();
        for b in &spec.buses {
            let built = self.class_of(&b.id, &b.class).and_then(|class| {
                class.build(
                    &b.id,
                    BusTable::new(&b.id, b.config.clone()),
                    metrics.clone(),
                )
            });
            match built {
                Ok(bus) => buses.push(bus),
                Err(e) => {
                    shutdown_all(&buses).await;
                    return Err(e.into());
                }
            }
        }
        for bus in &buses {
            match bus.wait_connected(spec.process.connect_timeout).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    bus = bus.id(),
                    timeout = ?spec.process.connect_timeout,
                    "bus not connected yet; starting anyway, it connects when its broker appears"
                ),
                Err(refused) => {
                    shutdown_all(&buses).await;
                    return Err(refused.into());
                }
            }
        }
        Ok(buses)
    }

    /// Checks the config, builds modules and buses, initialises the modules in
    /// order and starts their tasks.
    pub async fn start(self) -> Result<RunningProcess<M>, ProcessError> {
        let (spec, instances) = self.plan()?;
        let metrics = Arc::new(match &spec.metrics {
            Some(m) => Metrics::with_max_topics(m.max_topics),
            None => Metrics::new(false),
        });
        let buses = self.build_buses(&spec, &metrics).await?;
        let router = Arc::new(router(&spec, &buses, &metrics));
        let lifecycle = Arc::new(Lifecycle::new());
        metrics.attach_instruments(lifecycle.instruments().clone());
        let running = RunningProcess {
            lifecycle: lifecycle.clone(),
            router,
            buses,
            metrics,
            metrics_address: None,
            endpoint_stop: CancellationToken::new(),
            shutdown_timeout: spec.process.shutdown_timeout,
            modules: instances.iter().map(|(id, _)| id.clone()).collect(),
        };
        // Served before the modules initialise, so `/ready` says which are not yet.
        let pending = Arc::new(std::sync::Mutex::new(running.modules.clone()));
        let running = running.serve_endpoint(&spec, pending.clone()).await?;
        let running = running.init_modules(&instances, &pending).await?;
        // Logged before any module task runs, so the log reads in order.
        tracing::info!(modules = ?running.modules, "process started");
        lifecycle.mark_ready();
        Ok(running)
    }

    /// Starts, runs until Ctrl-C, SIGTERM or a module's `request_stop`, then stops.
    pub async fn run(self) -> Result<StopReport, ProcessError> {
        let running = self.start().await?;
        running.wait_for_stop().await;
        Ok(running.stop().await)
    }
}

/// The router over the built buses, routes in config order.
fn router<M: Message>(
    spec: &ProcessConfig,
    buses: &[Arc<dyn Bus<M>>],
    metrics: &Arc<Metrics>,
) -> Router<M> {
    let routes = spec
        .router
        .routes
        .iter()
        .map(|r| {
            // Routes name declared buses only (checked when parsed).
            let on: Vec<Arc<dyn Bus<M>>> = r
                .buses
                .iter()
                .filter_map(|id| buses.iter().find(|b| b.id() == id).cloned())
                .collect();
            (r.pattern.clone(), on)
        })
        .collect();
    Router::new(
        routes,
        spec.router.request_timeout,
        spec.router.unrouted,
        metrics.clone(),
    )
}

/// Closes buses built before a failed start.
async fn shutdown_all<M: 'static>(buses: &[Arc<dyn Bus<M>>]) {
    for bus in buses {
        bus.shutdown(Duration::ZERO).await;
    }
}

/// A started process.
pub struct RunningProcess<M> {
    lifecycle: Arc<Lifecycle>,
    router: Arc<Router<M>>,
    buses: Vec<Arc<dyn Bus<M>>>,
    metrics: Arc<Metrics>,
    metrics_address: Option<SocketAddr>,
    endpoint_stop: CancellationToken,
    shutdown_timeout: Duration,
    modules: Vec<String>,
}

impl<M: 'static> std::fmt::Debug for RunningProcess<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProcess")
            .field("modules", &self.modules)
            .field("router", &self.router)
            .field("lifecycle", &self.lifecycle)
            .finish()
    }
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StopReport {
    /// Every task and handler ended within the shutdown timeout.
    pub drained: bool,
    /// Tasks still running at the deadline, which were aborted.
    pub aborted: usize,
    /// Messages published at-least-once whose broker confirm had not come
    /// by the deadline: they may be lost.
    pub unconfirmed: usize,
    /// Module tasks or handlers that panicked during the process's life.
    pub panics: u64,
    /// How long the stop took.
    pub elapsed: Duration,
}

impl<M: Message> RunningProcess<M> {
    /// Initialises the modules in order; the first failure stops what started.
    async fn init_modules(
        self,
        instances: &Instances<M>,
        pending: &std::sync::Mutex<Vec<String>>,
    ) -> Result<Self, ProcessError> {
        for (id, instance) in instances {
            tracing::debug!(module = %id, "initialising");
            if let Err(e) = instance.init(self.context(id.as_str())).await {
                self.stop().await;
                return Err(ProcessError::Module {
                    module: id.clone(),
                    message: e.to_string(),
                });
            }
            pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|m| m != id);
        }
        Ok(self)
    }

    /// What `/ready` reports: modules not initialised yet, buses not connected.
    fn readiness(&self, pending: Arc<std::sync::Mutex<Vec<String>>>) -> ReadinessCheck {
        let buses = self.buses.clone();
        Arc::new(move || {
            let mut missing: Vec<String> = pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|m| format!("module `{m}`: not initialised"))
                .collect();
            for bus in &buses {
                let stats = bus.stats();
                if !stats.connected {
                    missing.push(match stats.refused {
                        Some(why) => format!("bus `{}`: the broker refuses {why}", bus.id()),
                        None => format!("bus `{}`: not connected", bus.id()),
                    });
                }
            }
            missing
        })
    }

    /// Opens `/metrics`, `/health` and `/ready` when `[metrics]` is configured.
    async fn serve_endpoint(
        mut self,
        spec: &ProcessConfig,
        pending: Arc<std::sync::Mutex<Vec<String>>>,
    ) -> Result<Self, ProcessError> {
        let Some(m) = &spec.metrics else {
            return Ok(self);
        };
        let stop = self.endpoint_stop.clone();
        let ready = self.readiness(pending);
        match metrics_endpoint::serve(&m.address, self.metrics.clone(), ready, stop).await {
            Ok(addr) => {
                tracing::info!(address = %addr, "metrics at http://{addr}/metrics, also /health and /ready");
                self.metrics_address = Some(addr);
                Ok(self)
            }
            Err(source) => {
                self.stop().await;
                Err(ProcessError::Metrics {
                    address: m.address.clone(),
                    source,
                })
            }
        }
    }

    /// A context for code outside any module (tests, embedding applications).
    pub fn context(&self, id: &str) -> Context<M> {
        let bus: Arc<dyn MessageBus<M>> = self.router.clone();
        Context::new(id, bus, self.lifecycle.clone())
    }

    /// Module instance ids, in init order.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// Subscription and handler counts per bus.
    pub fn bus_stats(&self) -> Vec<(String, BusStats)> {
        self.buses
            .iter()
            .map(|b| (b.id().to_owned(), b.stats()))
            .collect()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Where `/metrics` listens, when `[metrics]` is configured.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_address
    }

    /// Module tasks and handler loops still running.
    pub fn task_count(&self) -> usize {
        self.lifecycle.tracker().len()
    }

    /// Module tasks or handlers that panicked so far.
    pub fn panics(&self) -> u64 {
        self.lifecycle.panics()
    }

    /// Asks the process to stop, as a signal would.
    pub fn request_stop(&self) {
        self.lifecycle.request_stop();
    }

    /// Waits for Ctrl-C, SIGTERM or a stop request.
    pub async fn wait_for_stop(&self) {
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = self.lifecycle.stop_requested() => tracing::info!("stop requested; stopping"),
        }
    }

    /// Stops: cancels tasks, lets handlers finish what is in flight within
    /// `[process] shutdown-timeout`, aborts what is left, closes the buses.
    pub async fn stop(self) -> StopReport {
        let started = Instant::now();
        self.lifecycle.cancel();
        self.endpoint_stop.cancel();
        let drained = tokio::time::timeout(self.shutdown_timeout, self.lifecycle.tracker().wait())
            .await
            .is_ok();
        let aborted = if drained {
            0
        } else {
            self.lifecycle.abort_all()
        };
        if !drained {
            tracing::warn!(aborted, timeout = ?self.shutdown_timeout, "tasks still running at the shutdown deadline were aborted");
        }
        let mut unconfirmed = 0;
        for bus in &self.buses {
            let left = self.shutdown_timeout.saturating_sub(started.elapsed());
            unconfirmed += bus.shutdown(left).await;
        }
        let report = StopReport {
            drained,
            aborted,
            unconfirmed,
            panics: self.lifecycle.panics(),
            elapsed: started.elapsed(),
        };
        tracing::info!(?report, "process stopped");
        report
    }
}
