//! The access log: one line per request, plus the request metrics.
//!
//! Without `access_log:` in the configuration, the line is an event on the tracing
//! target `access` at info (so `RUST_LOG=warn` silences it), written with the process
//! log when the response head is ready. With it, the proxy writes the lines itself
//! ([`writer`]), as JSON or text, to standard output or a file it reopens on SIGUSR1,
//! once the response has been sent: with the bytes sent, the trace id, what each
//! filter decided and where the time went ([`Line`]).
//!
//! The server calls [`record`] once per request, when the response head is ready:
//! with the driver's [`Outcome`](crate::proxy::Outcome) (route, upstream target) for
//! the requests it hands on, and for the ones it answers itself (400, 431).

mod line;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use line::Line;

use crate::config::AccessLogConfig;
use crate::otel::TraceId;

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
    /// The request's trace, when `tracing:` is configured.
    pub trace_id: Option<TraceId>,
}

/// Set while `access_log:` is configured: lines go to [`writer`], and the driver
/// measures what only they show (filter outcomes, the timing breakdown).
static DETAILED: AtomicBool = AtomicBool::new(false);

/// Whether access lines are written at all. When they are not, the caller may leave
/// the fields only the line uses (`host`, `path`, `client`) empty instead of
/// formatting them for every request.
pub fn enabled() -> bool {
    detailed() || tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Whether `access_log:` is configured: the proxy writes the lines itself, with
/// [`Line`]'s fields, once the response is sent.
pub fn detailed() -> bool {
    DETAILED.load(Ordering::Relaxed)
}

/// Follows the configuration's `access_log:` (at start and on every reload): an
/// unchanged one keeps its writer; a new one starts its own, and the old writer
/// finishes what it was given.
pub fn configure(config: Option<&AccessLogConfig>) {
    writer::configure(config);
    DETAILED.store(config.is_some(), Ordering::Relaxed);
}

/// Reopens the access log file (SIGUSR1): after a rotation renamed it, the lines
/// written from now on go to a new file at the configured path; none is lost.
pub fn reopen() {
    writer::reopen();
}

/// Counts `rec` in the metrics and, unless [`detailed`] (whose line the caller
/// writes with [`Line::write`] once the response is sent), logs its line.
pub fn record(rec: &AccessRecord<'_>) {
    crate::metrics::global().request(rec.listener, rec.route, rec.status, rec.duration, rec.ended);
    if detailed() {
        return;
    }
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
        trace_id = rec.trace_id.map(tracing::field::display),
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
            trace_id: None,
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
