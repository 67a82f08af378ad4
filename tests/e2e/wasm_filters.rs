//! Wasm filters through the real driver over real sockets: headers, rewrites, local
//! responses, bodies, http_call, failures, and many streams interleaving on one VM.

use std::time::Duration;

use portcullis::config::{
    Config, FilterConfig, FilterLimits, FilterSource, OnError, Origin, RouteConfig,
};
use portcullis::extensions;
use portcullis::snapshot::Snapshot;
use serde_json::Value;

use crate::inproc::{Proxy, client, config, matching, route};
use crate::wasm_build;

fn probe(name: &str, mode: &str) -> FilterConfig {
    FilterConfig {
        name: name.into(),
        source: FilterSource::Wasm(wasm_build::filter("probe")),
        root_id: String::new(),
        config: mode.as_bytes().to_vec(),
        on_error: OnError::Deny,
        limits: FilterLimits {
            callback_timeout: Duration::from_secs(2),
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

fn routed(name: &str, prefix: &str, filters: &[&str]) -> RouteConfig {
    RouteConfig {
        filters: filters.iter().map(|f| f.to_string()).collect(),
        shadow: vec![],
        canaries: vec![],
        ..route(name, matching(None, Some(prefix)), "echo@internal")
    }
}

fn with_filters(routes: Vec<RouteConfig>, filters: Vec<FilterConfig>) -> Config {
    Config {
        filters,
        ..config(routes, vec![])
    }
}

async fn get(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut req = client().get(proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("body of {path}: {e}"));
    (status, headers, body)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("expected echo JSON, got {body:?}: {e}"))
}

#[tokio::test]
async fn filters_edit_headers_and_rewrite_the_request() {
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["tag", "rw"])],
        vec![probe("tag", "headers:tag"), probe("rw", "rewrite:rw")],
    ))
    .await;
    let (status, headers, body) = get(&proxy, "/x?q=1", &[("x-in", "hi")]).await;
    assert_eq!(status, 200, "body: {body}");
    let echo = json(&body);
    assert_eq!(echo["path"], "/rewritten/x", "echo: {echo}");
    assert_eq!(echo["query"], "q=1");
    assert_eq!(echo["headers"]["x-chain"], "tag, rw");
    assert_eq!(echo["headers"]["x-seen-tag"], "hi");
    assert_eq!(echo["headers"]["host"], "rewritten.example");
    let resp_chain: Vec<_> = headers.get_all("x-resp-chain").iter().collect();
    assert_eq!(resp_chain, ["rw", "tag"], "response phase runs in reverse");
}

#[tokio::test]
async fn a_local_response_skips_the_upstream() {
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["tag", "deny", "after"])],
        vec![
            probe("tag", "headers:tag"),
            probe("deny", "local:deny"),
            probe("after", "headers:after"),
        ],
    ))
    .await;
    let (status, headers, body) = get(&proxy, "/", &[]).await;
    assert_eq!(status, 403);
    assert_eq!(body, "denied by probe\n");
    assert_eq!(
        headers.get("x-denied-by").map(|v| v.as_bytes()),
        Some(&b"deny"[..])
    );
    let resp_chain: Vec<_> = headers.get_all("x-resp-chain").iter().collect();
    assert_eq!(
        resp_chain,
        ["deny", "tag"],
        "only the filters that saw the request"
    );
}

#[tokio::test]
async fn a_spinning_filter_gets_500_and_the_next_request_succeeds() {
    let mut spin = probe("spin", "spin:sp");
    spin.limits.callback_timeout = Duration::from_millis(200);
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["spin"])],
        vec![spin],
    ))
    .await;
    let started = std::time::Instant::now();
    let (status, _, body) = get(&proxy, "/", &[("x-spin", "1")]).await;
    assert_eq!((status, body.as_str()), (500, "filter failure\n"));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let (status, _, body) = get(&proxy, "/", &[]).await;
    assert_eq!(
        status, 200,
        "the next request should get a fresh VM: {body}"
    );
}

#[tokio::test]
async fn on_error_allow_passes_the_request_on() {
    let mut trap = probe("trapper", "trap:tp");
    trap.on_error = OnError::Allow;
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["trapper"])],
        vec![trap],
    ))
    .await;
    let (status, _, body) = get(&proxy, "/", &[("x-trap", "1")]).await;
    assert_eq!(status, 200, "body: {body}");
}

