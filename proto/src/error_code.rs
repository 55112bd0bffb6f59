//! `AXONIQ-nnnn` error codes.
//!
//! A code arrives either in-band (`CommandResponse.error_code`,
//! `QueryResponse.error_code`, `ErrorMessage.error_code`, `InstructionAck.error`)
//! or in the [`ERROR_CODE`](crate::headers::ERROR_CODE) trailer of a failed
//! call, whose status message then reads `[AXONIQ-nnnn] <text>`.
//!
//! The constants at this level are the server's meanings; [`client`] holds the
//! meanings clients (Axon Framework, the Java connector) give to some of the
//! same strings. Treat a code as an opaque string plus its `ErrorMessage`.
//! Not listed one by one: the admin/cluster/validation codes in
//! `AXONIQ-2101…2311` and `AXONIQ-2500…2510`, whose numbers the contract does
//! not spell out, and the client-only crypto codes in [`CRYPTO`].

use tonic::Code;

/// One known error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodeInfo {
    /// The code, `AXONIQ-nnnn`.
    pub code: &'static str,
    /// The name the emitting side gives it.
    pub name: &'static str,
    /// gRPC status used when the code fails a call, if the contract gives one.
    pub grpc_status: Option<Code>,
    /// A short description.
    pub description: &'static str,
}

