//! Errors of assembling, starting and running a process.

use std::sync::Arc;

/// A config problem, found at startup, naming the key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The sources could not be read or parsed (file missing, bad TOML …).
    #[error("cannot load config: {message}")]
    Load {
        /// What went wrong.
        message: String,
        /// The loader's own error, where there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A key holds a value of the wrong shape, or an unknown key is present.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// The dotted key, e.g. `message-bus.internal`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
        }
    }

    /// A loading failure that keeps the loader's error as its source.
    pub(crate) fn load(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConfigError::Load {
            message: source.to_string(),
            source: Some(Arc::new(source)),
        }
    }

    /// A loading failure with no underlying error.
    pub(crate) fn load_message(message: impl Into<String>) -> Self {
        ConfigError::Load {
            message: message.into(),
            source: None,
        }
    }

    /// The key at fault, if the problem is one key's.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Load { .. } => None,
        }
    }

    /// True when the sources could not be read or parsed at all.
    pub fn is_load(&self) -> bool {
        matches!(self, ConfigError::Load { .. })
    }
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The config is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A module's constructor or `init` failed; startup stopped.
    #[error("module `{module}` failed to start: {message}")]
    Module {
        /// The module instance id.
        module: String,
        /// The module's error.
        message: String,
    },
    /// Two modules were registered with the same class name.
    #[error("module class `{0}` is registered twice")]
    DuplicateClass(String),
    /// A bus could not be built.
    #[error("bus `{bus}`: {message}")]
    Bus {
        /// The bus id.
        bus: String,
        /// What went wrong.
        message: String,
    },
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint on {address}: {source}")]
    Metrics {
        /// The address from `[metrics] address`.
        address: String,
        /// Why it could not listen.
        #[source]
        source: std::io::Error,
    },
}

impl ProcessError {
    /// The config problem, if the config was at fault.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            ProcessError::Config(e) => Some(e),
            _ => None,
        }
    }

    /// The config key at fault, if there is one.
    pub fn config_key(&self) -> Option<&str> {
        self.config_error().and_then(ConfigError::key)
    }

    /// The module instance that failed to start, if one did.
    pub fn failed_module(&self) -> Option<&str> {
        match self {
            ProcessError::Module { module, .. } => Some(module),
            _ => None,
        }
    }
}
