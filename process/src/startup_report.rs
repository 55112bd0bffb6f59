//! One readable report of why a process did not start — what is at fault
//! (a config key, a module, a bus, an address), the problem, and the fix —
//! for `main` to print instead of an error's `Debug` and a backtrace.
//!
//! ```no_run
//! use serde_json::Value;
//! use telamon_process::{ConfigLoader, OrExit, Process};
//!
//! #[tokio::main]
//! async fn main() {
//!     let config = ConfigLoader::new().args().load().or_exit();
//!     Process::<Value>::new(config).run().await.or_exit();
//! }
//! ```
//!
//! On a failure `or_exit` writes the report to stderr and exits with status
//! 78 (`EX_CONFIG`) for a config problem the runtime finds (a
//! [`ConfigError`]), 1 for anything else — a module refusing its settings
//! included — the same with
//! `RUST_BACKTRACE` set: a startup failure is the operator's to fix, not a
//! bug, so it carries no backtrace.

use std::fmt;

use crate::config_loader::DEFAULT_ENV_PREFIX;
use crate::error::{ConfigError, ProcessError};

/// Exit status for a config problem (`EX_CONFIG` of sysexits.h).
pub const EXIT_CONFIG: i32 = 78;
/// Exit status for any other startup failure.
pub const EXIT_FAILURE: i32 = 1;

/// What is wrong, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartupReport {
    /// What is at fault: `config key `message-bus.external.prefetch``, `module `clock``, …
    pub subject: String,
    /// The problem, as the failing part put it.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
    /// The exit status `or_exit` uses.
    pub exit_status: i32,
}

impl StartupReport {
    /// The report for `error`.
    pub fn of(error: &ProcessError) -> Self {
        let (subject, problem, fix, exit_status) = match error {
            ProcessError::Config(ConfigError::Invalid { key, problem }) => {
                match unknown_field(problem) {
                    // serde names the section; the report names the key itself.
                    Some(field) => {
                        let key = format!("{key}.{field}");
                        (
                            format!("config key `{key}`"),
                            problem.clone(),
                            format!(
                                "`{key}` is not a key: correct its name (the problem lists the keys the section takes) in the config file, or in the environment variable {} if it is set there",
                                env_name(&key)
                            ),
                            EXIT_CONFIG,
                        )
                    }
                    None => (
                        format!("config key `{key}`"),
                        problem.clone(),
                        format!(
                            "correct `{key}` in the config file, or in the environment variable {} if it is set there (docs/configuration.md lists every key)",
                            env_name(key)
                        ),
                        EXIT_CONFIG,
                    ),
                }
            }
            ProcessError::Config(ConfigError::Load { message, .. }) => (
                "the config".to_owned(),
                message.clone(),
                "check that the file exists and is valid TOML (the message names the file and the line)".to_owned(),
                EXIT_CONFIG,
            ),
            ProcessError::Module { module, message } => (
                format!("module `{module}`"),
                message.clone(),
                format!("check its settings under [module.{module}] and what it connects to"),
                EXIT_FAILURE,
            ),
            ProcessError::DuplicateClass(class) => (
                format!("module class `{class}`"),
                "registered twice".to_owned(),
                "register each module class once in main (several instances come from config: [module.<id>] class = ...)".to_owned(),
                EXIT_FAILURE,
            ),
            ProcessError::Bus { bus, message } => (
                format!("bus `{bus}`"),
                message.clone(),
                format!("check [message-bus.{bus}] and that its broker is reachable"),
                EXIT_FAILURE,
            ),
            ProcessError::Metrics { address, source } => (
                format!("address {address} ([metrics] address)"),
                source.to_string(),
                "choose a free port (\"127.0.0.1:0\" picks one) or stop what listens there".to_owned(),
                EXIT_FAILURE,
            ),
        };
        StartupReport {
            subject,
            problem,
            fix,
            exit_status,
        }
    }
}

impl fmt::Display for StartupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cannot start: {}", self.subject)?;
        writeln!(f, "  problem: {}", self.problem)?;
        write!(f, "  fix:     {}", self.fix)
    }
}

/// `F` of serde's "unknown field `F`, expected …".
fn unknown_field(problem: &str) -> Option<&str> {
    let rest = problem.strip_prefix("unknown field `")?;
    rest.split('`').next().filter(|f| !f.is_empty())
}

/// The environment variable that sets `key` (`message-bus.x.prefetch` →
/// `TELAMON_MESSAGE_BUS__X__PREFETCH`).
fn env_name(key: &str) -> String {
    let path: Vec<String> = key
        .split('.')
        .map(|part| part.replace('-', "_").to_uppercase())
        .collect();
    format!("{DEFAULT_ENV_PREFIX}_{}", path.join("__"))
}

/// Ends `main` with a [`StartupReport`] instead of a panic or a backtrace.
pub trait OrExit<T> {
    /// The value, or: the report on stderr and the process exits.
    fn or_exit(self) -> T;
}

impl<T, E: Into<ProcessError>> OrExit<T> for Result<T, E> {
    fn or_exit(self) -> T {
        match self {
            Ok(value) => value,
            Err(error) => {
                let report = StartupReport::of(&error.into());
                eprintln!("{report}");
                std::process::exit(report.exit_status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_key_names_its_environment_variable() {
        assert_eq!(
            env_name("message-bus.external.prefetch"),
            "TELAMON_MESSAGE_BUS__EXTERNAL__PREFETCH"
        );
        let report = StartupReport::of(&ProcessError::Config(ConfigError::invalid(
            "message-router",
            "unknown field `request-timout`, expected one of `request-timeout`",
        )));
        assert_eq!(report.subject, "config key `message-router.request-timout`");
        assert_eq!(report.exit_status, EXIT_CONFIG);
        assert!(
            report
                .to_string()
                .contains("TELAMON_MESSAGE_ROUTER__REQUEST_TIMOUT"),
            "{report}"
        );
    }
}