macro_rules! error_codes {
    (
        $(#[$table_meta:meta])* $table:ident;
        $( $name:ident = $code:literal, $status:expr, $desc:literal; )*
    ) => {
        $(
            #[doc = concat!("`", $code, "`: ", $desc, ".")]
            pub const $name: &str = $code;
        )*

        $(#[$table_meta])*
        pub const $table: &[ErrorCodeInfo] = &[
            $(
                ErrorCodeInfo {
                    code: $name,
                    name: stringify!($name),
                    grpc_status: $status,
                    description: $desc,
                },
            )*
        ];
    };
}

error_codes! {
    /// Every code this module names, in numeric order.
    ALL;
    OTHER = "AXONIQ-0001", Some(Code::Cancelled), "unexpected server-side failure";
    AUTHENTICATION_TOKEN_MISSING = "AXONIQ-1000", Some(Code::PermissionDenied), "access token missing";
    AUTHENTICATION_INVALID_TOKEN = "AXONIQ-1001", Some(Code::PermissionDenied), "access token invalid";
    UNSUPPORTED_INSTRUCTION = "AXONIQ-1002", Some(Code::Unknown), "receiver does not understand the instruction";
    INSTRUCTION_EXECUTION_ERROR = "AXONIQ-1003", Some(Code::Internal), "instruction failed to execute";
    INSTRUCTION_RESULT_TIMEOUT = "AXONIQ-1004", Some(Code::Internal), "no instruction result in time";
    NODE_IS_REPLICA = "AXONIQ-1100", Some(Code::Unavailable), "node is a replica";
    NO_SUCH_APPLICATION = "AXONIQ-1300", Some(Code::NotFound), "unknown application";
    NO_SUCH_NODE = "AXONIQ-1301", Some(Code::NotFound), "unknown node";
    CONTEXT_NOT_FOUND = "AXONIQ-1302", Some(Code::NotFound), "unknown context";
    CONTEXT_EXISTS = "AXONIQ-1304", Some(Code::AlreadyExists), "context already exists";
    REPLICATION_GROUP_EXISTS = "AXONIQ-1305", Some(Code::AlreadyExists), "replication group already exists";
    NO_AXONSERVER_FOR_CONTEXT = "AXONIQ-1400", Some(Code::Unavailable), "no server serves the context";
    AXONSERVER_NODE_NOT_CONNECTED = "AXONIQ-1500", Some(Code::Unavailable), "server node not connected";
    LICENSE_ERROR = "AXONIQ-1700", Some(Code::PermissionDenied), "license problem";
    TOO_MANY_REQUESTS = "AXONIQ-1900", Some(Code::ResourceExhausted), "handler queue full";
    INVALID_SEQUENCE = "AXONIQ-2000", Some(Code::OutOfRange), "wrong aggregate sequence number on append";
    PAYLOAD_TOO_LARGE = "AXONIQ-2001", Some(Code::InvalidArgument), "payload too large";
    TOO_MANY_EVENTS = "AXONIQ-2002", Some(Code::InvalidArgument), "ad-hoc query result limit reached";
    NO_LEADER_AVAILABLE = "AXONIQ-2100", Some(Code::NotFound), "no cluster leader available";
    INVALID_TRANSACTION_TOKEN = "AXONIQ-2200", Some(Code::OutOfRange), "invalid transaction token";
    INVALID_QUERY = "AXONIQ-2511", None, "invalid ad-hoc query";
    SCHEDULED_EVENT_NOT_FOUND = "AXONIQ-2610", Some(Code::InvalidArgument), "unknown scheduled event";
    PLUGIN_NOT_FOUND = "AXONIQ-2700", Some(Code::InvalidArgument), "unknown plugin";
    INVALID_PLUGIN_CONFIGURATION = "AXONIQ-2701", Some(Code::InvalidArgument), "invalid plugin configuration";
    EVENT_PROCESSOR_NOT_FOUND = "AXONIQ-2800", Some(Code::NotFound), "unknown event processor";
    EVENT_PROCESSOR_MOVE_UNKNOWN_TARGET = "AXONIQ-2801", Some(Code::NotFound), "segment move to an unknown client";
    EVENT_PROCESSOR_MOVE_NO_AVAILBLE_THREADS = "AXONIQ-2802", Some(Code::NotFound), "segment move target has no free thread (server's spelling)";
    EVENT_RATE_EXCEEDED = "AXONIQ-3000", Some(Code::ResourceExhausted), "event rate exceeded";
    EVENT_REJECTED_BY_INTERCEPTOR = "AXONIQ-3004", Some(Code::InvalidArgument), "event rejected by an interceptor";
    SNAPSHOT_REJECTED_BY_INTERCEPTOR = "AXONIQ-3005", Some(Code::InvalidArgument), "snapshot rejected by an interceptor";
    NO_HANDLER_FOR_COMMAND = "AXONIQ-4000", Some(Code::NotFound), "no handler for the command";
    CONNECTION_TO_HANDLER_LOST = "AXONIQ-4001", Some(Code::Cancelled), "handler connection lost while the request was pending";
    COMMAND_TIMEOUT = "AXONIQ-4002", Some(Code::Cancelled), "server gave up waiting for the command result";
    COMMAND_DISPATCH_ERROR = "AXONIQ-4003", Some(Code::Cancelled), "command could not be dispatched";
    COMMAND_REJECTED_BY_INTERCEPTOR = "AXONIQ-4004", Some(Code::InvalidArgument), "command rejected by an interceptor";
    COMMAND_DUPLICATED = "AXONIQ-4005", Some(Code::InvalidArgument), "command id already in flight";
    NO_HANDLER_FOR_QUERY = "AXONIQ-5000", Some(Code::NotFound), "no handler for the query";
    QUERY_DISPATCH_ERROR = "AXONIQ-5002", Some(Code::NotFound), "query could not be dispatched";
    QUERY_REJECTED_BY_INTERCEPTOR = "AXONIQ-5004", Some(Code::InvalidArgument), "query rejected by an interceptor";
    SUBSCRIPTION_QUERY_REJECTED_BY_INTERCEPTOR = "AXONIQ-5005", Some(Code::InvalidArgument), "subscription query rejected by an interceptor";
    QUERY_TIMEOUT = "AXONIQ-5006", Some(Code::Cancelled), "query timed out";
    QUERY_DUPLICATED = "AXONIQ-5007", Some(Code::InvalidArgument), "query id already in flight";
    NO_EVENTSTORE = "AXONIQ-6000", Some(Code::NotFound), "no event store for the context";
    CLIENT_DISCONNECTED = "AXONIQ-6001", Some(Code::NotFound), "dispatch target disconnected";
    LIST_AGGREGATE_EVENTS_TIMEOUT = "AXONIQ-6002", Some(Code::Aborted), "reading aggregate events timed out";
    EXCEPTION_IN_INTERCEPTOR = "AXONIQ-6100", Some(Code::Unknown), "an interceptor failed";
    POST_COMMIT_HOOK_EXCEPTION = "AXONIQ-6101", Some(Code::Unknown), "a post-commit hook failed";
    NODE_NOT_READY_FOR_BACKUP = "AXONIQ-7000", Some(Code::Unavailable), "node not ready for backup";
    DATAFILE_READ = "AXONIQ-9000", Some(Code::Cancelled), "storage: data file read failed";
    INDEX_READ = "AXONIQ-9001", Some(Code::Cancelled), "storage: index read failed";
    DATAFILE_WRITE = "AXONIQ-9100", Some(Code::Cancelled), "storage: data file write failed";
    INDEX_WRITE = "AXONIQ-9101", Some(Code::Cancelled), "storage: index write failed";
    DIRECTORY_CREATION_FAILED = "AXONIQ-9102", Some(Code::Cancelled), "storage: directory creation failed";
    VALIDATION_FAILED = "AXONIQ-9200", Some(Code::Cancelled), "storage: validation failed";
    PLUGINS_DISABLED = "AXONIQ-9301", Some(Code::Cancelled), "plugins are disabled";
    INTERRUPTED = "AXONIQ-9500", Some(Code::Cancelled), "operation interrupted";
    TRANSACTION_ROLLED_BACK = "AXONIQ-9900", Some(Code::Cancelled), "transaction rolled back";
    SERVER_TOO_SLOW = "AXONIQ-10001", Some(Code::Cancelled), "cluster: server too slow";
    UNCOMMITTED_CONFIGURATION = "AXONIQ-10002", Some(Code::Cancelled), "cluster: uncommitted configuration";
    REPLICATION_TIMEOUT = "AXONIQ-10003", Some(Code::Cancelled), "cluster: replication timed out";
    UNCOMMITTED_TERM = "AXONIQ-10007", Some(Code::Cancelled), "cluster: uncommitted term";
    INSTRUCTION_TIMEOUT = "AXONIQ-11000", Some(Code::DeadlineExceeded), "instruction timed out";
    INSTRUCTION_ACK_ONLY = "AXONIQ-11001", Some(Code::Unknown), "instruction was only acknowledged";
}

/// Client-side crypto codes; client-only, their individual names are not part of the contract.
pub const CRYPTO: [&str; 3] = ["AXONIQ-8000", "AXONIQ-8001", "AXONIQ-8002"];

/// Looks up a server-side code.
#[must_use]
pub fn lookup(code: &str) -> Option<&'static ErrorCodeInfo> {
    ALL.iter().find(|info| info.code == code)
}

/// Short description of a server-side code, falling back to the client meaning.
#[must_use]
pub fn description(code: &str) -> Option<&'static str> {
    lookup(code)
        .or_else(|| client::lookup(code))
        .map(|info| info.description)
}

