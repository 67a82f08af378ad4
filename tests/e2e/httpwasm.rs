//! http-wasm filters (the ABI of Traefik's plugins) through the real binary: the guest
//! in `tests/filters/httpwasm`, built from source with the `http-wasm-guest` crate,
//! between a real client and a real upstream — the behaviours Traefik documents for
//! its plugins (read and set headers, rewrite the URI, rewrite a body, deny), in one
//! chain with a proxy-wasm filter, and the hostile ones (a guest that traps or spins
//! fails only its own request, is counted, and gets a fresh VM).

use crate::support::*;

/// A proxy whose routes each run the http-wasm guest in one mode, in front of
/// `backend`.
fn start(backend: &Backend) -> (ConfDir, Proxy) {
    let guest = crate::wasm_build::filter("httpwasm");
    let probe = crate::wasm_build::filter("probe");
    let conf = ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
upstreams: [{{ name: app, targets: [{{ address: {addr} }}] }}]
routes:
  - {{ name: headers, match: {{ path_prefix: /headers }}, filters: [hw-headers], upstream: app }}
  - {{ name: rewrite, match: {{ path_prefix: /old }}, filters: [hw-rewrite], upstream: app }}
  - {{ name: body, match: {{ path_prefix: /body }}, filters: [hw-body], upstream: app }}
  - {{ name: deny, match: {{ path_prefix: /deny }}, filters: [tag, hw-deny], upstream: app }}
  - {{ name: hostile, match: {{ path_prefix: /hostile }}, filters: [hw-hostile], upstream: app }}
filters:
  - {{ name: hw-headers, wasm: {guest}, config: {{ mode: headers }} }}
  - {{ name: hw-rewrite, wasm: {guest}, config: {{ mode: rewrite }} }}
  - {{ name: hw-body, wasm: {guest}, config: {{ mode: body }} }}
  - {{ name: hw-deny, wasm: {guest}, config: {{ mode: deny }} }}
  - {{ name: hw-hostile, wasm: {guest}, config: {{ mode: hostile }}, limits: {{ callback_timeout: 100ms }} }}
  - {{ name: tag, wasm: {probe}, config: \"pass:tag\" }}
",
        addr = backend.addr(),
        guest = guest.display(),
        probe = probe.display(),
    ));
    let proxy = Proxy::start(&conf);
    (conf, proxy)
}

/// Answers with the request's body (or `upstream says hi`), and says which path it saw.
fn upstream() -> Backend {
    Backend::start(|req| {
        let body = if req.body.is_empty() {
            "upstream says hi".to_string()
        } else {
            String::from_utf8_lossy(&req.body).into_owned()
        };
        Reply::text(200, &body).header("x-upstream-path", &req.path)
    })
}

