//! The queue limits of handler streams, shared by command and query routing.

/// Queue limits of handler streams: from `soft` queued messages those with
/// priority <= 0 get AXONIQ-1900, from `hard` every message does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    pub(crate) soft: usize,
    pub(crate) hard: usize,
}
