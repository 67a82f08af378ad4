//! What a filter did with one request: the [`Outcome`] of [`super::Harness::run`].

use std::fmt;

use bytes::Bytes;
use http::HeaderMap;

use crate::metrics::CustomKind;

/// Everything a test may want to assert about one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The request as it went upstream; `None` when a filter answered (or failed)
    /// before it got there.
    pub upstream_request: Option<Forwarded>,
    /// What the client got: the upstream's answer through the response phase, or the
    /// filter's own (local) response, or the proxy's 500 for a failed filter.
    pub response: ClientResponse,
    /// Whether `response` was made by a filter (or is a failure's 500), not the upstream.
    pub local: bool,
    /// Every line the filter logged (`proxy_log`, and WASI stdout/stderr), in order.
    pub logs: Vec<LogLine>,
    /// The filter's metrics that changed during this run (or were defined by it).
    pub metrics: Vec<MetricChange>,
    /// The filter's failure, if it trapped, missed its deadline or ran out of memory.
    pub failure: Option<FailureReport>,
    /// The `http_call`s the filter made.
    pub http_calls: Vec<HttpCallRecord>,
    /// What the host itself warned about during the run (e.g. an `http_call` to an
    /// upstream the test gave no answer for, a failing foreign function).
    pub host_warnings: Vec<String>,
    /// What the filter, run in shadow mode, would have done: its replies and changes,
    /// recorded and not applied. Empty when not in shadow mode.
    pub shadow: Vec<crate::wasm::ShadowDecision>,
}

/// The request as forwarded upstream.
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// Its method.
    pub method: String,
    /// Its path and query (rewritten if a filter wrote `:path`).
    pub path: String,
    /// Its header fields (`host` carries a rewritten `:authority`).
    pub headers: HeaderMap,
    /// Its body, after the request body phase.
    pub body: Bytes,
}

/// The response the client receives.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// The status code.
    pub status: u16,
    /// The header fields.
    pub headers: HeaderMap,
    /// The body, after the response body phase.
    pub body: Bytes,
}

/// A log level, as `proxy_log` numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// 0.
    Trace,
    /// 1.
    Debug,
    /// 2 (WASI stdout too).
    Info,
    /// 3.
    Warn,
    /// 4 and above (WASI stderr too).
    Error,
}

/// One line a filter logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: LogLevel,
    /// The filter that logged it.
    pub filter: String,
    /// The text.
    pub message: String,
}

/// A guest metric and how it moved during a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricChange {
    /// The name as the filter defined it.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: CustomKind,
    /// The value after the run (a histogram's: its number of observations).
    pub value: i64,
    /// How much it changed during the run.
    pub delta: i64,
}

/// A filter failure: the request ended (500, or the filter was skipped with
/// `on_error: allow`) and the VM was discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureReport {
    /// The filter that failed.
    pub filter: String,
    /// `trap`, `timeout` or `memory`.
    pub kind: String,
    /// What the host logged about it.
    pub message: String,
}

/// One `http_call` a filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallRecord {
    /// The upstream it named.
    pub upstream: String,
    /// The request's method.
    pub method: String,
    /// The request's path.
    pub path: String,
    /// Whether the test had an answer for it.
    pub answered: bool,
}

impl Outcome {
    /// The metric `name`'s change during the run, if it moved or was defined.
    pub fn metric(&self, name: &str) -> Option<&MetricChange> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Whether some log line's text contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.message.contains(needle))
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        })
    }
}

/// A summary for failure messages: where the request went and what came back.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.upstream_request {
            Some(r) => write!(f, "forwarded {} {}", r.method, r.path)?,
            None => f.write_str("not forwarded")?,
        }
        let origin = if self.local { "local" } else { "upstream" };
        write!(
            f,
            "; {origin} response {} {:?}",
            self.response.status,
            String::from_utf8_lossy(&self.response.body)
        )?;
        if let Some(x) = &self.failure {
            write!(f, "; {} failure: {}", x.kind, x.message)?;
        }
        for w in &self.host_warnings {
            write!(f, "; host: {w}")?;
        }
        Ok(())
    }
}

/// `name: value` lines, for printing a header map.
pub(crate) fn show_headers(h: &HeaderMap) -> String {
    let fields: Vec<String> = h
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect();
    format!("{{{}}}", fields.join(", "))
}
