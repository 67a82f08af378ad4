//! What a chain tells besides its decisions: a span for each filter callback of a
//! header or trailer phase of a traced request, and each filter's last outcome for
//! the access log. Body chunks get no span: there may be thousands per request.

use std::sync::Arc;

use super::{HttpFilters, Phase, Step};
use crate::otel::{RequestTrace, SpanKind};

impl Phase {
    /// The phase as spans and the access log name it.
    fn name(self) -> &'static str {
        match self {
            Phase::RequestHeaders => "request_headers",
            Phase::RequestBody => "request_body",
            Phase::RequestTrailers => "request_trailers",
            Phase::ResponseHeaders => "response_headers",
            Phase::ResponseBody => "response_body",
            Phase::ResponseTrailers => "response_trailers",
        }
    }
}

/// What a filter last decided, as the access log names it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Decided {
    Continue,
    Pause,
    Local,
    Failed,
}

impl Decided {
    fn name(self) -> &'static str {
        match self {
            Decided::Continue => "continue",
            Decided::Pause => "pause",
            Decided::Local => "local",
            Decided::Failed => "failed",
        }
    }
}

impl Step {
    /// What the filter decided.
    fn decided(&self) -> Decided {
        match self {
            Step::Continue => Decided::Continue,
            Step::Pause => Decided::Pause,
            Step::Local => Decided::Local,
            Step::Failed(_) => Decided::Failed,
        }
    }
}

impl HttpFilters {
    /// Traces the request's filters as children of `trace` (a sampled request).
    pub fn set_trace(&mut self, trace: Arc<RequestTrace>) {
        self.trace = Some(trace);
    }

    /// When a traced filter callback begins: its span's id and start.
    pub(super) fn span_begin(&self) -> Option<([u8; 8], u64)> {
        self.trace.as_ref().map(|t| t.begin())
    }

    /// Records what filter `i` decided in `phase` and, for a traced request, its span
    /// since `begin`. On every callback of every request: kept to a compare and a store
    /// unless the request is traced.
    #[inline]
    pub(super) fn traced(
        &mut self,
        i: usize,
        phase: Phase,
        step: &Step,
        begin: Option<([u8; 8], u64)>,
    ) {
        let e = &mut self.entries[i];
        // An answer or a failure sticks: the response phase of a filter that answered
        // runs on its own answer, and must not make it a `continue`.
        if !matches!(e.outcome, Some(Decided::Local | Decided::Failed)) {
            e.outcome = Some(step.decided());
        }
        if let Some(begin) = begin {
            self.span(i, phase, step, begin);
        }
    }

    /// Filter `i`'s span of a traced request, since `begin`.
    #[cold]
    fn span(&self, i: usize, phase: Phase, step: &Step, begin: ([u8; 8], u64)) {
        let Some(trace) = &self.trace else {
            return;
        };
        let name = &self.entries[i].plugin.config.name;
        let error = match step {
            Step::Failed(f) => Some(f.to_string()),
            _ => None,
        };
        let outcome = step.decided().name();
        trace.child(
            begin,
            format!("filter {name}"),
            SpanKind::Internal,
            vec![
                ("portcullis.filter.name", name.as_str().into()),
                ("portcullis.filter.phase", phase.name().into()),
                ("portcullis.filter.outcome", outcome.into()),
            ],
            error,
        );
    }

    /// `NAME:OUTCOME` of each filter that ran, in chain order, comma-separated: `local`
    /// if it answered, `failed` if it failed, else its last header-phase decision
    /// (`continue`, `pause`).
    pub fn outcomes(&self) -> String {
        let mut out = String::new();
        for e in &self.entries {
            if let Some(outcome) = e.outcome {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(&e.plugin.config.name);
                out.push(':');
                out.push_str(outcome.name());
            }
        }
        out
    }
}
