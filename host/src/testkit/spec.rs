//! Spec files: a filter and the cases to run through it, in YAML, read with the
//! configuration loader's own machinery (lines, field paths, every error at once).
//!
//! ```yaml
//! filter:                       # exactly as in a configuration's `filters:` list
//!   name: path-guard
//!   wasm: filter.wasm           # relative to this file
//!   config: /admin
//!   sha256: 9f86d0...           # optional: checked before the module is compiled
//! shadow: false                 # optional: run it as a route's shadow filter; cases
//!                               # then expect `would_deny: STATUS` / `would_modify`
//! http_calls:                   # optional: answers to the filter's http_call, by upstream
//!   auth: { status: 200, headers: { x-user: alice }, body: "ok" }
//! cases:
//!   - name: a public path goes through
//!     request: { method: GET, path: /public, authority: example.com,
//!                headers: { x-user: alice }, body: "...", client: 10.0.0.1:4000, tls: false,
//!                route: api }
//!     upstream: { status: 200, headers: { content-type: text/plain }, body: "hi" }
//!     expect: { upstream: true, status: 200, upstream_headers: { x-checked: "yes" } }
//!   - name: /admin is refused
//!     request: { path: /admin/users }
//!     expect: { status: 403, body_contains: forbidden, logs_contain: [denied] }
//! ```

use std::path::Path;

use bytes::Bytes;

use super::expect::{Expect, Mismatch};
use super::outcome::Outcome;
use super::request::{Request, UpstreamResponse};
use super::{Filter, TestkitError};
use crate::config::walk::{Cx, Field, Fields};
use crate::config::yaml::{self, Kind};
use crate::config::{ConfigError, ConfigErrors};

/// A loaded spec file.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The file, as it was named.
    pub file: String,
    /// The filter under test (with its `http_calls` answers).
    pub filter: Filter,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One case of a spec.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its `name`.
    pub name: String,
    /// The line it starts on.
    pub line: usize,
    /// The request sent.
    pub request: Request,
    /// The upstream's answer (`200`, no body, unless given).
    pub upstream: UpstreamResponse,
    /// What must hold.
    pub expect: Expect,
}

/// How one case went.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// The case's name.
    pub name: String,
    /// The line it starts on.
    pub line: usize,
    /// What the run did.
    pub outcome: Outcome,
    /// The expectations that did not hold; empty when the case passed.
    pub mismatches: Vec<Mismatch>,
}

/// Reads and decodes the spec at `path`; every problem found, each with its line.
pub fn load(path: &Path) -> Result<Spec, ConfigErrors> {
    let file = path.display().to_string();
    let fail = |line, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line,
            path: String::new(),
            message,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(0, format!("cannot read: {e}")))?;
    let docs =
        yaml::parse(&text).map_err(|e| fail(e.line, format!("invalid YAML: {}", e.message)))?;
    let mut docs = docs.iter().filter(|d| !d.is_null());
    let (Some(doc), None) = (docs.next(), docs.next()) else {
        return Err(fail(
            1,
            "expected one YAML document with `filter:` and `cases:`".into(),
        ));
    };
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let mut cx = Cx {
        file: file.clone(),
        base: absolute
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf(),
        errors: &mut errors,
        files: &mut files,
    };
    let spec = decode(&mut cx, doc, &file);
    match spec {
        Some(spec) if errors.is_empty() => Ok(spec),
        _ => {
            errors.sort_by_key(|e| e.line);
            if errors.is_empty() {
                return Err(fail(0, "the spec could not be decoded".into()));
            }
            Err(ConfigErrors(errors))
        }
    }
}

/// Loads the spec's filter and runs every case, in order, on one VM.
pub fn run(spec: &Spec) -> Result<Vec<CaseReport>, TestkitError> {
    let harness = spec.filter.clone().load()?;
    let mut out = Vec::with_capacity(spec.cases.len());
    for case in &spec.cases {
        let outcome = harness.run(&case.request, &case.upstream)?;
        out.push(CaseReport {
            name: case.name.clone(),
            line: case.line,
            mismatches: case.expect.check(&outcome),
            outcome,
        });
    }
    Ok(out)
}

