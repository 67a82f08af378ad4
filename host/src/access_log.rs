//! The access log: one line per request on the tracing target `access` at info (so
//! `RUST_LOG=warn` silences it), plus the request metrics.
//!
//! The server calls [`record`] once per request, when the response head is ready: with
//! the driver's [`Outcome`](crate::proxy::Outcome) (route, upstream target) for the
//! requests it hands on, and for the ones it answers itself (400, 431).

use std::time::{Duration, Instant};

/// What the access log and the request metrics need to know of one finished request.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The listener the request arrived on.
    pub listener: &'a str,
    /// Request method.
    pub method: &'a str,
    /// The request's host (authority or `Host` header), `""` if none.
    pub host: &'a str,
    /// Request path (with the query).
    pub path: &'a str,
    /// Status code sent downstream.
    pub status: u16,
    /// The matched route's name, `""` when none matched.
    pub route: &'a str,
    /// The upstream target that answered (`127.0.0.1:9000`, `echo@internal`), `""` if none.
    pub upstream: &'a str,
    /// Time from receiving the request head to sending the response head (or its end).
    pub duration: Duration,
    /// When that was (the clock read `duration` came from).
    pub ended: Instant,
    /// The client's `IP:port`.
    pub client: &'a str,
}

/// Whether access lines are written at all (the `access` target at info). When they
/// are not, the caller may leave the fields only the line uses (`host`, `path`,
/// `client`) empty instead of formatting them for every request.
pub fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Logs one line for `rec` and counts it in the metrics.
pub fn record(rec: &AccessRecord<'_>) {
    crate::metrics::global().request(rec.listener, rec.route, rec.status, rec.duration, rec.ended);
    tracing::info!(
        target: "access",
        listener = rec.listener,
        client = rec.client,
        method = rec.method,
        host = rec.host,
        path = rec.path,
        status = rec.status,
        route = rec.route,
        upstream = rec.upstream,
        duration_ms = rec.duration.as_secs_f64() * 1000.0,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_the_request() {
        record(&AccessRecord {
            listener: "access-log-test",
            method: "GET",
            host: "example.com",
            path: "/x",
            status: 201,
            route: "r",
            upstream: "echo@internal",
            duration: Duration::from_millis(1),
            ended: Instant::now(),
            client: "127.0.0.1:1234",
        });
        let text = crate::metrics::global().render();
        assert!(
            text.contains(
                r#"portcullis_requests_total{listener="access-log-test",route="r",code="2xx"} 1"#
            ),
            "request not counted in:\n{text}"
        );
    }
}
