//! Shadow filters through the real binary: `{ filter: NAME, shadow: true }` in a
//! route's chain runs the filter on every request and applies nothing of what it
//! decides; `/metrics` counts what it would have done.

use crate::support::*;

/// How many requests each route gets.
const N: u64 = 200;

fn conf_text(probe: &std::path::Path) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - name: builtin-deny
    match: {{ path_prefix: /builtin }}
    filters: [{{ filter: office-only, shadow: true }}]
    upstream: echo@internal
  - name: custom-deny
    match: {{ path_prefix: /custom }}
    filters: [{{ filter: probe-deny, shadow: true }}, tag-enforced]
    upstream: echo@internal
  - name: set
    match: {{ path_prefix: /set }}
    filters: [{{ filter: tag, shadow: true }}]
    upstream: echo@internal
filters:
  - name: office-only
    builtin: ip-allowlist
    config: {{ allow: [10.0.0.0/8] }}
  - name: probe-deny
    wasm: {}
    config: local:pd
  - name: tag
    builtin: headers
    config: {{ request: {{ set: {{ x-env: shadow }} }}, response: {{ set: {{ server: shadow }} }} }}
  - name: tag-enforced
    builtin: headers
    config: {{ request: {{ set: {{ x-enforced: yes }} }} }}
",
        probe.display()
    )
}

/// Sends `N` requests to `path`; every one must be served by the upstream (200);
/// returns the last one's echo and response headers.
async fn all_served(proxy: &Proxy, path: &str) -> (serde_json::Value, reqwest::header::HeaderMap) {
    let url = proxy.url("web", path);
    let mut last = None;
    for i in 0..N {
        let id = format!("shadow-{path}-{i}");
        let resp = get_with(&url, &[("x-request-id", id.as_str())]).await;
        assert_eq!(
            resp.status(),
            200,
            "request {i} to {path} was not let through"
        );
        let headers = resp.headers().clone();
        let echo: serde_json::Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: not the echo: {e}"));
        last = Some((echo, headers));
    }
    last.unwrap_or_else(|| unreachable!())
}

#[tokio::test]
async fn a_deny_everything_shadow_filter_lets_all_through_and_counts_all_as_would_deny() {
    let conf = ConfDir::with(&conf_text(&crate::wasm_build::filter("probe")));
    let proxy = Proxy::start(&conf);
    let status = proxy.status().await;
    let custom = status["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "custom-deny"));
    assert_eq!(
        custom.map(|r| (r["filters"].clone(), r["shadow_filters"].clone())),
        Some((
            serde_json::json!(["probe-deny", "tag-enforced"]),
            serde_json::json!(["probe-deny"])
        )),
        "/status shows which filters run in shadow mode: {status:#}"
    );
    let (echo, _) = all_served(&proxy, "/builtin/x").await;
    assert!(echo["headers"].is_object(), "{echo}");
    let (echo, _) = all_served(&proxy, "/custom/x").await;
    assert!(
        echo["headers"]["x-seen-pd"].is_null(),
        "the shadow probe's header reached the upstream: {echo}"
    );
    assert_eq!(
        echo["headers"]["x-enforced"], "yes",
        "the enforced filter after the shadow one still runs: {echo}"
    );
    let metrics = proxy.metrics().await;
    for (filter, route) in [
        ("office-only", "builtin-deny"),
        ("probe-deny", "custom-deny"),
    ] {
        let labels = format!("filter=\"{filter}\",route=\"{route}\"");
        let seen = sample(
            &metrics,
            &format!("portcullis_filter_shadow_requests_total{{{labels}}}"),
        );
        let denied = sample(
            &metrics,
            &format!("portcullis_filter_shadow_would_deny_total{{{labels},status=\"403\"}}"),
        );
        assert_eq!((seen, denied), (N, N), "{filter} on {route}:\n{metrics}");
    }
    let logged = |id: &str| {
        proxy.log_lines().iter().any(|l| {
            l.contains("shadow filter probe-deny would have answered 403") && l.contains(id)
        })
    };
    assert!(
        logged("shadow-/custom/x-0")
            && logged("shadow-/custom/x-99")
            && !logged("shadow-/custom/x-50"),
        "decisions are logged with the request id, sampled (the first ten, then one in a \
         hundred):\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn a_header_setting_shadow_filter_leaves_the_request_untouched() {
    let conf = ConfDir::with(&conf_text(&crate::wasm_build::filter("probe")));
    let proxy = Proxy::start(&conf);
    let (echo, headers) = all_served(&proxy, "/set/x").await;
    assert!(
        echo["headers"]["x-env"].is_null(),
        "the shadow filter's request header reached the upstream: {echo}"
    );
    assert_ne!(
        headers.get("server").and_then(|v| v.to_str().ok()),
        Some("shadow"),
        "the shadow filter's response header reached the client"
    );
    let metrics = proxy.metrics().await;
    let labels = "filter=\"tag\",route=\"set\"";
    let modified = sample(
        &metrics,
        &format!("portcullis_filter_shadow_would_modify_total{{{labels}}}"),
    );
    assert_eq!(
        modified, N,
        "every request counts as would-modify:\n{metrics}"
    );
}
