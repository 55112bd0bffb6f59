//! Access-token, context and client-id checks, applied to every service as
//! a tonic interceptor (the call is rejected before any handler runs), and
//! the record of the headers every call carried.
//!
//! Context decision (SEMANTICS §1, §12): like AxonServer SE, the server has a
//! single context. By default the `axoniq-context` header (or legacy
//! `context`) is accepted with any value and everything lands in the same
//! state, so a client configured for another context still works. With
//! [`ServerConfig::contexts`](crate::ServerConfig::contexts) set, a call
//! whose context (the header, or `default` without one) is not listed fails
//! with `NOT_FOUND` / AXONIQ-1302, as an Enterprise server answers for an
//! unknown context; with `require_client_id`, a call without an
//! `axoniq-clientid` header fails with `INVALID_ARGUMENT`. Both let a test
//! prove that a client sends these headers on every call.

use std::sync::{Arc, Mutex};

use telamon_axon_proto::{error_code, headers};
use tonic::service::Interceptor;
use tonic::{Code, Request, Status};

use crate::axon_status::axon_status;

/// The headers one call arrived with, as tests see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHeaders {
    /// The `axoniq-context` (or legacy `context`) header; `None` when absent.
    pub context: Option<String>,
    /// The `axoniq-clientid` header; `None` when absent.
    pub client_id: Option<String>,
    /// Whether an access token header was present (its value is never kept).
    pub token_present: bool,
    /// Whether the call was let through.
    pub accepted: bool,
}

/// Interceptor that enforces the configured token, contexts and client id.
#[derive(Clone)]
pub(crate) struct CallCheck {
    token: Option<Arc<str>>,
    contexts: Option<Arc<[String]>>,
    require_client_id: bool,
    log: Arc<Mutex<Vec<CallHeaders>>>,
}

impl std::fmt::Debug for CallCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCheck")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("contexts", &self.contexts)
            .field("require_client_id", &self.require_client_id)
            .finish()
    }
}

/// Most calls kept in the log; older ones are dropped.
const LOG_LIMIT: usize = 100_000;

impl CallCheck {
    pub(crate) fn new(config: &crate::ServerConfig, log: Arc<Mutex<Vec<CallHeaders>>>) -> Self {
        Self {
            token: config.access_token.as_deref().map(Arc::from),
            contexts: config.contexts.clone().map(Arc::from),
            require_client_id: config.require_client_id,
            log,
        }
    }

    fn check(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let context = text(headers::CONTEXT).or_else(|| text(headers::LEGACY_CONTEXT));
        if let Some(known) = &self.contexts {
            let asked = context.as_deref().unwrap_or(headers::DEFAULT_CONTEXT);
            if !known.iter().any(|c| c == asked) {
                return Err(axon_status(
                    Code::NotFound,
                    error_code::CONTEXT_NOT_FOUND,
                    &format!("Context {asked} not found"),
                ));
            }
        }
        if self.require_client_id && text(headers::CLIENT_ID).is_none_or(|c| c.is_empty()) {
            return Err(Status::invalid_argument(
                "missing axoniq-clientid header (required by this test server)",
            ));
        }
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let presented = metadata
            .get(headers::ACCESS_TOKEN)
            .or_else(|| metadata.get(headers::LEGACY_ACCESS_TOKEN));
        match presented {
            None => Err(axon_status(
                Code::PermissionDenied,
                error_code::AUTHENTICATION_TOKEN_MISSING,
                "Missing access token",
            )),
            Some(value) if value.as_bytes() == expected.as_bytes() => Ok(()),
            Some(_) => Err(axon_status(
                Code::PermissionDenied,
                error_code::AUTHENTICATION_INVALID_TOKEN,
                "Invalid access token",
            )),
        }
    }
}

impl Interceptor for CallCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata();
        let outcome = self.check(metadata);
        let text = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let entry = CallHeaders {
            context: text(headers::CONTEXT).or_else(|| text(headers::LEGACY_CONTEXT)),
            client_id: text(headers::CLIENT_ID),
            token_present: metadata.get(headers::ACCESS_TOKEN).is_some()
                || metadata.get(headers::LEGACY_ACCESS_TOKEN).is_some(),
            accepted: outcome.is_ok(),
        };
        {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            if log.len() >= LOG_LIMIT {
                log.drain(..LOG_LIMIT / 2);
            }
            log.push(entry);
        }
        outcome.map(|()| request)
    }
}

/// The `axoniq-clientid` header of a call (empty when absent), used to link
/// streams to a client before any message names it.
pub(crate) fn client_id_header<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(headers::CLIENT_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
