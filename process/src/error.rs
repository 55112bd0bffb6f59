//! Errors of assembling, starting and running a process.

/// A config problem, found at startup, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The sources could not be read or parsed (file missing, bad TOML …).
    #[error("cannot load config: {0}")]
    Load(String),
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
    #[error("metrics endpoint on {address}: {message}")]
    Metrics {
        /// The address from `[metrics] address`.
        address: String,
        /// What went wrong.
        message: String,
    },
}
