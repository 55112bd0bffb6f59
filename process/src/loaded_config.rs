//! A loaded config, and the table a bus class reads, without the `config`
//! crate's types in the public API (so it can change underneath).

use std::fmt;

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// A process's config as [`ConfigLoader`](crate::ConfigLoader) loaded it:
/// every layer merged. `Debug` shows no values (they may hold passwords).
///
/// ```
/// # use telamon_process::ConfigLoader;
/// let config = ConfigLoader::new()
///     .embedded("[module.clock]\ninterval = \"1s\"\n")
///     .env_prefix(None)
///     .load()
///     .unwrap();
/// assert_eq!(config.get::<String>("module.clock.interval").unwrap(), "1s");
/// let err = config.get::<u64>("module.clock.interval").unwrap_err();
/// assert_eq!(err.key(), Some("module.clock.interval"));
/// ```
#[derive(Clone)]
pub struct Config(pub(crate) config::Config);

impl Config {
    /// The value at `key` (dotted: `module.clock.interval`), deserialised;
    /// an error names the key.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T, ConfigError> {
        self.0
            .get::<T>(key)
            .map_err(|e| ConfigError::invalid(key, e.to_string()))
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config").finish_non_exhaustive()
    }
}

/// One `[message-bus.<id>]` table, without `class`, for a
/// [`BusClass`](crate::BusClass) to read. `Debug` shows the key only.
#[derive(Clone)]
pub struct BusTable {
    key: String,
    value: config::Value,
}

impl BusTable {
    pub(crate) fn new(id: &str, value: config::Value) -> Self {
        BusTable {
            key: format!("message-bus.{id}"),
            value,
        }
    }

    /// `message-bus.<id>`, for error messages.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The table as the bus's config type; an error names the key.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        crate::process_config::typed(&self.key, self.value)
    }
}

impl fmt::Debug for BusTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusTable")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
