//! Wasm filters in the real binary: a module from disk in the config directory, its
//! metrics on `/metrics`, a failing filter counted, a filter refusing its config.

use std::time::Duration;

use crate::support::{Backend, ConfDir, Proxy, Reply, client, get_with};
use crate::wasm_build;

/// A config directory holding the probe as `probe.wasm`, with these `filters` and
/// `routes` (YAML list items), one worker and an admin listener.
pub(crate) fn conf(filters: &str, routes: &str) -> ConfDir {
    let dir = ConfDir::new();
    let wasm =
        std::fs::read(wasm_build::filter("probe")).unwrap_or_else(|e| panic!("probe.wasm: {e}"));
    dir.write("probe.wasm", wasm);
    dir.write(
        "proxy.yaml",
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\nworkers: 1\n\
             listeners: [{{ name: web, address: 127.0.0.1:0 }}]\n\
             routes:\n{routes}\nfilters:\n{filters}\n"
        ),
    );
    dir
}

/// GETs `path` with `x-in: value` through a probe configured `headers:tag`, and checks
/// that the echo saw it copied into `x-seen-tag`.
pub(crate) async fn tagged(proxy: &Proxy, path: &str, value: &str) {
    let echo = get_echo(proxy, path, &[("x-in", value)]).await;
    assert_eq!(echo["headers"]["x-seen-tag"], value, "{echo}");
}

/// GETs `path` with `headers` from the echo behind the proxy: expects 200 and returns
/// what the echo saw.
pub(crate) async fn get_echo(
    proxy: &Proxy,
    path: &str,
    headers: &[(&str, &str)],
) -> serde_json::Value {
    let resp = get_with(&proxy.url("web", path), headers).await;
    assert_eq!(resp.status(), 200);
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("echo JSON: {e}"))
}

async fn metrics_eventually(proxy: &Proxy, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = proxy.metrics().await;
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {needle:?} on /metrics, got:\n{last}");
}

#[tokio::test]
async fn a_module_from_disk_filters_and_counts() {
    let dir = conf(
        "  - { name: tag, wasm: probe.wasm, config: \"headers:tag\" }\n\
         \x20 - { name: spin, wasm: probe.wasm, config: \"spin:sp\", limits: { callback_timeout: 200ms } }",
        "  - { name: tagged, match: { path_prefix: /tag }, filters: [tag], upstream: echo@internal }\n\
         \x20 - { name: spinning, match: { path_prefix: /spin }, filters: [spin], upstream: echo@internal }",
    );
    let proxy = Proxy::start(&dir);
    tagged(&proxy, "/tag", "through-the-binary").await;
    metrics_eventually(&proxy, "probe_requests_total{filter=\"tag\"} 1").await;

    let resp = client()
        .get(proxy.url("web", "/spin"))
        .header("x-spin", "1")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /spin: {e}"));
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.text().await.unwrap_or_default(), "filter failure\n");
    metrics_eventually(&proxy, "filter=\"spin\",kind=\"timeout\"").await;
    let resp = client().get(proxy.url("web", "/spin")).send().await;
    assert_eq!(
        resp.map(|r| r.status().as_u16()).ok(),
        Some(200),
        "a fresh VM serves the next request"
    );
}

#[tokio::test]
async fn a_filter_refusing_its_config_stops_the_load() {
    let dir = conf(
        "  - { name: bad, wasm: probe.wasm, config: trap_configure }",
        "  - { name: r, filters: [bad], upstream: echo@internal }",
    );
    let err = match Proxy::try_start(&dir) {
        Ok(_) => panic!("a filter trapping in on_configure was served"),
        Err(e) => e,
    };
    assert!(
        err.contains("filters.bad: on_configure trapped"),
        "stderr: {err}"
    );
}

