//! The standard filters as the proxy runs them: the embedded modules, configured by the
//! real runtime and driven through the chain by the test kit (the rate limiter's
//! foreign function included), without a server. End-to-end tests through the binary are in
//! `tests/e2e/filters_*.rs`.

use std::sync::Arc;

use bytes::Bytes;

use crate::config::{FilterConfig, FilterLimits, FilterSource, OnError, Origin};
use crate::testkit::{Harness, Request, UpstreamResponse};
use crate::wasm::{Plugin, StreamInfo};

mod auth;
mod edge;

const BCRYPT_U_U: &str = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

fn config(name: &str, builtin: &str, json: &str) -> FilterConfig {
    FilterConfig {
        name: name.to_string(),
        source: FilterSource::Builtin(builtin.to_string()),
        root_id: String::new(),
        config: json.as_bytes().to_vec(),
        on_error: OnError::Deny,
        limits: FilterLimits {
            callback_timeout: std::time::Duration::from_secs(5),
            ..FilterLimits::default()
        },
        asynchronous: false,
        integrity: Default::default(),
        origin: Origin {
            file: "filters.yaml".into(),
            line: 3,
        },
    }
}

/// Configures builtin `builtin` as filter `name`; the error's text when refused.
fn try_plugin(name: &str, builtin: &str, json: &str) -> Result<Arc<Plugin>, String> {
    let rt = crate::extensions::runtime().map_err(|e| e.to_string())?;
    rt.plugin(&config(name, builtin, json))
        .map_err(|e| e.to_string())
}

fn plugin(name: &str, builtin: &str, json: &str) -> Arc<Plugin> {
    try_plugin(name, builtin, json)
        .unwrap_or_else(|e| panic!("{builtin} should accept {json}, got: {e}"))
}

fn info(client: &str, tls: bool) -> StreamInfo {
    StreamInfo {
        client: client
            .parse()
            .unwrap_or_else(|_| panic!("bad test address {client}")),
        local: "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
        listener: "web".into(),
        route: "api".into(),
        tls_version: tls.then_some("TLSv1_3"),
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    crate::wasm::tests::request_with(method, path, headers)
}

/// One request through `plugins` with the test kit: the request phase, then (when it
/// continued) a 200 response through the response phase. Returns the request as sent
/// upstream (if it was) and the response the client gets.
async fn run(
    plugins: &[Arc<Plugin>],
    info: StreamInfo,
    req: http::request::Parts,
) -> (Option<http::request::Parts>, http::Response<Bytes>) {
    let mut request = Request::new(req.method.as_str(), &req.uri.to_string())
        .client(info.client)
        .tls(info.tls_version.is_some())
        .route(&info.route);
    request.headers.clear();
    for (k, v) in &req.headers {
        let v = String::from_utf8_lossy(v.as_bytes());
        if k == http::header::HOST {
            request = request.authority(&v);
        } else {
            request = request.header(k.as_str(), &v);
        }
    }
    let upstream = UpstreamResponse::ok().header("x-powered-by", "upstream");
    let out = Harness::from_plugins(plugins.to_vec())
        .run_async(&request, &upstream)
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    let sent = out.upstream_request.map(|f| {
        let mut head = http::Request::builder()
            .method(f.method.as_str())
            .uri(f.path.as_str())
            .body(())
            .unwrap_or_else(|e| panic!("forwarded request: {e}"))
            .into_parts()
            .0;
        head.headers = f.headers;
        head
    });
    let mut response = http::Response::new(out.response.body);
    *response.status_mut() = http::StatusCode::from_u16(out.response.status)
        .unwrap_or_else(|e| panic!("status {}: {e}", out.response.status));
    *response.headers_mut() = out.response.headers;
    (sent, response)
}

fn h(m: &http::HeaderMap, name: &str) -> String {
    m.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// The request went upstream; its head.
fn passed(out: &(Option<http::request::Parts>, http::Response<Bytes>)) -> &http::request::Parts {
    match &out.0 {
        Some(r) => r,
        None => panic!(
            "expected the request to pass, got {} {:?}",
            out.1.status(),
            String::from_utf8_lossy(out.1.body())
        ),
    }
}

/// The filter answered; its status and response.
fn refused(
    out: &(Option<http::request::Parts>, http::Response<Bytes>),
    status: u16,
) -> &http::Response<Bytes> {
    assert!(
        out.0.is_none(),
        "expected a {status} answer, the request went upstream"
    );
    assert_eq!(
        out.1.status().as_u16(),
        status,
        "body: {:?}",
        String::from_utf8_lossy(out.1.body())
    );
    &out.1
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    for (builtin, json, field) in [
        ("rate-limit", r#"{"rate":0}"#, "config.rate"),
        (
            "basic-auth",
            r#"{"users":["alice:plain"]}"#,
            "config.users[0]",
        ),
        (
            "api-key",
            r#"{"keys":[{"sha256":"xyz","consumer":"c"}]}"#,
            "config.keys[0].sha256",
        ),
        (
            "jwt",
            r#"{"secret":"s","algorithms":["RS256"]}"#,
            "config.algorithms[0]",
        ),
        (
            "headers",
            r#"{"request":{"set":{"x":"${nope}"}}}"#,
            "config.request.set.x",
        ),
        ("redirect", r#"{"scheme":"ftp"}"#, "config.scheme"),
        (
            "ip-allowlist",
            r#"{"allow":["10.0.0.0/33"]}"#,
            "config.allow[0]",
        ),
        ("cors", r#"{"allow_origins":[]}"#, "config.allow_origins"),
    ] {
        match try_plugin("bad", builtin, json) {
            Ok(_) => panic!("{builtin} accepted {json}"),
            Err(e) => assert!(
                e.contains(field),
                "{builtin}: expected an error naming {field}, got: {e}"
            ),
        }
    }
}

#[test]
fn every_builtin_is_a_wasm_module() {
    for name in [
        "rate-limit",
        "basic-auth",
        "api-key",
        "jwt",
        "headers",
        "redirect",
        "ip-allowlist",
        "cors",
    ] {
        assert!(
            super::names().contains(&name),
            "{name} missing from {:?}",
            super::names()
        );
    }
    for name in super::names() {
        let m = super::module(name).unwrap_or_default();
        assert!(m.starts_with(b"\0asm"), "{name}: not a wasm module");
    }
    assert_eq!(super::module("no-such-filter"), None);
}
