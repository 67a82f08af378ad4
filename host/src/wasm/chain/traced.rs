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

impl Step {
    /// What the filter decided, as spans and the access log name it.
    fn name(&self) -> &'static str {
        match self {
            Step::Continue => "continue",
            Step::Pause => "pause",
            Step::Local => "local",
            Step::Failed(_) => "failed",
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
    /// since `begin`.
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
        if !matches!(e.outcome, Some("local" | "failed")) {
            e.outcome = Some(step.name());
        }
        let (Some(trace), Some(begin)) = (&self.trace, begin) else {
            return;
        };
        let name = &e.plugin.config.name;
        let error = match step {
            Step::Failed(f) => Some(f.to_string()),
            _ => None,
        };
        trace.child(
            begin,
            format!("filter {name}"),
            SpanKind::Internal,
            vec![
                ("portcullis.filter.name", name.as_str().into()),
                ("portcullis.filter.phase", phase.name().into()),
                ("portcullis.filter.outcome", step.name().into()),
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
                out.push_str(outcome);
            }
        }
        out
    }
}
