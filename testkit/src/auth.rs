//! Access-token check and context handling, applied to every service as a
//! tonic interceptor (the call is rejected before any handler runs).
//!
//! Context decision (SEMANTICS §1, §12): like AxonServer SE, the server has a
//! single context. The `axoniq-context` header (or legacy `context`) is
//! accepted with any value and everything lands in the same state, so a
//! client configured for another context still works.

use std::sync::Arc;

use telamon_axon_proto::{error_code, headers};
use tonic::service::Interceptor;
use tonic::{Code, Request, Status};

use crate::axon_status::axon_status;

/// Interceptor that enforces the configured access token, if any.
#[derive(Clone)]
pub(crate) struct AccessTokenCheck {
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for AccessTokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenCheck")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl AccessTokenCheck {
    pub(crate) fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(Arc::from),
        }
    }
}

impl Interceptor for AccessTokenCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let metadata = request.metadata();
        let presented = metadata
            .get(headers::ACCESS_TOKEN)
            .or_else(|| metadata.get(headers::LEGACY_ACCESS_TOKEN));
        match presented {
            None => Err(axon_status(
                Code::PermissionDenied,
                error_code::AUTHENTICATION_TOKEN_MISSING,
                "Missing access token",
            )),
            Some(value) if value.as_bytes() == expected.as_bytes() => Ok(request),
            Some(_) => Err(axon_status(
                Code::PermissionDenied,
                error_code::AUTHENTICATION_INVALID_TOKEN,
                "Invalid access token",
            )),
        }
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