fn decode(cx: &mut Cx, doc: &yaml::Node, file: &str) -> Option<Spec> {
    let mut f = Fields::new(cx, &Field::root(doc))?;
    let filter = f
        .require(cx, "filter")
        .and_then(|v| crate::config::filter::filter(cx, &v));
    let calls = f.take("http_calls").map(|v| http_calls(cx, &v));
    let shadow = f.take("shadow").map(|v| v.bool(cx));
    let cases = f.require(cx, "cases").and_then(|v| {
        let items = v.list(cx)?;
        if items.is_empty() {
            v.error(cx, "needs at least one case");
        }
        Some(items.iter().filter_map(|i| case(cx, i)).collect::<Vec<_>>())
    });
    f.finish(cx);
    let mut filter = Filter::from_config(filter?).shadow(shadow.unwrap_or(Some(false))?);
    for (upstream, response) in calls.unwrap_or(Some(Vec::new()))? {
        filter = filter.http_call_response(&upstream, response);
    }
    Some(Spec {
        file: file.to_string(),
        filter,
        cases: cases?,
    })
}

fn http_calls(cx: &mut Cx, field: &Field) -> Option<Vec<(String, UpstreamResponse)>> {
    let mut out = Vec::new();
    for (name, v) in field.entries(cx)? {
        out.push((name, upstream(cx, &v)?));
    }
    Some(out)
}

fn case(cx: &mut Cx, item: &Field) -> Option<Case> {
    let (mut f, name) = Fields::named(cx, item, "cases")?;
    let request = match f.take("request") {
        Some(v) => request(cx, &v),
        None => Some(Request::get("/")),
    };
    let answer = match f.take("upstream") {
        Some(v) => upstream(cx, &v),
        None => Some(UpstreamResponse::ok()),
    };
    let expect = f.require(cx, "expect").and_then(|v| expect(cx, &v));
    f.finish(cx);
    Some(Case {
        name: name?,
        line: item.line,
        request: request?,
        upstream: answer?,
        expect: expect?,
    })
}

fn request(cx: &mut Cx, field: &Field) -> Option<Request> {
    let mut f = Fields::new(cx, field)?;
    let mut r = Request::get("/");
    let mut ok = true;
    if let Some(v) = f.take("method") {
        ok &= set(&mut r.method, v.string(cx));
    }
    if let Some(v) = f.take("path") {
        ok &= set(&mut r.path, v.string(cx));
    }
    if let Some(v) = f.take("authority") {
        ok &= set(&mut r.authority, v.string(cx));
    }
    if let Some(v) = f.take("headers") {
        ok &= set(&mut r.headers, headers(cx, &v));
    }
    ok &= set(&mut r.body, body(cx, &mut f));
    if let Some(v) = f.take("client") {
        ok &= set(&mut r.client, v.socket_addr(cx));
    }
    if let Some(v) = f.take("tls") {
        ok &= set(&mut r.tls, v.bool(cx));
    }
    if let Some(v) = f.take("route") {
        ok &= set(&mut r.route, v.string(cx));
    }
    f.finish(cx);
    if ok && let Err(e) = r.head() {
        field.error(cx, e.to_string());
        return None;
    }
    ok.then_some(r)
}

fn upstream(cx: &mut Cx, field: &Field) -> Option<UpstreamResponse> {
    let mut f = Fields::new(cx, field)?;
    let mut r = UpstreamResponse::ok();
    let mut ok = true;
    if let Some(v) = f.take("status") {
        ok &= set(&mut r.status, status(cx, &v));
    }
    if let Some(v) = f.take("headers") {
        ok &= set(&mut r.headers, headers(cx, &v));
    }
    ok &= set(&mut r.body, body(cx, &mut f));
    f.finish(cx);
    if ok && let Err(e) = r.parts() {
        field.error(cx, e.to_string());
        return None;
    }
    ok.then_some(r)
}

