//! The typed shape of a process's config, checked at startup.
//!
//! Every section rejects unknown keys, every reference (route → bus, module id →
//! registered class) is resolved, and every error names the key.

use std::collections::HashSet;
use std::time::Duration;

use config::{Config, Value, ValueKind};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use telamon_sdk::Pattern;

use crate::error::ConfigError;
use telamon_sdk::duration;

/// `[process]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ProcessSection {
    /// How long stop waits for tasks and handlers to finish before aborting them.
    #[serde(deserialize_with = "duration::deserialize")]
    pub(crate) shutdown_timeout: Duration,
    /// How long start waits for broker-backed buses to connect before going on without them.
    #[serde(deserialize_with = "duration::deserialize")]
    pub(crate) connect_timeout: Duration,
}

/// Default of `[process] shutdown-timeout`.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of `[process] connect-timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of `[message-router] request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ProcessSection {
    fn default() -> Self {
        ProcessSection {
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// What the router does with a publish that matches no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unrouted {
    /// The publisher gets `PublishError::NoRoute` (default).
    #[default]
    Error,
    /// The message is dropped, counted (`telamon_unrouted_total`) and logged at warn.
    Drop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    pattern: String,
    bus: OneOrMany,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
struct RawRouter {
    #[serde(deserialize_with = "duration::deserialize")]
    request_timeout: Duration,
    unrouted: Unrouted,
    route: Vec<RawRoute>,
}

impl Default for RawRouter {
    fn default() -> Self {
        RawRouter {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            unrouted: Unrouted::Error,
            route: Vec::new(),
        }
    }
}

/// One `[[message-router.route]]`.
#[derive(Debug, Clone)]
pub(crate) struct RouteSpec {
    pub(crate) pattern: Pattern,
    pub(crate) buses: Vec<String>,
}

/// `[message-router]`.
#[derive(Debug, Clone)]
pub(crate) struct RouterSpec {
    pub(crate) request_timeout: Duration,
    pub(crate) unrouted: Unrouted,
    pub(crate) routes: Vec<RouteSpec>,
}

/// One `[message-bus.<id>]`.
#[derive(Debug, Clone)]
pub(crate) struct BusSpec {
    pub(crate) id: String,
    pub(crate) class: String,
    /// The table without `class`.
    pub(crate) config: Value,
}

/// One `[module.<id>]`.
#[derive(Debug, Clone)]
pub(crate) struct ModuleSpec {
    pub(crate) id: String,
    pub(crate) class: String,
    /// The table without `class`.
    pub(crate) config: Value,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct MetricsSpec {
    /// Where `/metrics` listens, e.g. `127.0.0.1:9464`.
    pub(crate) address: String,
    /// Distinct topics with series of their own; the rest share `topic="#"`.
    #[serde(default = "default_max_topics")]
    pub(crate) max_topics: usize,
}

fn default_max_topics() -> usize {
    crate::metrics::DEFAULT_MAX_TOPICS
}

/// The whole checked config.
#[derive(Debug, Clone)]
pub(crate) struct ProcessConfig {
    pub(crate) process: ProcessSection,
    pub(crate) buses: Vec<BusSpec>,
    pub(crate) router: RouterSpec,
    pub(crate) modules: Vec<ModuleSpec>,
    pub(crate) metrics: Option<MetricsSpec>,
}

/// The sections a process config may have.
pub(crate) const TOP_LEVEL: [&str; 5] = [
    "process",
    "message-bus",
    "message-router",
    "module",
    "metrics",
];

/// Id of the bus made when the config declares none.
pub const DEFAULT_BUS_ID: &str = "internal";

impl ProcessConfig {
    /// Checks the shape of `config`. Module classes and bus classes are checked
    /// by the process, which knows what is registered.
    pub(crate) fn parse(config: &Config) -> Result<Self, ConfigError> {
        let root = config
            .clone()
            .try_deserialize::<Value>()
            .and_then(Value::into_table)
            .map_err(ConfigError::load)?;
        for key in root.keys() {
            if !TOP_LEVEL.contains(&key.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "unknown section (expected one of: {})",
                        TOP_LEVEL.join(", ")
                    ),
                ));
            }
        }
        let process: ProcessSection = match root.get("process") {
            Some(v) => typed("process", v.clone())?,
            None => ProcessSection::default(),
        };
        let metrics = match root.get("metrics") {
            Some(v) => Some(typed::<MetricsSpec>("metrics", v.clone())?),
            None => None,
        };
        let mut buses = Vec::new();
        for (id, value) in tables("message-bus", root.get("message-bus"))? {
            let key = format!("message-bus.{id}");
            let (class, config) = split_class(&key, value)?;
            let class = class.ok_or_else(|| {
                ConfigError::invalid(&key, "missing `class` (e.g. class = \"in-memory\")")
            })?;
            buses.push(BusSpec { id, class, config });
        }
        let raw_router: RawRouter = match root.get("message-router") {
            Some(v) => typed("message-router", v.clone())?,
            None => RawRouter::default(),
        };
        if buses.is_empty() {
            if !raw_router.route.is_empty() {
                return Err(ConfigError::invalid(
                    "message-router.route",
                    "routes are configured but no [message-bus.<id>] is declared",
                ));
            }
            buses.push(BusSpec {
                id: DEFAULT_BUS_ID.to_owned(),
                class: "in-memory".to_owned(),
                config: Value::new(None, ValueKind::Table(Default::default())),
            });
        }
        let bus_ids: HashSet<&str> = buses.iter().map(|b| b.id.as_str()).collect();
        let mut routes = Vec::new();
        for (i, raw) in raw_router.route.iter().enumerate() {
            let key = format!("message-router.route[{i}]");
            let pattern = Pattern::new(&raw.pattern)
                .map_err(|e| ConfigError::invalid(format!("{key}.pattern"), e.to_string()))?;
            let list = match &raw.bus {
                OneOrMany::One(b) => vec![b.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            if list.is_empty() {
                return Err(ConfigError::invalid(format!("{key}.bus"), "names no bus"));
            }
            for b in &list {
                if !bus_ids.contains(b.as_str()) {
                    let mut known: Vec<&str> = bus_ids.iter().copied().collect();
                    known.sort_unstable();
                    return Err(ConfigError::invalid(
                        format!("{key}.bus"),
                        format!("bus `{b}` is not declared (declared: {})", known.join(", ")),
                    ));
                }
            }
            routes.push(RouteSpec {
                pattern,
                buses: list,
            });
        }
        if routes.is_empty() {
            if buses.len() > 1 {
                return Err(ConfigError::invalid(
                    "message-router.route",
                    "several buses are declared but no route says which carries what",
                ));
            }
            routes.push(RouteSpec {
                pattern: Pattern::new("#").expect("`#` is a valid pattern"),
                buses: vec![buses[0].id.clone()],
            });
        }
        let mut modules = Vec::new();
        for (id, value) in tables("module", root.get("module"))? {
            let key = format!("module.{id}");
            let (class, config) = split_class(&key, value)?;
            let class = class.unwrap_or_else(|| id.clone());
            modules.push(ModuleSpec { id, class, config });
        }
        Ok(ProcessConfig {
            process,
            buses,
            router: RouterSpec {
                request_timeout: raw_router.request_timeout,
                unrouted: raw_router.unrouted,
                routes,
            },
            modules,
            metrics,
        })
    }
}

/// Deserialises `value` into `T`, naming `key` on failure.
pub(crate) fn typed<T: DeserializeOwned>(key: &str, value: Value) -> Result<T, ConfigError> {
    value
        .try_deserialize()
        .map_err(|e| ConfigError::invalid(key, e.to_string()))
}

/// The `<id> = table` entries of a section such as `[module.*]`, sorted by id.
fn tables(section: &str, value: Option<&Value>) -> Result<Vec<(String, Value)>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let table = value
        .clone()
        .into_table()
        .map_err(|_| ConfigError::invalid(section, "must be a table of tables"))?;
    let mut out = Vec::new();
    for (id, v) in table {
        let key = format!("{section}.{id}");
        if Pattern::new(&id).is_err() || id.contains('.') {
            return Err(ConfigError::invalid(
                &key,
                "ids are single words of letters, digits, `-` and `_`",
            ));
        }
        if !matches!(v.kind, ValueKind::Table(_)) {
            return Err(ConfigError::invalid(&key, "must be a table"));
        }
        out.push((id, v));
    }
    // Tables come from a hash map: sort so that instances of one class init in
    // a stable (alphabetical id) order.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Splits `class` off a table.
fn split_class(key: &str, value: Value) -> Result<(Option<String>, Value), ConfigError> {
    let origin = value.origin().map(str::to_owned);
    let mut table = value
        .into_table()
        .map_err(|_| ConfigError::invalid(key, "must be a table"))?;
    let class = match table.remove("class") {
        None => None,
        Some(v) => Some(
            v.into_string()
                .map_err(|_| ConfigError::invalid(format!("{key}.class"), "must be a string"))?,
        ),
    };
    Ok((class, Value::new(origin.as_ref(), ValueKind::Table(table))))
}
