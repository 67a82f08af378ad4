//! The end of a request's life in the driver: what happened, for the access log, and
//! the one place the driver logs an error and counts an upstream failure.

use std::sync::Arc;

use http::Response;

use super::{ConnInfo, Driven, ErrorSource, ProxyError};
use crate::body::ProxyBody;
use crate::wasm::SharedFilters;

/// What the driver did with a request, handed back with the response so the server's
/// access log can print it (and the test kit can report a local answer).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The route that matched, if any.
    pub route: Option<Arc<str>>,
    /// The route's upstream name (`echo@internal` included).
    pub upstream: Option<Arc<str>>,
    /// The target the request was sent to last, as `host:port`.
    pub target: Option<Arc<str>>,
    /// Whether a filter answered instead of the upstream.
    pub local: bool,
    /// The matched route's `upgrade_idle_timeout`, for a switch its answer starts.
    pub upgrade_idle_timeout: Option<std::time::Duration>,
    /// The request's trace, when `tracing:` is configured (sampled or not).
    pub trace_id: Option<crate::otel::TraceId>,
    /// What each filter that ran decided (`auth:continue,limit:local`), when the
    /// access log writes it.
    pub filters: Option<String>,
    /// Time in the header phases of the filters and waiting for the upstream's
    /// response head (every attempt), when the access log writes them.
    pub timing: Option<Timing>,
}

/// Where a request's time went before its response head, for the access log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// In the filters' request and response header phases.
    pub filters: std::time::Duration,
    /// From sending upstream to the upstream's response head, retries included.
    pub upstream: std::time::Duration,
}

/// Logs a proxy error, counts an upstream failure, and hands `resp` back with the
/// outcome (for the server's access log) and the chain still streaming, if any.
pub fn done(
    resp: Response<ProxyBody>,
    error: Option<&ProxyError>,
    outcome: Outcome,
    conn: &ConnInfo,
    chain: Option<SharedFilters>,
) -> Driven {
    match error {
        // A 404 or a broken client is the client's business: not worth a warning. A
        // failed filter was logged, with its cause, where it failed.
        Some(e)
            if matches!(
                e.source_side(),
                ErrorSource::Downstream | ErrorSource::Filter
            ) =>
        {
            tracing::debug!(
                target: "portcullis::proxy",
                client = %conn.client,
                status = resp.status().as_u16(),
                "{e}"
            )
        }
        // The client got a short body; the details are for the operator.
        Some(e) => tracing::warn!(
            target: "portcullis::proxy",
            client = %conn.client,
            route = outcome.route.as_deref().unwrap_or("-"),
            status = resp.status().as_u16(),
            source = e.source_side().as_str(),
            "{e}"
        ),
        None => {}
    }
    if let (Some(ProxyError::Upstream(e)), Some(upstream)) = (error, &outcome.upstream) {
        crate::metrics::global().upstream_error(upstream, e.kind());
    }
    // The server writes the access line (and counts the request) from `outcome`.
    Driven {
        response: resp,
        outcome,
        chain,
    }
}
