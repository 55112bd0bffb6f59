//! Loading config: embedded defaults, then files, then environment overrides.

use std::path::PathBuf;

use config::{Environment, File, FileFormat};

use crate::loaded_config::Config;

use crate::error::ConfigError;
use crate::process_config::TOP_LEVEL;

/// The default environment prefix: `TELAMON_MODULE__CLOCK__INTERVAL=2s` sets
/// `[module.clock] interval`.
pub const DEFAULT_ENV_PREFIX: &str = "TELAMON";

/// The variables that address a config section (`<PREFIX>_MODULE__…`,
/// `<PREFIX>_MESSAGE_BUS__…`, …). Others that merely share the prefix — a test
/// suite's `TELAMON_TEST_AMQP_URL`, say — are not config and are left out,
/// while a misspelt key inside a known section still reaches the checks.
fn config_vars(
    prefix: &str,
    vars: Vec<(String, String)>,
) -> std::collections::HashMap<String, String> {
    let head = format!("{prefix}_").to_ascii_uppercase();
    vars.into_iter()
        .filter(|(name, _)| {
            let upper = name.to_ascii_uppercase();
            let Some(rest) = upper.strip_prefix(&head) else {
                return false;
            };
            let section = rest.split("__").next().unwrap_or("");
            let known = TOP_LEVEL
                .iter()
                .any(|s| s.replace('-', "_").eq_ignore_ascii_case(section));
            if !known {
                tracing::debug!(variable = %name, "not a config section; ignored");
            }
            known
        })
        .collect()
}

/// Builds the layered config of a process. Later layers win.
///
/// 1. embedded TOML (the defaults a binary ships with, via `include_str!`);
/// 2. TOML files, in order (a missing file is an error, never silently skipped);
/// 3. environment variables `<PREFIX>_<KEY>` where `__` separates nested keys and
///    `_` inside a key stands for `-` (so `TELAMON_MESSAGE_ROUTER__REQUEST_TIMEOUT=2`
///    sets `message-router.request-timeout`). Only variables whose first word
///    names a section (`PROCESS`, `MODULE`, `MESSAGE_BUS`, `MESSAGE_ROUTER`,
///    `METRICS`) are read; `TELAMON_TEST_AMQP_URL` and the like are not config.
///
/// ```
/// # use telamon_process::ConfigLoader;
/// let config = ConfigLoader::new()
///     .embedded("[module.clock]\ninterval = \"1s\"\n")
///     .env_prefix(None)
///     .load()
///     .unwrap();
/// assert_eq!(config.get::<String>("module.clock.interval").unwrap(), "1s");
/// ```
#[derive(Clone)]
pub struct ConfigLoader {
    embedded: Vec<String>,
    files: Vec<PathBuf>,
    env_prefix: Option<String>,
    env_vars: Option<Vec<(String, String)>>,
}

/// Shows the layers, never their contents (they may hold passwords).
impl std::fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("embedded", &self.embedded.len())
            .field("files", &self.files)
            .field("env_prefix", &self.env_prefix)
            .field("env_vars", &self.env_vars.as_ref().map(Vec::len))
            .finish()
    }
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigLoader {
    /// No layers yet; environment prefix [`DEFAULT_ENV_PREFIX`].
    pub fn new() -> Self {
        ConfigLoader {
            embedded: Vec::new(),
            files: Vec::new(),
            env_prefix: Some(DEFAULT_ENV_PREFIX.to_owned()),
            env_vars: None,
        }
    }

    /// Adds TOML text (usually `include_str!` of the binary's default config).
    pub fn embedded(mut self, toml: impl Into<String>) -> Self {
        self.embedded.push(toml.into());
        self
    }

    /// Adds a TOML file that must exist.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(path.into());
        self
    }

    /// Adds the file named by the first command-line argument, if there is one.
    pub fn args(self) -> Self {
        match std::env::args().nth(1) {
            Some(path) if !path.starts_with('-') => self.file(path),
            _ => self,
        }
    }

    /// Sets the environment prefix; `None` reads no environment variables.
    pub fn env_prefix(mut self, prefix: Option<&str>) -> Self {
        self.env_prefix = prefix.map(str::to_owned);
        self
    }

    /// Reads environment overrides from `vars` instead of the process
    /// environment (for tests and embedding; the prefix still applies).
    pub fn env_vars<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env_vars = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Reads every layer.
    pub fn load(self) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        for text in &self.embedded {
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        for path in &self.files {
            if !path.is_file() {
                return Err(ConfigError::load_message(format!(
                    "config file `{}` does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path.as_path()).format(FileFormat::Toml));
        }
        if let Some(prefix) = &self.env_prefix {
            let vars = self
                .env_vars
                .clone()
                .unwrap_or_else(|| std::env::vars().collect());
            builder = builder.add_source(
                Environment::with_prefix(prefix)
                    .prefix_separator("_")
                    .separator("__")
                    .convert_case(config::Case::Kebab)
                    .source(Some(config_vars(prefix, vars))),
            );
        }
        builder.build().map(Config).map_err(ConfigError::load)
    }
}
