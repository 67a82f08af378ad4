//! The span of each attempt of a traced request: the attempt carries a `traceparent`
//! naming its own span, so the upstream's spans hang under it.

use std::sync::Arc;

use http::{Request, Response};

use super::UpstreamError;
use crate::otel::{RequestTrace, SpanKind, TRACEPARENT, Value};

/// One attempt's span, begun: its id went out in the attempt's `traceparent`.
pub(super) struct Attempt<'t> {
    trace: &'t RequestTrace,
    begin: ([u8; 8], u64),
}

/// The trace of `req`, if it is sampled.
pub(super) fn trace_of<B>(req: &Request<B>) -> Option<Arc<RequestTrace>> {
    req.extensions().get::<Arc<RequestTrace>>().cloned()
}

impl<'t> Attempt<'t> {
    /// Begins an attempt's span and writes its `traceparent` on `req`.
    pub(super) fn begin<B>(trace: &'t RequestTrace, req: &mut Request<B>) -> Self {
        let begin = trace.begin();
        req.headers_mut()
            .insert(TRACEPARENT, trace.traceparent(begin.0));
        Attempt { trace, begin }
    }

    /// Queues the span, ended with the attempt's outcome.
    pub(super) fn end<B>(
        self,
        upstream: &str,
        target: &str,
        attempt: u32,
        result: &Result<Response<B>, UpstreamError>,
    ) {
        let mut attrs = vec![
            ("portcullis.upstream", Value::from(upstream)),
            ("server.address", Value::from(target)),
            ("portcullis.attempt", Value::Int(i64::from(attempt))),
        ];
        let error = match result {
            Ok(resp) => {
                let status = resp.status().as_u16();
                attrs.push(("http.response.status_code", Value::Int(i64::from(status))));
                (status >= 500).then(|| format!("status {status}"))
            }
            Err(e) => {
                attrs.push(("error.type", Value::from(e.kind())));
                Some(e.to_string())
            }
        };
        self.trace.child(
            self.begin,
            format!("upstream {upstream}"),
            SpanKind::Client,
            attrs,
            error,
        );
    }
}
