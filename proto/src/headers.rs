//! gRPC metadata names used by AxonServer.
//!
//! All values travel as ASCII metadata. HTTP/2 header names are lower-case on
//! the wire, and `tonic::metadata::MetadataKey::from_static` only accepts
//! lower-case names, so every name here is lower-case.

/// Request header naming the bounded context of a call (every call).
pub const CONTEXT: &str = "axoniq-context";

/// Request header carrying the access token, when access control is on.
pub const ACCESS_TOKEN: &str = "axoniq-access-token";

/// Request header carrying the client instance id (informational).
pub const CLIENT_ID: &str = "axoniq-clientid";

/// Response trailer carrying the `AXONIQ-nnnn` code of a failed call.
pub const ERROR_CODE: &str = "axoniq-errorcode";

/// Legacy context header; servers fall back to it when [`CONTEXT`] is absent.
pub const LEGACY_CONTEXT: &str = "context";

/// Legacy token header; servers fall back to it when [`ACCESS_TOKEN`] is absent.
pub const LEGACY_ACCESS_TOKEN: &str = "access-token";

/// Cluster-internal token between servers; never sent by clients.
pub const INTERNAL_TOKEN: &str = "axoniq-internaltoken";

/// Context used when a call carries no context header.
pub const DEFAULT_CONTEXT: &str = "default";

#[cfg(test)]
mod tests {
    use tonic::metadata::{AsciiMetadataKey, MetadataKey};

    #[test]
    fn names_are_valid_lower_case_ascii_metadata_keys() {
        for name in [
            super::CONTEXT,
            super::ACCESS_TOKEN,
            super::CLIENT_ID,
            super::ERROR_CODE,
            super::LEGACY_CONTEXT,
            super::LEGACY_ACCESS_TOKEN,
            super::INTERNAL_TOKEN,
        ] {
            assert_eq!(name, name.to_ascii_lowercase());
            let key: AsciiMetadataKey = MetadataKey::from_static(name);
            assert_eq!(key.as_str(), name);
        }
    }
}