#[tokio::test]
async fn bodies_stream_through_pausing_filters() {
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["body"])],
        vec![probe("body", "body:bd")],
    ))
    .await;
    let resp = client()
        .post(proxy.url("/up"))
        .body("hello world")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST: {e}"));
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap_or_else(|e| panic!("{e}"));
    let echo_part = body
        .strip_suffix(" [probed]")
        .unwrap_or_else(|| panic!("the response body filter did not append: {body:?}"));
    assert_eq!(json(echo_part)["body_bytes"], 11);
}

#[tokio::test]
async fn a_local_response_from_the_body_phase_runs_the_response_phase_once() {
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["tag", "refuse"])],
        vec![
            probe("tag", "headers:tag"),
            probe("refuse", "body_local:refuse"),
        ],
    ))
    .await;
    let resp = client()
        .post(proxy.url("/up"))
        .body("too much")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST: {e}"));
    assert_eq!(resp.status(), 413);
    let resp_chain: Vec<_> = resp.headers().get_all("x-resp-chain").iter().collect();
    assert_eq!(
        resp_chain,
        ["refuse", "tag"],
        "each filter's response phase runs once on the local response"
    );
    let body = resp.text().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body, "body refused by probe\n");
}

#[tokio::test]
async fn http_call_reaches_upstreams_by_name() {
    let proxy = Proxy::start(with_filters(
        vec![
            routed("ok", "/ok", &["auth"]),
            routed("bad", "/bad", &["noauth"]),
        ],
        vec![
            probe("auth", "call:echo@internal"),
            probe("noauth", "call:nowhere"),
        ],
    ))
    .await;
    let (status, _, body) = get(&proxy, "/ok", &[]).await;
    assert_eq!(status, 200, "body: {body}");
    let echo = json(&body);
    assert_eq!(echo["headers"]["x-call-status"], "200");
    let call_body = echo["headers"]["x-call-body"].as_str().unwrap_or_default();
    assert_eq!(
        json(call_body)["path"],
        "/auth",
        "the call's own echo: {call_body}"
    );
    let (status, headers, _) = get(&proxy, "/bad", &[]).await;
    assert_eq!(
        status, 403,
        "a call to an unknown upstream is seen as failed"
    );
    assert_eq!(
        headers.get("x-call-status").map(|v| v.as_bytes()),
        Some(&b"none"[..])
    );
}

/// AssemblyScript's runtime finds an `http_call` in its root context's table by the id
/// `on_http_call_response` gets: the call is answered only when that id is the root
/// context's, as on Envoy. Two requests at once: each stream gets its own answer.
#[tokio::test]
async fn an_assemblyscript_http_call_from_a_request_is_answered() {
    let auth = crate::inproc::Backend::start("auth").await;
    let filter = FilterConfig {
        source: FilterSource::Wasm(wasm_build::scripted("as-http-call")),
        root_id: "as_http_call".into(),
        config: b"authsvc".to_vec(),
        ..probe("ascall", "")
    };
    let proxy = Proxy::start(Config {
        filters: vec![filter],
        ..config(
            vec![routed("api", "/", &["ascall"])],
            vec![crate::inproc::upstream("authsvc", &[(auth.addr, 1)])],
        )
    })
    .await;
    let (a, b) = tokio::join!(get(&proxy, "/a", &[]), get(&proxy, "/b", &[]));
    for (path, (status, _, body)) in [("/a", a), ("/b", b)] {
        assert_eq!(status, 200, "{path}: {body}");
        let echo = json(&body);
        assert_eq!(echo["path"], path, "{echo}");
        assert_eq!(echo["headers"]["x-call-status"], "200", "{echo}");
        // The backend answers with its name and the body bytes it read.
        assert_eq!(echo["headers"]["x-call-body"], "auth 0", "{echo}");
    }
    assert_eq!(
        auth.state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one call per request"
    );
}

