//! The one error type of the driver: where it came from, and what the client sees.

use bytes::Bytes;
use http::{Response, StatusCode, header};

use crate::body::{self, BoxError, ProxyBody};
use crate::upstream::UpstreamError;
use crate::upstream::echo::EchoError;
use crate::wasm::FilterFailure;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client: a malformed or broken request.
    Downstream,
    /// The upstream: unreachable, slow, or broken.
    Upstream,
    /// A filter failed (trap, deadline, out of memory) in deny mode.
    Filter,
}

impl ErrorSource {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorSource::Downstream => "downstream",
            ErrorSource::Upstream => "upstream",
            ErrorSource::Filter => "filter",
        }
    }
}

/// Why the proxy answered a request itself instead of relaying an upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route of the listener matches: 404. Check the routes' `match` blocks.
    #[error("no route")]
    NoRoute,
    /// Forwarding failed: 502 (unreachable), 504 (timeout) or 503 (the upstream's
    /// circuit breaker is open).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The request body is longer than the route's `max_request_body`: 413.
    #[error("the request body is over the route's max_request_body")]
    BodyTooLarge,
    /// The client's request body failed while being read: 400.
    #[error("reading the request body failed: {0}")]
    DownstreamBody(#[source] BoxError),
    /// A filter failed and its `on_error` is `deny`: 500. See the filter's log line
    /// and `portcullis_filter_failures_total`.
    #[error(transparent)]
    Filter(#[from] FilterFailure),
}

// === impl ProxyError ===

impl From<EchoError> for ProxyError {
    fn from(e: EchoError) -> Self {
        ProxyError::DownstreamBody(e.0)
    }
}

impl ProxyError {
    /// Which side the error came from.
    pub fn source_side(&self) -> ErrorSource {
        match self {
            ProxyError::NoRoute | ProxyError::DownstreamBody(_) | ProxyError::BodyTooLarge => {
                ErrorSource::Downstream
            }
            ProxyError::Upstream(_) => ErrorSource::Upstream,
            ProxyError::Filter(_) => ErrorSource::Filter,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(UpstreamError::Overloaded { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::DownstreamBody(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Filter(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The short plain-text body the client gets: says which error it is, and no more
    /// (details go to the log, not to the client).
    pub fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route\n",
            ProxyError::Upstream(UpstreamError::Timeout { .. }) => "upstream timeout\n",
            ProxyError::Upstream(UpstreamError::Overloaded { .. }) => "upstream overloaded\n",
            ProxyError::Upstream(_) => "upstream unreachable\n",
            ProxyError::DownstreamBody(_) => "bad request\n",
            ProxyError::BodyTooLarge => "request body too large\n",
            ProxyError::Filter(_) => "filter failure\n",
        }
    }

    /// Envoy's response flags for this error (`%RESPONSE_FLAGS%`, the `response.flags`
    /// attribute filters read): the bits of Envoy's `ResponseFlag`, 0 for none.
    pub fn envoy_response_flags(&self) -> u64 {
        const NO_HEALTHY_UPSTREAM: u64 = 0x2;
        const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
        const UPSTREAM_REMOTE_RESET: u64 = 0x10;
        const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
        const UPSTREAM_OVERFLOW: u64 = 0x80;
        const NO_ROUTE_FOUND: u64 = 0x100;
        match self {
            ProxyError::NoRoute => NO_ROUTE_FOUND,
            ProxyError::Upstream(e) => match e {
                UpstreamError::NoTarget => NO_HEALTHY_UPSTREAM,
                UpstreamError::Connect { .. } => UPSTREAM_CONNECTION_FAILURE,
                UpstreamError::Timeout { .. } => UPSTREAM_REQUEST_TIMEOUT,
                UpstreamError::Exchange { .. } | UpstreamError::Body { .. } => {
                    UPSTREAM_REMOTE_RESET
                }
                UpstreamError::Overloaded { .. } => UPSTREAM_OVERFLOW,
                // The client's side failed, not the upstream's.
                UpstreamError::RequestBody { .. } => 0,
            },
            ProxyError::DownstreamBody(_) | ProxyError::BodyTooLarge | ProxyError::Filter(_) => 0,
        }
    }

    /// The response the client gets.
    pub fn to_response(&self) -> Response<ProxyBody> {
        error_response(self.status(), self.body())
    }
}

/// The response of every error the proxy makes itself (these errors, and the heads the
/// server's guard rejects): `status` and a short plain-text `text`, marked
/// [`Generated`].
pub fn error_response(status: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(body::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.extensions_mut().insert(Generated(text));
    resp
}

/// Marks a response the proxy made itself (in its extensions), with its text: what a
/// gRPC client gets instead is made from it (see [`super::grpc`]).
#[derive(Debug, Clone, Copy)]
pub struct Generated(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_status_and_body() {
        let timeout = ProxyError::Upstream(UpstreamError::Timeout {
            target: "t".into(),
            timeout: std::time::Duration::from_secs(1),
        });
        let cases = [
            (
                ProxyError::NoRoute,
                404,
                "no route\n",
                ErrorSource::Downstream,
            ),
            (timeout, 504, "upstream timeout\n", ErrorSource::Upstream),
            (
                ProxyError::Upstream(UpstreamError::NoTarget),
                502,
                "upstream unreachable\n",
                ErrorSource::Upstream,
            ),
            (
                ProxyError::Filter(FilterFailure {
                    filter: "f".into(),
                    failure: crate::wasm::Failure::Trap("unreachable".into()),
                }),
                500,
                "filter failure\n",
                ErrorSource::Filter,
            ),
        ];
        for (err, status, body, side) in cases {
            assert_eq!(err.status().as_u16(), status, "status of {err}");
            assert_eq!(err.body(), body, "body of {err}");
            assert_eq!(err.source_side(), side, "source of {err}");
        }
    }
}