fn seen_header(seen: &Seen, name: &str) -> Option<String> {
    seen.headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

#[tokio::test]
async fn an_http_wasm_plugin_reads_and_sets_request_and_response_headers() {
    let backend = upstream();
    let (_conf, proxy) = start(&backend);
    let resp = get_with(
        &proxy.url("web", "/headers/a?b=1"),
        &[("x-user", "ada"), ("x-remove-me", "1")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(
        h.get("x-hw-seen").map(|v| v.as_bytes()),
        Some(&b"yes"[..]),
        "{h:?}"
    );
    assert_eq!(
        h.get("x-hw-status").map(|v| v.as_bytes()),
        Some(&b"200"[..]),
        "{h:?}"
    );
    assert_eq!(resp.text().await.unwrap_or_default(), "upstream says hi");
    let seen = backend.seen();
    let seen = seen
        .last()
        .unwrap_or_else(|| panic!("the upstream saw nothing"));
    assert_eq!(seen_header(seen, "x-hw-user").as_deref(), Some("ada"));
    assert_eq!(seen_header(seen, "x-remove-me"), None);
    let info = seen_header(seen, "x-hw-info").unwrap_or_default();
    assert!(
        info.starts_with("GET /headers/a?b=1 HTTP/1.1 127.0.0.1:"),
        "method, URI, protocol and source address: {info:?}"
    );
    assert!(
        proxy.wait_for_log(
            "http-wasm headers: request seen",
            std::time::Duration::from_secs(5)
        ),
        "the guest's log line: {}",
        proxy.logs()
    );
}

#[tokio::test]
async fn an_http_wasm_plugin_rewrites_the_uri_and_the_method() {
    let backend = upstream();
    let (_conf, proxy) = start(&backend);
    let resp = get_with(
        &proxy.url("web", "/old/thing?q=1"),
        &[("x-hw-method", "PUT")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-upstream-path").map(|v| v.as_bytes()),
        Some(&b"/new/thing?q=1"[..])
    );
    let seen = backend.seen();
    assert_eq!(seen.last().map(|s| s.method.as_str()), Some("PUT"));
}

#[tokio::test]
async fn an_http_wasm_plugin_rewrites_request_and_response_bodies() {
    let backend = upstream();
    let (_conf, proxy) = start(&backend);
    let resp = client()
        .post(proxy.url("web", "/body"))
        .body("the cat sat on the cat mat")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /body: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("x-hw-body").map(|v| v.as_bytes()),
        Some(&b"upper"[..])
    );
    let length = resp.headers().get("content-length").cloned();
    let body = resp.text().await.unwrap_or_default();
    // The upstream echoed the rewritten request body; the guest upper-cased the answer.
    assert_eq!(body, "THE DOG SAT ON THE DOG MAT");
    assert_eq!(length.as_ref().map(|v| v.as_bytes()), Some(&b"26"[..]));
    let seen = backend.seen();
    let seen = seen
        .last()
        .unwrap_or_else(|| panic!("the upstream saw nothing"));
    assert_eq!(&seen.body[..], b"the dog sat on the dog mat");
    assert_eq!(seen_header(seen, "content-length").as_deref(), Some("26"));
}

#[tokio::test]
async fn an_http_wasm_plugin_that_does_not_call_next_denies() {
    let backend = upstream();
    let (_conf, proxy) = start(&backend);
    let resp = get_with(&proxy.url("web", "/deny"), &[]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain"[..])
    );
    assert_eq!(
        resp.text().await.unwrap_or_default(),
        "denied by http-wasm\n"
    );
    assert_eq!(
        backend.requests(),
        0,
        "a denied request reached the upstream"
    );
    let resp = get_with(&proxy.url("web", "/deny"), &[("x-token", "secret")]).await;
    assert_eq!(resp.status(), 200);
    let seen = backend.seen();
    // The proxy-wasm filter before it in the chain ran too.
    assert_eq!(
        seen.last()
            .and_then(|s| seen_header(s, "x-chain"))
            .as_deref(),
        Some("tag")
    );
}

#[tokio::test]
async fn a_trapping_or_spinning_http_wasm_plugin_fails_only_its_own_request() {
    let backend = upstream();
    let (_conf, proxy) = start(&backend);
    for (header, kind) in [("x-trap", "trap"), ("x-spin", "timeout")] {
        let resp = get_with(&proxy.url("web", "/hostile"), &[(header, "1")]).await;
        assert_eq!(resp.status(), 500, "{kind}: the request fails");
        // Its VM is made again: the next request is served.
        for _ in 0..3 {
            let resp = get_with(&proxy.url("web", "/hostile"), &[]).await;
            assert_eq!(resp.status(), 200, "after a {kind}");
        }
        let resp = get_with(&proxy.url("web", "/headers"), &[]).await;
        assert_eq!(resp.status(), 200, "another route after a {kind}");
        let metrics = proxy.metrics().await;
        let series =
            format!("portcullis_filter_failures_total{{filter=\"hw-hostile\",kind=\"{kind}\"}}");
        assert_eq!(sample(&metrics, &series), 1, "{series}:\n{metrics}");
    }
}