/// Meanings clients give to codes (Axon Framework `ErrorCode`, connector
/// `ErrorCategory`); some strings mean something else on the server.
pub mod client {
    use super::ErrorCodeInfo;

    error_codes! {
        /// Every client-side code this module names, in numeric order.
        ALL;
        INSTRUCTION_ACK_ERROR = "AXONIQ-1003", None, "connector: acknowledging an instruction failed";
        INSTRUCTION_EXECUTION_ERROR = "AXONIQ-1004", None, "connector: a processor instruction failed (sent in InstructionResult)";
        INVALID_EVENT_SEQUENCE = "AXONIQ-2000", None, "append conflict, surfaced as a concurrency exception";
        CONNECTION_FAILED = "AXONIQ-3001", None, "client-local: connecting failed";
        GRPC_MESSAGE_TOO_LARGE = "AXONIQ-3002", None, "client-local: message over the size limit";
        COMMAND_EXECUTION_ERROR = "AXONIQ-4002", None, "command handler failed (transient); the code handlers report";
        CONCURRENCY_EXCEPTION = "AXONIQ-4004", None, "command handler hit a concurrency conflict";
        COMMAND_EXECUTION_NON_TRANSIENT_ERROR = "AXONIQ-4005", None, "command handler failed, do not retry";
        QUERY_EXECUTION_ERROR = "AXONIQ-5001", None, "query handler failed; the code handlers report";
        QUERY_EXECUTION_NON_TRANSIENT_ERROR = "AXONIQ-5003", None, "query handler failed, do not retry";
    }

    /// Looks up a client-side code.
    #[must_use]
    pub fn lookup(code: &str) -> Option<&'static ErrorCodeInfo> {
        ALL.iter().find(|info| info.code == code)
    }
}

#[cfg(test)]
mod tests {
    use super::{ALL, CRYPTO, client, description, lookup};

    fn number(code: &str) -> u32 {
        let digits = code.strip_prefix("AXONIQ-").expect("AXONIQ- prefix");
        assert!(digits.len() >= 4 && digits.bytes().all(|b| b.is_ascii_digit()));
        digits.parse().expect("number")
    }

    #[test]
    fn tables_are_well_formed_sorted_and_unique() {
        for table in [ALL, client::ALL] {
            let numbers: Vec<u32> = table.iter().map(|info| number(info.code)).collect();
            assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        }
        for code in CRYPTO {
            number(code);
        }
    }

    #[test]
    fn lookups() {
        let info = lookup(super::INVALID_SEQUENCE).expect("known");
        assert_eq!(info.name, "INVALID_SEQUENCE");
        assert_eq!(info.grpc_status, Some(tonic::Code::OutOfRange));
        assert_eq!(
            description("AXONIQ-5001"),
            Some("query handler failed; the code handlers report")
        );
        assert_eq!(client::COMMAND_EXECUTION_ERROR, super::COMMAND_TIMEOUT);
        assert!(description("AXONIQ-9999").is_none());
    }
}