#[tokio::test]
async fn a_filter_that_ticks_starts_before_any_request() {
    let dir = conf(
        "  - { name: ticker, wasm: probe.wasm, config: \"tick:t\" }",
        "  - { name: r, filters: [ticker], upstream: echo@internal }",
    );
    let proxy = Proxy::start(&dir);
    // The probe ticks every 10 ms and counts its ticks in shared data; the first
    // request reads the count. Before this, the worker's VM (and its timer) was only
    // made by that request, which then read nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let echo = get_echo(&proxy, "/", &[]).await;
    let ticks: u64 = echo["headers"]["x-ticks"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no tick count: {echo}"));
    assert!(
        ticks >= 5,
        "{ticks} ticks in the 500 ms before the first request: the timer did not start with the proxy"
    );
}

#[tokio::test]
async fn a_filter_moved_to_another_line_keeps_its_vms() {
    let filters = "  - { name: counter, wasm: probe.wasm, config: \"count:c\" }";
    let routes = "  - { name: r, filters: [counter], upstream: echo@internal }";
    let dir = conf(filters, routes);
    let proxy = Proxy::start(&dir);
    let count = |echo: serde_json::Value| echo["headers"]["x-vm-count"].as_str().map(str::to_owned);
    for expected in ["1", "2"] {
        assert_eq!(
            count(get_echo(&proxy, "/", &[]).await).as_deref(),
            Some(expected)
        );
    }
    // The same filter, one line further down its file.
    let text = std::fs::read_to_string(dir.path().join("proxy.yaml"))
        .unwrap_or_else(|e| panic!("proxy.yaml: {e}"));
    dir.write("proxy.yaml", format!("# moved down a line\n{text}"));
    proxy.wait_for_generation(2).await;
    assert_eq!(
        count(get_echo(&proxy, "/", &[]).await).as_deref(),
        Some("3"),
        "the reload kept the filter's VM (its count went on)"
    );
}

/// `node:` in the configuration is what filters read as `node.id`, `node.cluster` and
/// `node.metadata.<name>` (a string as itself, another value as JSON).
#[tokio::test]
async fn node_properties_come_from_the_configuration() {
    let dir = conf(
        "  - { name: who, wasm: probe.wasm, config: \"node\" }",
        "  - { name: r, filters: [who], upstream: echo@internal }",
    );
    dir.write(
        "node.yaml",
        "node: { id: edge-7, cluster: edge, metadata: { region: eu-west, weight: 3 } }\n",
    );
    let proxy = Proxy::start(&dir);
    let echo = get_echo(&proxy, "/", &[]).await;
    let h = &echo["headers"];
    assert_eq!(h["x-node-id"], "edge-7", "{echo}");
    assert_eq!(h["x-node-cluster"], "edge", "{echo}");
    assert_eq!(h["x-node-metadata-region"], "eu-west", "{echo}");
    assert_eq!(h["x-node-metadata-weight"], "3", "{echo}");
    assert_eq!(h["x-node-metadata-gone"], "-", "{echo}");
}

/// `upstreams[].metadata` is what filters on a route to that upstream read as
/// `cluster_metadata.filter_metadata.<namespace>.<name>`.
#[tokio::test]
async fn cluster_metadata_comes_from_the_routes_upstream() {
    let backend = Backend::start(|_| Reply::text(200, "ok"));
    let dir = conf(
        "  - { name: meta, wasm: probe.wasm, config: \"cluster_metadata\" }",
        "  - { name: r, filters: [meta], upstream: tiered }\n\
         \x20 - { name: e, match: { path_prefix: /echo }, filters: [meta], upstream: echo@internal }",
    );
    dir.write(
        "upstreams.yaml",
        format!(
            "upstreams:\n  - {{ name: tiered, targets: [{{ address: {} }}], metadata: {{ portcullis: {{ tier: gold }} }} }}\n",
            backend.addr()
        ),
    );
    let proxy = Proxy::start(&dir);
    let resp = client()
        .get(proxy.url("web", "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /: {e}"));
    assert_eq!(resp.status(), 200);
    let seen = backend.seen();
    let tier = seen
        .last()
        .and_then(|s| s.headers.get("x-cluster-tier").cloned());
    assert_eq!(
        tier.as_ref().map(|v| v.as_bytes()),
        Some(&b"gold"[..]),
        "{seen:?}"
    );
    // A route to an upstream without metadata has none.
    let echo = get_echo(&proxy, "/echo", &[]).await;
    assert_eq!(echo["headers"]["x-cluster-tier"], "-", "{echo}");
}
