//! The benchmark message: the same size and shape for every system.

use std::sync::OnceLock;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// About 112 bytes: a sequence number, a send timestamp, 96 bytes of body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BenchMsg {
    pub(crate) seq: u64,
    pub(crate) sent_ns: u64,
    pub(crate) body: [u64; 12],
}

impl BenchMsg {
    pub(crate) fn new(seq: u64) -> Self {
        BenchMsg {
            seq,
            sent_ns: now_ns(),
            body: [seq; 12],
        }
    }
}

/// Nanoseconds since the first call in this process.
pub(crate) fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}