fn expect(cx: &mut Cx, field: &Field) -> Option<Expect> {
    let mut f = Fields::new(cx, field)?;
    let mut e = Expect::default();
    let mut ok = true;
    if let Some(v) = f.take("upstream") {
        ok &= set(&mut e.upstream, v.bool(cx).map(Some));
    }
    if let Some(v) = f.take("status") {
        ok &= set(&mut e.status, status(cx, &v).map(Some));
    }
    if let Some(v) = f.take("headers") {
        ok &= set(&mut e.headers, headers(cx, &v));
    }
    if let Some(v) = f.take("headers_absent") {
        ok &= set(&mut e.headers_absent, names(cx, &v));
    }
    ok &= set(&mut e.body, optional(cx, f.take("body")));
    ok &= set(&mut e.body_contains, optional(cx, f.take("body_contains")));
    ok &= set(&mut e.upstream_path, optional(cx, f.take("upstream_path")));
    ok &= set(
        &mut e.upstream_method,
        optional(cx, f.take("upstream_method")),
    );
    if let Some(v) = f.take("upstream_headers") {
        ok &= set(&mut e.upstream_headers, headers(cx, &v));
    }
    if let Some(v) = f.take("upstream_headers_absent") {
        ok &= set(&mut e.upstream_headers_absent, names(cx, &v));
    }
    ok &= set(&mut e.upstream_body, optional(cx, f.take("upstream_body")));
    if let Some(v) = f.take("logs_contain") {
        ok &= set(&mut e.logs_contain, texts(cx, &v));
    }
    if let Some(v) = f.take("metrics_delta") {
        ok &= set(&mut e.metrics_delta, metrics(cx, &v));
    }
    if let Some(v) = f.take("would_deny") {
        // `false`: no reply; a status: a reply with it.
        let none = matches!(&v.node.kind, Kind::Scalar { text, plain: true } if text == "false");
        let want = if none {
            Some(None)
        } else {
            status(cx, &v).map(Some)
        };
        ok &= set(&mut e.would_deny, want.map(Some));
    }
    if let Some(v) = f.take("would_modify") {
        ok &= set(&mut e.would_modify, v.bool(cx).map(Some));
    }
    if let Some(v) = f.take("failure") {
        let kinds = [
            ("none", "none"),
            ("trap", "trap"),
            ("timeout", "timeout"),
            ("memory", "memory"),
        ];
        ok &= set(
            &mut e.failure,
            v.choice(cx, &kinds).map(|k| Some(k.to_string())),
        );
    }
    f.finish(cx);
    if ok && e == Expect::default() {
        field.error(cx, "expects nothing: give at least one expectation");
        return None;
    }
    ok.then_some(e)
}

/// Stores `value` if decoding it worked; says whether it did.
fn set<T>(slot: &mut T, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            *slot = v;
            true
        }
        None => false,
    }
}

/// Any scalar's text, empty allowed (`""`): bodies and header values may be empty.
fn text(cx: &mut Cx, field: &Field) -> Option<String> {
    match &field.node.kind {
        Kind::Scalar { text, .. } if !field.node.is_null() || !text.is_empty() => {
            Some(text.to_string())
        }
        _ => {
            let found = field.node.type_name();
            field.error(cx, format!("expected a string, found {found}"));
            None
        }
    }
}

/// An optional string: `Some(None)` when absent, `None` when present and wrong.
fn optional(cx: &mut Cx, field: Option<Field>) -> Option<Option<String>> {
    match field {
        None => Some(None),
        Some(v) => text(cx, &v).map(Some),
    }
}

/// A string, or a list of strings.
fn texts(cx: &mut Cx, field: &Field) -> Option<Vec<String>> {
    match &field.node.kind {
        Kind::Seq(_) => field.list(cx)?.iter().map(|i| text(cx, i)).collect(),
        _ => text(cx, field).map(|t| vec![t]),
    }
}

/// `name: value` (or `name: [v1, v2]` for a repeated field).
fn headers(cx: &mut Cx, field: &Field) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, v) in field.entries(cx)? {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            v.error(cx, format!("`{name}` is not a valid header name"));
            ok = false;
            continue;
        }
        match texts(cx, &v) {
            Some(values) => out.extend(values.into_iter().map(|t| (name.clone(), t))),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A list of header names (or one).
fn names(cx: &mut Cx, field: &Field) -> Option<Vec<String>> {
    texts(cx, field)
}

/// `body: TEXT` or `body_size: N` (N bytes of `x`, for size limits).
fn body(cx: &mut Cx, f: &mut Fields) -> Option<Bytes> {
    let text_body = f.take("body");
    let size = f.take("body_size");
    match (text_body, size) {
        (Some(_), Some(s)) => {
            s.error(cx, "give either body or body_size, not both");
            None
        }
        (Some(b), None) => text(cx, &b).map(Bytes::from),
        (None, Some(s)) => {
            let n = s.int(cx, 0, 64 << 20)?;
            Some(Bytes::from(vec![b'x'; usize::try_from(n).unwrap_or(0)]))
        }
        (None, None) => Some(Bytes::new()),
    }
}

fn status(cx: &mut Cx, field: &Field) -> Option<u16> {
    field.int(cx, 100, 999).and_then(|n| u16::try_from(n).ok())
}

fn metrics(cx: &mut Cx, field: &Field) -> Option<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for (name, v) in field.entries(cx)? {
        out.push((name, v.int(cx, i64::MIN, i64::MAX)?));
    }
    Some(out)
}
