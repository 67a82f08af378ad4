//! One access line of the configured access log, and its two formats.
//!
//! Fields, in order (docs/operations.md#access-log): `time`, `listener`, `client`,
//! `method`, `host`, `path`, `status`, `route`, `upstream`, `trace_id`, `filters`,
//! `request_bytes`, `bytes_sent`, `duration_ms`, `filters_ms`, `upstream_ms`,
//! `total_ms`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::AccessLogFormat;
use crate::otel::TraceId;

/// What the access log says of one request; written by [`Line::write`].
#[derive(Debug, Default)]
pub struct Line {
    /// The listener the request arrived on.
    pub listener: Arc<str>,
    /// The client's `IP:port`.
    pub client: String,
    /// The request's method.
    pub method: String,
    /// The request's host (authority or `Host`).
    pub host: String,
    /// The request's path, with its query.
    pub path: String,
    /// The status sent downstream.
    pub status: u16,
    /// The route that matched.
    pub route: Option<Arc<str>>,
    /// The target that answered (`IP:port`), or the upstream's name when none did.
    pub upstream: Option<Arc<str>>,
    /// The request's trace, when `tracing:` is configured.
    pub trace_id: Option<TraceId>,
    /// What each filter decided, `name:outcome,…`.
    pub filters: Option<String>,
    /// The request body's declared length (`Content-Length`).
    pub request_bytes: Option<u64>,
    /// Response body bytes sent downstream (`None` when not counted: HTTP/3).
    pub bytes_sent: Option<u64>,
    /// Request head in to response head out.
    pub duration: Duration,
    /// In the filters' header phases.
    pub filters_time: Option<Duration>,
    /// Sending upstream to its response head, every attempt.
    pub upstream_time: Option<Duration>,
    /// Request head in to the response's last byte out.
    pub total: Option<Duration>,
    /// When the line was made: the response's end.
    pub at: Option<SystemTime>,
}

/// The JSON object of a line: field order as documented.
#[derive(Serialize)]
struct Json<'a> {
    time: String,
    listener: &'a str,
    client: &'a str,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    status: u16,
    route: Option<&'a str>,
    upstream: Option<&'a str>,
    trace_id: Option<String>,
    filters: Option<&'a str>,
    request_bytes: Option<u64>,
    bytes_sent: Option<u64>,
    duration_ms: f64,
    filters_ms: Option<f64>,
    upstream_ms: Option<f64>,
    total_ms: Option<f64>,
}

impl Line {
    /// Hands the line to the access log's writer (formatted there, off the request
    /// path); dropped and counted when the writer is behind.
    pub fn write(mut self) {
        self.at.get_or_insert_with(SystemTime::now);
        super::writer::send(self);
    }

    /// The line in `format`, with its newline.
    pub(super) fn format(&self, format: AccessLogFormat) -> String {
        let json = Json {
            time: humantime::format_rfc3339_millis(self.at.unwrap_or_else(SystemTime::now))
                .to_string(),
            listener: &self.listener,
            client: &self.client,
            method: &self.method,
            host: &self.host,
            path: &self.path,
            status: self.status,
            route: self.route.as_deref(),
            upstream: self.upstream.as_deref(),
            trace_id: self.trace_id.map(|t| t.to_string()),
            filters: self.filters.as_deref().filter(|f| !f.is_empty()),
            request_bytes: self.request_bytes,
            bytes_sent: self.bytes_sent,
            duration_ms: ms(self.duration),
            filters_ms: self.filters_time.map(ms),
            upstream_ms: self.upstream_time.map(ms),
            total_ms: self.total.map(ms),
        };
        match format {
            AccessLogFormat::Json => {
                let mut out = serde_json::to_string(&json).unwrap_or_default();
                out.push('\n');
                out
            }
            AccessLogFormat::Text => text(&json),
        }
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `key=value` pairs in the JSON's order: a missing value is `-`, a value with a
/// space, a quote, `=` or a control character is JSON-quoted.
fn text(json: &Json<'_>) -> String {
    let value = serde_json::to_value(json).unwrap_or_default();
    let Some(object) = value.as_object() else {
        return String::new();
    };
    let mut out = String::with_capacity(256);
    // serde_json's map is sorted by key: walk the struct's order instead.
    for key in [
        "time",
        "listener",
        "client",
        "method",
        "host",
        "path",
        "status",
        "route",
        "upstream",
        "trace_id",
        "filters",
        "request_bytes",
        "bytes_sent",
        "duration_ms",
        "filters_ms",
        "upstream_ms",
        "total_ms",
    ] {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{key}=");
        match object.get(key) {
            None | Some(serde_json::Value::Null) => out.push('-'),
            Some(serde_json::Value::String(s)) if s.is_empty() => out.push('-'),
            Some(serde_json::Value::String(s))
                if !s
                    .chars()
                    .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control()) =>
            {
                out.push_str(s)
            }
            Some(v) => out.push_str(&v.to_string()),
        }
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            listener: "web".into(),
            client: "127.0.0.1:5000".into(),
            method: "GET".into(),
            host: "example.com".into(),
            path: "/a b?x=1".into(),
            status: 200,
            route: Some("api".into()),
            upstream: Some("127.0.0.1:9000".into()),
            trace_id: Some(TraceId([0xab; 16])),
            filters: Some("auth:continue".into()),
            request_bytes: None,
            bytes_sent: Some(12),
            duration: Duration::from_micros(1500),
            filters_time: Some(Duration::from_micros(250)),
            upstream_time: Some(Duration::from_millis(1)),
            total: Some(Duration::from_millis(2)),
            at: Some(SystemTime::UNIX_EPOCH),
        }
    }

    #[test]
    fn json_has_every_field_in_order() {
        let text = line().format(AccessLogFormat::Json);
        assert!(text.ends_with('\n'));
        assert!(
            text.starts_with(r#"{"time":"1970-01-01T00:00:00.000Z","listener":"web","client":"127.0.0.1:5000","method":"GET""#),
            "{text}"
        );
        assert!(
            text.contains(r#""trace_id":"abababababababababababababababab","filters":"auth:continue","request_bytes":null,"bytes_sent":12,"duration_ms":1.5,"filters_ms":0.25,"upstream_ms":1.0,"total_ms":2.0}"#),
            "{text}"
        );
    }

    #[test]
    fn text_quotes_what_needs_it_and_dashes_what_is_missing() {
        let text = line().format(AccessLogFormat::Text);
        assert!(
            text.starts_with("time=1970-01-01T00:00:00.000Z listener=web client=127.0.0.1:5000 method=GET host=example.com path=\"/a b?x=1\" status=200 route=api"),
            "{text}"
        );
        assert!(
            text.contains(" request_bytes=- bytes_sent=12 duration_ms=1.5 "),
            "{text}"
        );
    }
}
