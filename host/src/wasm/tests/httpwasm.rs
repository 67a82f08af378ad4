//! The http-wasm host, in process: the `tests/filters/httpwasm` guest (built with the
//! `http-wasm-guest` crate) through [`HttpFilters`], beside the proxy-wasm probe.

use std::time::Duration;

use super::*;
use crate::wasm::state::AbiVersion;

/// The http-wasm guest's module (`tests/filters/httpwasm`), built once per test run.
pub(crate) fn guest_wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| {
        let path = wasm_build::filter("httpwasm");
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    })
}

/// The http-wasm guest configured as `name` in `mode`, as YAML `{mode: ...}` becomes.
fn guest(name: &str, mode: &str) -> Arc<Plugin> {
    guest_with(name, mode, |_| {})
}

fn guest_with(name: &str, mode: &str, edit: impl FnOnce(&mut FilterConfig)) -> Arc<Plugin> {
    let mut f = filter(name, "");
    f.source = FilterSource::Wasm(PathBuf::from("httpwasm.wasm"));
    f.config = format!("{{\"mode\":\"{mode}\"}}").into_bytes();
    edit(&mut f);
    let rt = Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.plugin_from_bytes(&f, guest_wasm())
        .unwrap_or_else(|e| panic!("http-wasm guest {name} should configure: {e}"))
}

#[tokio::test]
async fn an_http_wasm_guest_is_recognised_and_reads_and_sets_headers() {
    let p = guest("hw-headers", "headers");
    assert_eq!(p.compiled.abi, AbiVersion::HttpWasm);
    assert!(p.headers_only(), "an http-wasm filter has no body phases");
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let mut req = request("/a?b=c", &[("x-user", "ada"), ("x-remove-me", "1")]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(header(&req.headers, "x-hw-user"), "ada");
    assert!(req.headers.get("x-remove-me").is_none());
    assert_eq!(
        header(&req.headers, "x-hw-info"),
        "GET /a?b=c HTTP/1.1 10.1.2.3:4567"
    );
    let mut resp = response(201);
    cont(chain.response_headers(&mut resp, true).await);
    assert_eq!(header(&resp.headers, "x-hw-seen"), "yes");
    assert_eq!(header(&resp.headers, "x-hw-status"), "201");
    assert_eq!(
        header(&resp.headers, "x-hw-ctx"),
        "7",
        "handle_request's context"
    );
    chain.finish().await;
}

#[tokio::test]
async fn an_http_wasm_guest_runs_in_one_chain_with_a_proxy_wasm_filter() {
    let hw = guest("hw-mixed", "headers");
    let probe = plugin(&super::filter("pw-mixed", "pass:pw"));
    let mut chain = HttpFilters::new(&[probe, hw], info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(header(&req.headers, "x-chain"), "pw");
    assert_eq!(header(&req.headers, "x-hw-user"), "anonymous");
    chain.finish().await;
}

#[tokio::test]
async fn an_http_wasm_guest_rewrites_the_uri_and_method() {
    let p = guest("hw-rewrite", "rewrite");
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let mut req = request("/old/x?q=1", &[("x-hw-method", "POST")]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(req.uri.to_string(), "/new/x?q=1");
    assert_eq!(req.method, http::Method::POST);
    chain.finish().await;
}

#[tokio::test]
async fn an_http_wasm_guest_that_does_not_call_next_answers_itself() {
    let p = guest("hw-deny", "deny");
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let r = respond(chain.request_headers(&mut request("/", &[]), true).await);
    assert_eq!(r.status(), 403);
    assert_eq!(header(r.headers(), "content-type"), "text/plain");
    assert_eq!(r.body().as_ref(), b"denied by http-wasm\n");
    chain.finish().await;
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let mut req = request("/", &[("x-token", "secret")]);
    cont(chain.request_headers(&mut req, true).await);
    chain.finish().await;
}

#[tokio::test]
async fn an_http_wasm_guest_rewrites_whole_bodies_it_buffers() {
    let p = guest("hw-body", "body");
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    assert!(chain.buffers_request() && chain.buffers_response());
    chain.set_request_body(Bytes::from_static(b"the cat sat"));
    cont(chain.request_headers(&mut request("/", &[]), false).await);
    assert_eq!(
        chain.take_request_body(),
        Some((Bytes::from_static(b"the dog sat"), true))
    );
    chain.set_response_body(Bytes::from_static(b"hello"));
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, false).await);
    assert_eq!(
        chain.take_response_body(),
        Some((Bytes::from_static(b"HELLO"), true))
    );
    chain.finish().await;
    // A proxy-wasm chain asks for nothing to be collected.
    let probe = plugin(&super::filter("pw-nobuffer", "pass:pw"));
    let chain = HttpFilters::new(&[probe], info());
    assert!(!chain.buffers_request() && !chain.buffers_response());
}

#[tokio::test]
async fn a_trapping_or_spinning_http_wasm_guest_fails_its_request_only() {
    let p = guest_with("hw-hostile", "hostile", |f| {
        f.limits.callback_timeout = Duration::from_millis(100);
    });
    for (header_name, kind) in [("x-trap", "trap"), ("x-spin", "timeout")] {
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        let f = failed(
            chain
                .request_headers(&mut request("/", &[(header_name, "1")]), true)
                .await,
        );
        assert_eq!((f.filter.as_str(), f.failure.kind()), ("hw-hostile", kind));
        chain.finish().await;
        assert_eq!(crate::wasm::failures("hw-hostile", kind), 1);
        // A fresh VM serves the next request.
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        cont(chain.request_headers(&mut request("/", &[]), true).await);
        chain.finish().await;
    }
}

#[tokio::test]
async fn a_shadow_http_wasm_guest_changes_nothing_and_is_counted() {
    use crate::metrics::global;
    let metric = |series: &str| {
        global()
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let headers = guest("hw-shadow-headers", "headers");
    let deny = guest("hw-shadow-deny", "deny");
    let mut chain = shadowed(&[deny, headers], &[true, true]);
    let mut req = request("/", &[("x-user", "ada")]);
    cont(chain.request_headers(&mut req, true).await);
    assert!(req.headers.get("x-hw-user").is_none(), "{:?}", req.headers);
    let mut resp = response(200);
    cont(chain.response_headers(&mut resp, true).await);
    assert!(
        resp.headers.get("x-hw-seen").is_none() && resp.headers.get("x-hw-status").is_none(),
        "a shadow guest's response headers went out: {:?}",
        resp.headers
    );
    chain.finish().await;
    let deny = r#"portcullis_filter_shadow_would_deny_total{filter="hw-shadow-deny",route="api",status="403"}"#;
    assert_eq!(metric(deny), 1, "{}", global().render());
    let modify =
        r#"portcullis_filter_shadow_would_modify_total{filter="hw-shadow-headers",route="api"}"#;
    assert_eq!(metric(modify), 1, "{}", global().render());
}
