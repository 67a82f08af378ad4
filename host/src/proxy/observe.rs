//! The end of a request's life in the driver: what happened, for the access log and
//! the metrics. Kept in one place so the metrics registry can be wired in here alone.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Response, Uri};

use super::{ConnInfo, ErrorSource, ProxyBody, ProxyError};

/// What the driver did with a request; attached to the response's extensions so the
/// server's access log can print it.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The route that matched, if any.
    pub route: Option<Arc<str>>,
    /// The route's upstream name (`echo@internal` included).
    pub upstream: Option<Arc<str>>,
    /// The target the request was sent to last, as `host:port`.
    pub target: Option<Arc<str>>,
    /// Where the error came from, when the proxy answered with one.
    pub error: Option<ErrorSource>,
    /// Whether a filter answered instead of the upstream.
    pub local: bool,
    /// Time from the request head to the response head, in microseconds.
    pub head_micros: u64,
}

/// The request line as it arrived, kept for the log (filters may rewrite the head).
pub struct Arrival {
    at: Instant,
    method: Method,
    uri: Uri,
    host: Option<HeaderValue>,
}

impl Arrival {
    /// Notes the request's arrival (cheap: reference-counted clones).
    pub fn new(head: &http::request::Parts) -> Self {
        Self {
            at: Instant::now(),
            method: head.method.clone(),
            uri: head.uri.clone(),
            host: head.headers.get(http::header::HOST).cloned(),
        }
    }

    fn host(&self) -> &str {
        match self.uri.authority() {
            Some(a) => a.as_str(),
            None => self
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or(""),
        }
    }
}

/// Records the outcome (log line, metrics) and attaches it to `resp`.
pub fn done(
    mut resp: Response<ProxyBody>,
    error: Option<&ProxyError>,
    mut outcome: Outcome,
    conn: &ConnInfo,
    arrival: &Arrival,
) -> Response<ProxyBody> {
    let started = arrival.at;
    outcome.error = error.map(ProxyError::source_side);
    outcome.head_micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    match error {
        // A 404 or a broken client is the client's business: not worth a warning.
        Some(e) if e.source_side() == ErrorSource::Downstream => tracing::debug!(
            target: "portcullis::proxy",
            client = %conn.client,
            status = resp.status().as_u16(),
            "{e}"
        ),
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
    // The access log and request metrics (`crate::access_log`) are wired in here.
    let _ = (arrival.method.as_str(), arrival.uri.path(), arrival.host());
    resp.extensions_mut().insert(outcome);
    resp
}
