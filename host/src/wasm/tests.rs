//! In-process tests of the runtime: real modules compiled from `tests/filters`, driven
//! through [`HttpFilters`] without a server.

mod abi;
mod abi_versions;
mod attributes;
mod chain;
pub(crate) mod httpwasm;
mod limits;
mod shadow;
// One recipe for building the test filters, shared with the e2e tests and benches.
#[path = "../../../tests/e2e/wasm_build.rs"]
mod wasm_build;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::*;
use crate::config::{FilterLimits, OnError, Origin};

/// The test filters' wasm (`tests/filters`), built once per test run.
pub(crate) fn probe_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let path = wasm_build::filter("probe");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    })
}

/// A filter config running the probe in `mode` (its config string).
pub(crate) fn filter(name: &str, mode: &str) -> FilterConfig {
    FilterConfig {
        name: name.to_string(),
        source: FilterSource::Wasm(PathBuf::from("probe.wasm")),
        root_id: format!("root-{name}"),
        config: mode.as_bytes().to_vec(),
        on_error: OnError::Deny,
        // Generous: the test machine is loaded; tests of the deadline set their own.
        limits: FilterLimits {
            callback_timeout: std::time::Duration::from_secs(2),
            ..FilterLimits::default()
        },
        asynchronous: false,
        integrity: Default::default(),
        origin: Origin {
            file: "filters.yaml".into(),
            line: 7,
        },
    }
}

/// Configures the probe as `filter`.
pub(crate) fn plugin(f: &FilterConfig) -> Arc<Plugin> {
    let rt = Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.plugin_from_bytes(f, probe_wasm()).unwrap_or_else(|e| {
        panic!(
            "filter {} ({:?}) should configure, got: {e}",
            f.name,
            String::from_utf8_lossy(&f.config)
        )
    })
}

pub(crate) fn info() -> StreamInfo {
    StreamInfo {
        client: "10.1.2.3:4567".parse().unwrap_or_else(|_| unreachable!()),
        local: "127.0.0.1:8080".parse().unwrap_or_else(|_| unreachable!()),
        listener: "web".into(),
        route: "api".into(),
        tls_version: None,
    }
}

/// A chain of `plugins` on route `api` with those at the `true` indexes of `shadow`
/// in shadow mode.
pub(crate) fn shadowed(plugins: &[Arc<Plugin>], shadow: &[bool]) -> HttpFilters {
    let mut chain = HttpFilters::new(plugins, info());
    chain.set_shadow(&HttpFilters::shadow_counters(plugins, shadow, "api"));
    chain
}

pub(crate) fn request(path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    request_with("GET", path, headers)
}

/// A request head for `method` and `path` on host `api.example.com`, with `headers`.
pub(crate) fn request_with(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(())
        .unwrap_or_else(|e| panic!("request: {e}"))
        .into_parts()
        .0
}

pub(crate) fn response(status: u16) -> http::response::Parts {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(())
        .unwrap_or_else(|e| panic!("response: {e}"))
        .into_parts()
        .0
}

/// All values of `name` in `h`, in order.
pub(crate) fn values(h: &http::HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

pub(crate) fn header(h: &http::HeaderMap, name: &str) -> String {
    values(h, name).join(",")
}

/// Expects `Continue`, else says what came back.
pub(crate) fn cont(d: Decision) {
    match d {
        Decision::Continue => {}
        Decision::Respond(r) => panic!(
            "expected Continue, got a {} response: {:?}",
            r.status(),
            String::from_utf8_lossy(r.body())
        ),
        Decision::Fail(f) => panic!("expected Continue, got a failure: {f}"),
    }
}

/// Expects a response, else says what came back.
pub(crate) fn respond(d: Decision) -> http::Response<Bytes> {
    match d {
        Decision::Respond(r) => r,
        Decision::Continue => panic!("expected a response, got Continue"),
        Decision::Fail(f) => panic!("expected a response, got a failure: {f}"),
    }
}

/// Expects a filter failure, else says what came back.
pub(crate) fn failed(d: Decision) -> crate::wasm::FilterFailure {
    match d {
        Decision::Fail(f) => f,
        Decision::Continue => panic!("expected a failure, got Continue"),
        Decision::Respond(r) => panic!("expected a failure, got a {} response", r.status()),
    }
}
