//! Expectations about an [`Outcome`]: what a spec case's `expect:` says, checkable from
//! code too. Every field is optional; only those given are checked.

use std::fmt;

use super::outcome::{Outcome, show_headers};
use crate::wasm::ShadowDecision;

/// What a run should have done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Whether the request reached the upstream.
    pub upstream: Option<bool>,
    /// The status the client gets.
    pub status: Option<u16>,
    /// Headers the client gets, with these exact values (names case-insensitive; a
    /// repeated header is compared as its values joined with `, `).
    pub headers: Vec<(String, String)>,
    /// Headers the client must not get.
    pub headers_absent: Vec<String>,
    /// The client's body, exactly.
    pub body: Option<String>,
    /// Text the client's body contains.
    pub body_contains: Option<String>,
    /// The path (and query) the upstream gets.
    pub upstream_path: Option<String>,
    /// The method the upstream gets.
    pub upstream_method: Option<String>,
    /// Headers the upstream gets, with these values.
    pub upstream_headers: Vec<(String, String)>,
    /// Headers the upstream must not get.
    pub upstream_headers_absent: Vec<String>,
    /// The body the upstream gets, exactly.
    pub upstream_body: Option<String>,
    /// Texts that some log line of the filter contains, each.
    pub logs_contain: Vec<String>,
    /// How much each named metric changed during the run.
    pub metrics_delta: Vec<(String, i64)>,
    /// The failure (`trap`, `timeout`, `memory`), or `none`.
    pub failure: Option<String>,
    /// A shadow filter's reply that was not sent: its status, or `None` for no reply.
    pub would_deny: Option<Option<u16>>,
    /// Whether a shadow filter changed the request or response without effect.
    pub would_modify: Option<bool>,
}

/// One expectation that did not hold: what was expected, what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The expectation's name as a spec writes it, e.g. `status`, `headers.x-foo`.
    pub what: String,
    /// What it expected.
    pub expected: String,
    /// What came back.
    pub got: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, got {}",
            self.what, self.expected, self.got
        )
    }
}

impl Expect {
    /// Every expectation `out` does not meet (empty when it meets them all).
    pub fn check(&self, out: &Outcome) -> Vec<Mismatch> {
        let mut m = Vec::new();
        let mut miss = |what: String, expected: String, got: String| {
            m.push(Mismatch {
                what,
                expected,
                got,
            });
        };
        let fwd = out.upstream_request.as_ref();
        if let Some(want) = self.upstream
            && want != fwd.is_some()
        {
            let say = |b: bool| if b { "forwarded" } else { "not forwarded" };
            miss("upstream".into(), say(want).into(), out.to_string());
        }
        if let Some(want) = self.status
            && want != out.response.status
        {
            let got = out.response.status.to_string();
            miss("status".into(), want.to_string(), got);
        }
        let h = &out.response.headers;
        for (name, want) in &self.headers {
            if let Some(got) = differs(h, name, want) {
                miss(format!("headers.{name}"), format!("{want:?}"), got);
            }
        }
        for name in &self.headers_absent {
            if let Some(v) = joined(h, name) {
                miss(format!("headers_absent.{name}"), "absent".into(), v);
            }
        }
        let body = String::from_utf8_lossy(&out.response.body);
        if let Some(want) = &self.body
            && *want != body
        {
            miss("body".into(), format!("{want:?}"), format!("{body:?}"));
        }
        if let Some(want) = &self.body_contains
            && !body.contains(want.as_str())
        {
            miss(
                "body_contains".into(),
                format!("a body containing {want:?}"),
                format!("{body:?}"),
            );
        }
        let upstream_checks = self.upstream_path.is_some()
            || self.upstream_method.is_some()
            || self.upstream_body.is_some()
            || !self.upstream_headers.is_empty()
            || !self.upstream_headers_absent.is_empty();
        match fwd {
            None if upstream_checks => miss(
                "upstream_*".into(),
                "the request to reach the upstream".into(),
                out.to_string(),
            ),
            None => {}
            Some(r) => {
                if let Some(want) = &self.upstream_path
                    && *want != r.path
                {
                    miss("upstream_path".into(), want.clone(), r.path.clone());
                }
                if let Some(want) = &self.upstream_method
                    && !want.eq_ignore_ascii_case(&r.method)
                {
                    miss("upstream_method".into(), want.clone(), r.method.clone());
                }
                for (name, want) in &self.upstream_headers {
                    if let Some(got) = differs(&r.headers, name, want) {
                        miss(format!("upstream_headers.{name}"), format!("{want:?}"), got);
                    }
                }
                for name in &self.upstream_headers_absent {
                    if let Some(v) = joined(&r.headers, name) {
                        miss(
                            format!("upstream_headers_absent.{name}"),
                            "absent".into(),
                            v,
                        );
                    }
                }
                let sent = String::from_utf8_lossy(&r.body);
                if let Some(want) = &self.upstream_body
                    && *want != sent
                {
                    miss(
                        "upstream_body".into(),
                        format!("{want:?}"),
                        format!("{sent:?}"),
                    );
                }
            }
        }
        for want in &self.logs_contain {
            if !out.logged(want) {
                let lines: Vec<String> = out
                    .logs
                    .iter()
                    .map(|l| format!("[{}] {}", l.level, l.message))
                    .collect();
                miss(
                    "logs_contain".into(),
                    format!("a log line containing {want:?}"),
                    format!("{lines:?}"),
                );
            }
        }
        for (name, want) in &self.metrics_delta {
            let got = out.metric(name).map_or(0, |c| c.delta);
            if got != *want {
                let seen: Vec<String> = out
                    .metrics
                    .iter()
                    .map(|c| format!("{}{:+}", c.name, c.delta))
                    .collect();
                miss(
                    format!("metrics_delta.{name}"),
                    format!("{want:+}"),
                    format!("{got:+} (changed: {seen:?})"),
                );
            }
        }
        self.check_shadow(out, &mut miss);
        if let Some(want) = &self.failure {
            let got = out.failure.as_ref().map_or("none", |f| f.kind.as_str());
            if want != got {
                let detail = out
                    .failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(" ({})", f.message));
                miss("failure".into(), want.clone(), format!("{got}{detail}"));
            }
        }
        m
    }
}

impl Expect {
    /// `would_deny` and `would_modify`: what the shadow filter would have done.
    fn check_shadow(&self, out: &Outcome, miss: &mut impl FnMut(String, String, String)) {
        let denied = out.shadow.iter().find_map(|d| match d {
            ShadowDecision::WouldDeny { status, .. } => Some(*status),
            ShadowDecision::WouldModify { .. } => None,
        });
        let say = |s: Option<u16>| s.map_or_else(|| "no reply".to_string(), |s| s.to_string());
        if let Some(want) = self.would_deny
            && want != denied
        {
            miss("would_deny".into(), say(want), say(denied));
        }
        let modified = out
            .shadow
            .iter()
            .any(|d| matches!(d, ShadowDecision::WouldModify { .. }));
        if let Some(want) = self.would_modify
            && want != modified
        {
            miss(
                "would_modify".into(),
                want.to_string(),
                modified.to_string(),
            );
        }
    }
}

/// The values of `name` joined with `, `, if any.
fn joined(h: &http::HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = h
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// `None` when `name` is `want`; else what it is, with the whole map for context.
fn differs(h: &http::HeaderMap, name: &str, want: &str) -> Option<String> {
    match joined(h, name) {
        Some(v) if v == want => None,
        Some(v) => Some(format!("{v:?}")),
        None => Some(format!("no {name} header (have {})", show_headers(h))),
    }
}
