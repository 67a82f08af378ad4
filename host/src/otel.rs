//! OpenTelemetry traces of the requests (`tracing:` in the configuration).
//!
//! A request that comes with a W3C `traceparent` joins its trace and follows its
//! sampled flag; one without starts a trace, sampled at `sample_ratio`. Either way the
//! request goes upstream with a `traceparent` (and the client's `tracestate`). A
//! sampled request records spans: the request (server), each filter callback of its
//! header phases (internal) and each upstream attempt, retries included (client, whose
//! span id the upstream sees as its parent). A span is a small record handed to a
//! bounded queue ([`export`]); a thread of its own batches the records, encodes them as
//! OTLP protobuf and POSTs them to the collector. When the queue is full (a slow or
//! dead collector) spans are dropped and counted, never waited for.
//!
//! The [`Tracer`] belongs to the snapshot: `None` (no `tracing:`) costs a request one
//! branch (and a look in its extensions before the filters and the upstream); an
//! unsampled request one random draw and, without a `traceparent`, a header.

mod context;
mod export;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::config::TracingConfig;
pub use context::{TRACEPARENT, TRACESTATE, TraceParent, hex};

/// The tracer of one `tracing:` configuration: the sampler and the export queue.
/// Shared by every snapshot with the same settings; its export thread ends (after a
/// last flush) once the last snapshot holding it is gone.
pub struct Tracer {
    config: TracingConfig,
    /// A new trace is sampled when 64 random bits fall below this.
    threshold: u64,
    queue: export::Queue,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("endpoint", &self.config.endpoint)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// A tracer for `config`, reusing `kept` when its settings are the same (so a
    /// reload that does not touch `tracing:` keeps its queue and thread).
    pub fn new(config: &TracingConfig, kept: Option<&Arc<Tracer>>) -> Arc<Tracer> {
        if let Some(kept) = kept.filter(|t| t.config == *config) {
            return kept.clone();
        }
        let threshold = if config.sample_ratio >= 1.0 {
            u64::MAX
        } else {
            // Saturating float-to-int: 0.0 gives 0 (never), 0.5 half the range.
            (config.sample_ratio * u64::MAX as f64) as u64
        };
        Arc::new(Tracer {
            threshold,
            queue: export::Queue::start(config),
            config: config.clone(),
        })
    }

    /// Starts tracing a request from its `headers`: returns its trace's id and, when
    /// sampled, the request's span (also put in the request's extensions by the
    /// caller, for the filters and upstream attempts to hang theirs on). An unsampled
    /// request keeps a valid incoming `traceparent` as it is, and gets a new one
    /// (unsampled) when it has none, so the upstream still sees one trace.
    pub fn start(
        self: &Arc<Self>,
        headers: &mut HeaderMap,
    ) -> (TraceId, Option<Arc<RequestTrace>>) {
        let incoming = headers.get(TRACEPARENT).and_then(TraceParent::parse);
        let (trace_id, sampled) = match incoming {
            Some(tp) => (tp.trace_id, tp.sampled),
            None => {
                let id = new_trace_id();
                // The id is random: its low 64 bits are the draw.
                let draw = u64::from_be_bytes(id[8..].try_into().unwrap_or_default());
                (id, self.threshold == u64::MAX || draw < self.threshold)
            }
        };
        if !sampled {
            if incoming.is_none() {
                headers.remove(TRACESTATE);
                let tp = TraceParent {
                    trace_id,
                    parent_id: new_span_id(),
                    sampled: false,
                };
                headers.insert(TRACEPARENT, tp.to_header());
            }
            return (TraceId(trace_id), None);
        }
        let trace = RequestTrace {
            tracer: self.clone(),
            trace_id,
            span_id: new_span_id(),
            parent: incoming.map(|tp| tp.parent_id),
            trace_state: match incoming {
                Some(_) => headers
                    .get(TRACESTATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .unwrap_or_default(),
                None => {
                    headers.remove(TRACESTATE);
                    String::new()
                }
            },
            start: now_ns(),
        };
        headers.insert(TRACEPARENT, trace.traceparent(trace.span_id));
        (TraceId(trace_id), Some(Arc::new(trace)))
    }
}

/// A trace's id, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// The span of one sampled request: what its filter and upstream spans need to name
/// it as their parent, and its start.
pub struct RequestTrace {
    tracer: Arc<Tracer>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    /// The caller's span, when the request came with a `traceparent`.
    parent: Option<[u8; 8]>,
    trace_state: String,
    start: u64,
}

impl std::fmt::Debug for RequestTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RequestTrace({}/{})",
            hex(&self.trace_id),
            hex(&self.span_id)
        )
    }
}

/// What a span is, as OTLP's `Span.SpanKind` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// In-process work (a filter callback).
    Internal = 1,
    /// The request as the proxy serves it.
    Server = 2,
    /// A request the proxy sends (an upstream attempt).
    Client = 3,
}

/// An attribute's value.
#[derive(Debug, Clone)]
pub enum Value {
    /// A string.
    Str(Arc<str>),
    /// An integer.
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.into())
    }
}

impl From<&Arc<str>> for Value {
    fn from(s: &Arc<str>) -> Self {
        Value::Str(s.clone())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

/// One finished span, as queued for export.
#[derive(Debug)]
pub struct SpanRecord {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    trace_state: String,
    name: String,
    kind: SpanKind,
    start: u64,
    end: u64,
    attributes: Vec<(&'static str, Value)>,
    /// `Some(message)` when the span failed (OTLP status ERROR).
    error: Option<String>,
}

impl RequestTrace {
    /// The `traceparent` to send with a request whose client span is `span_id`.
    pub fn traceparent(&self, span_id: [u8; 8]) -> http::HeaderValue {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: span_id,
            sampled: true,
        }
        .to_header()
    }

    /// A new span's id and its start, for a child that is about to begin.
    pub fn begin(&self) -> ([u8; 8], u64) {
        (new_span_id(), now_ns())
    }

    /// Queues a child span of the request's, begun at `begin` (from
    /// [`RequestTrace::begin`]) and ending now.
    pub fn child(
        &self,
        begin: ([u8; 8], u64),
        name: String,
        kind: SpanKind,
        attributes: Vec<(&'static str, Value)>,
        error: Option<String>,
    ) {
        self.tracer.queue.push(SpanRecord {
            trace_id: self.trace_id,
            span_id: begin.0,
            parent: Some(self.span_id),
            trace_state: self.trace_state.clone(),
            name,
            kind,
            start: begin.1,
            end: now_ns(),
            attributes,
            error,
        });
    }

    /// Queues the request's own span, ending now.
    pub fn finish(&self, name: String, attributes: Vec<(&'static str, Value)>, error: bool) {
        self.tracer.queue.push(SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent: self.parent,
            trace_state: self.trace_state.clone(),
            name,
            kind: SpanKind::Server,
            start: self.start,
            end: now_ns(),
            attributes,
            error: error.then(String::new),
        });
    }
}

/// Nanoseconds since the Unix epoch (OTLP's timestamps).
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: u128 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}