#[tokio::test]
async fn concurrent_streams_keep_their_own_contexts() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_test_writer()
        .try_init();
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["auth"])],
        vec![probe("auth", "call:echo@internal")],
    ))
    .await;
    let requests = (0..12).map(|i| {
        let tag = format!("stream-{i}");
        let proxy = &proxy;
        async move {
            let (status, _, body) = get(proxy, "/", &[("x-in", &tag)]).await;
            (tag, status, body)
        }
    });
    for (tag, status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "{tag}: {body}");
        assert_eq!(
            json(&body)["headers"]["x-seen-echo-internal"],
            tag.as_str(),
            "{body}"
        );
    }
}

#[test]
fn a_filter_failing_on_configure_rejects_the_config() {
    let cfg = with_filters(
        vec![routed("api", "/", &["bad"])],
        vec![probe("bad", "trap_configure")],
    );
    let err = match Snapshot::build(
        std::sync::Arc::new(cfg),
        &extensions::runtime().unwrap_or_else(|e| panic!("runtime: {e}")),
        1,
        None,
    ) {
        Ok(_) => panic!("a filter trapping in on_configure was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("filters.yaml:3: filters.bad: on_configure trapped"),
        "{err}"
    );
}

#[test]
fn non_proxy_wasm_modules_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for (file, bytes, expect) in [
        (
            "junk.wasm",
            &b"not wasm at all"[..],
            "not a valid wasm module",
        ),
        (
            "plain.wasm",
            &b"(module (memory (export \"memory\") 1))"[..],
            "not a proxy-wasm module",
        ),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        let mut f = probe("mod", "");
        f.source = FilterSource::Wasm(path);
        let cfg = with_filters(vec![routed("api", "/", &["mod"])], vec![f]);
        match Snapshot::build(
            std::sync::Arc::new(cfg),
            &extensions::runtime().unwrap_or_else(|e| panic!("runtime: {e}")),
            1,
            None,
        ) {
            Ok(_) => panic!("{file} was accepted"),
            Err(e) => assert!(
                e.to_string().contains(expect),
                "{file}: expected {expect:?}, got {e}"
            ),
        }
    }
}

/// `filter-test` and the proxy share one phase driver, so a filter under test forwards
/// what it would forward in the proxy. Before, the kit's own walk skipped the
/// forwarding step and the client subject: its upstream request kept `Connection`, the
/// headers it names and a forged `X-Client-Cert-Subject`, and had no `X-Forwarded-*`.
#[tokio::test]
async fn filter_test_forwards_what_the_proxy_forwards() {
    let proxy = Proxy::start(with_filters(
        vec![routed("api", "/", &["same"])],
        vec![probe("same", "headers:same")],
    ))
    .await;
    let sent = [
        ("x-in", "v"),
        ("connection", "x-hop"),
        ("x-hop", "1"),
        ("x-client-cert-subject", "CN=forged"),
    ];
    let (status, _, body) = get(&proxy, "/p?q=1", &sent).await;
    assert_eq!(status, 200, "{body}");
    let echoed = json(&body);

    let harness = portcullis::testkit::Filter::wasm_file(wasm_build::filter("probe"))
        .name("same")
        .config("headers:same")
        .load()
        .unwrap_or_else(|e| panic!("load: {e}"));
    let mut req = portcullis::testkit::Request::get("/p?q=1").authority(&proxy.addr.to_string());
    for (k, v) in sent {
        req = req.header(k, v);
    }
    let out = harness
        .run_async(&req, &portcullis::testkit::UpstreamResponse::ok())
        .await
        .unwrap_or_else(|e| panic!("run: {e}"));
    let kit = out
        .upstream_request
        .as_ref()
        .unwrap_or_else(|| panic!("nothing went upstream: {out}"));

    for name in [
        "host",
        "x-in",
        "x-seen-same",
        "x-chain",
        "connection",
        "x-hop",
        "x-client-cert-subject",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ] {
        let by_proxy = echoed["headers"][name].as_str().map(str::to_owned);
        let values: Vec<String> = kit
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let by_kit = (!values.is_empty()).then(|| values.join(", "));
        assert_eq!(
            by_kit, by_proxy,
            "{name}: filter-test vs the proxy\n{out}\n{echoed}"
        );
    }
    assert_eq!(kit.path, "/p?q=1");
}
