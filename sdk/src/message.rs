//! The bounds every message type of a process satisfies.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message that can travel on any bus.
///
/// One message type `M` serves a whole process: an application enum, or
/// `serde_json::Value` for dynamic use. On the in-process bus a message is shared
/// as `Arc<M>` and never serialised or cloned per subscriber; buses that cross
/// processes encode it (CBOR), which is why `Serialize + DeserializeOwned` is
/// required even for purely local use.
///
/// Implemented for every type that meets the bounds; there is nothing to derive.
pub trait Message: Send + Sync + Serialize + DeserializeOwned + 'static {}

impl<T> Message for T where T: Send + Sync + Serialize + DeserializeOwned + 'static {}
