//! W3C trace context (`traceparent`) carried in headers across processes.

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::headers::Headers;

/// The header that carries a [`TraceContext`].
pub const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// One hop of a distributed trace: a trace id shared by every hop, the id of
/// the span that made this hop, and the sampled flag — the W3C `traceparent`
/// header (`00-<trace id>-<span id>-<flags>`).
///
/// [`Context`](crate::Context) puts the current one (if any) in the headers
/// of every publish and request that has no `traceparent` yet; a handler runs
/// each request inside the trace context its headers carry, so a request made
/// from a handler continues the trace, across processes too. Code outside a
/// handler starts a trace with [`scope`](Self::scope):
///
/// ```
/// use telamon_sdk::TraceContext;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let root = TraceContext::new_root();
/// let seen = root.scope(async { TraceContext::current() }).await;
/// assert_eq!(seen.unwrap().trace_id(), root.trace_id());
/// assert!(TraceContext::current().is_none());
/// let parsed = TraceContext::parse(&root.to_header()).unwrap();
/// assert_eq!(parsed, root);
/// # }
/// ```
///
/// With the sdk's `opentelemetry` feature, the trace context of the current
/// `tracing` span (through `tracing-opentelemetry`) is used when no scope is
/// set, and a handler's span gets the remote context as its parent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

/// 64 bits that differ on every call, in every process (not for secrets).
fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn nonzero_u64() -> u64 {
    loop {
        let v = random_u64();
        if v != 0 {
            return v;
        }
    }
}

impl TraceContext {
    /// A new trace (sampled).
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: (u128::from(nonzero_u64()) << 64) | u128::from(random_u64()),
            span_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// The next hop of the same trace: same trace id and flags, a new span id.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// Reads a `traceparent` value; `None` unless it is well-formed
    /// (version `00`, non-zero ids, lower-case hex).
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if version != "00" || parts.next().is_some() {
            return None;
        }
        if !(hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    /// The `traceparent` of these headers, if it is well-formed.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        headers.get(TRACEPARENT).and_then(Self::parse)
    }

    /// The `traceparent` value.
    pub fn to_header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// The trace id, 32 hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id, 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// Whether the trace is sampled.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace context the current task runs in, if any. With the
    /// `opentelemetry` feature the current span's context comes first (inside
    /// a handler that is the handler's span, whose parent is the request's
    /// context), so the next hop names a span that is exported.
    pub fn current() -> Option<Self> {
        otel::current().or_else(|| CURRENT.try_with(|c| *c).ok())
    }

    /// Runs `fut` with this as the current trace context.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// `headers` with a `traceparent` for the next hop of the current trace,
    /// unless they have one already or there is no current trace.
    pub(crate) fn propagate(headers: Headers) -> Headers {
        Self::propagate_from(Self::current(), headers)
    }

    /// [`propagate`](Self::propagate) with the current trace looked up
    /// already (once for a whole batch).
    pub(crate) fn propagate_from(current: Option<Self>, mut headers: Headers) -> Headers {
        // The current trace first: outside one (most publishes) the headers
        // are not looked at.
        if let Some(current) = current
            && headers.get(TRACEPARENT).is_none()
        {
            headers.insert(TRACEPARENT, current.child().to_header());
        }
        headers
    }

    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn from_parts(trace_id: u128, span_id: u64, flags: u8) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    #[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
    pub(crate) fn parts(&self) -> (u128, u64, u8) {
        (self.trace_id, self.span_id, self.flags)
    }
}

/// The bridge to OpenTelemetry (feature `opentelemetry`); nothing without it.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) mod otel {
    use super::TraceContext;

    pub(crate) fn current() -> Option<TraceContext> {
        None
    }

    pub(crate) fn set_parent(_span: &tracing::Span, _remote: &TraceContext) {}
}

#[cfg(feature = "opentelemetry")]
pub(crate) mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    /// The OpenTelemetry context of the current `tracing` span.
    pub(crate) fn current() -> Option<TraceContext> {
        let context = tracing::Span::current().context();
        let span = context.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        TraceContext::from_parts(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8(),
        )
    }

    /// Makes `remote` the parent of `span`.
    pub(crate) fn set_parent(span: &tracing::Span, remote: &TraceContext) {
        let (trace, id, flags) = remote.parts();
        let sc = SpanContext::new(
            TraceId::from_bytes(trace.to_be_bytes()),
            SpanId::from_bytes(id.to_be_bytes()),
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_writes_and_refuses_the_rest() {
        let t = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&t.to_header()), Some(t));
        let c = t.child();
        assert_eq!(c.trace_id(), t.trace_id());
        assert_ne!(c.span_id(), t.span_id());
        let w3c = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = TraceContext::parse(w3c).unwrap();
        assert_eq!(p.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.to_header(), w3c);
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn propagate_adds_the_next_hop_only_inside_a_trace() {
        assert!(TraceContext::propagate(Headers::new()).is_empty());
        let root = TraceContext::new_root();
        let h = root
            .scope(async { TraceContext::propagate(Headers::new()) })
            .await;
        let hop = TraceContext::from_headers(&h).unwrap();
        assert_eq!(hop.trace_id(), root.trace_id());
        let given = Headers::new().with(TRACEPARENT, "kept");
        let kept = root.scope(async { TraceContext::propagate(given) }).await;
        assert_eq!(kept.get(TRACEPARENT), Some("kept"));
    }
}
