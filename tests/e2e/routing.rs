//! Route precedence over real HTTP: which route answers, as echo@internal reports it.

mod logic;
mod rules;

use serde_json::Value;

use crate::inproc::{Proxy, client, config, matching, route};

async fn route_of(proxy: &Proxy, host: &str, path: &str) -> String {
    let resp = client()
        .get(proxy.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("request {host}{path} failed: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if status == 404 {
        return format!("404 {text}");
    }
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    json["route"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn host_wildcard_prefix_and_priority() {
    let mut prioritized = route("priority", matching(None, Some("/urgent")), "echo@internal");
    prioritized.priority = Some(1);
    let proxy = Proxy::start(config(
        vec![
            route(
                "catch-all-api",
                matching(None, Some("/api")),
                "echo@internal",
            ),
            route(
                "wildcard",
                matching(Some("*.example.com"), None),
                "echo@internal",
            ),
            route(
                "exact",
                matching(Some("api.example.com"), None),
                "echo@internal",
            ),
            route(
                "exact-api",
                matching(Some("api.example.com"), Some("/api")),
                "echo@internal",
            ),
            prioritized,
        ],
        vec![],
    ))
    .await;
    let cases = [
        ("api.example.com", "/api/x", "exact-api"),
        ("API.example.com:8080", "/other", "exact"),
        ("www.example.com", "/api/x", "wildcard"),
        ("a.b.example.com", "/api/x", "catch-all-api"),
        ("api.example.com", "/urgent/now", "priority"),
        ("nowhere.test", "/nothing", "404 no route\n"),
    ];
    for (host, path, want) in cases {
        assert_eq!(
            route_of(&proxy, host, path).await,
            want,
            "route for {host}{path}"
        );
    }
}

#[tokio::test]
async fn precedence_from_yaml_as_documented() {
    // The example of docs/routing.md, through the real binary.
    let conf = crate::support::ConfDir::with(
        r#"
admin: { address: 127.0.0.1:0 }
listeners:
  - { name: web, address: "127.0.0.1:0" }
routes:
  - { name: maintenance, priority: 100, match: { path_prefix: /admin }, upstream: echo@internal }
  - { name: api-v1,   match: { host: api.example.com, path_prefix: /v1 }, upstream: echo@internal }
  - { name: api,      match: { host: api.example.com }, upstream: echo@internal }
  - { name: tenants,  match: { host: "*.example.com" }, upstream: echo@internal }
  - { name: posts,    match: { path: /exact, methods: [POST] }, upstream: echo@internal }
  - { name: fallback, upstream: echo@internal }
"#,
    );
    let proxy = crate::support::Proxy::start(&conf);
    let cases = [
        ("GET", "api.example.com", "/admin", "maintenance"),
        ("GET", "api.example.com", "/v1/users", "api-v1"),
        ("GET", "API.example.com:8080", "/v2", "api"),
        ("GET", "shop.example.com", "/v1", "tenants"),
        ("GET", "a.b.example.com", "/", "fallback"),
        ("GET", "other.test", "/exact", "fallback"),
        ("POST", "other.test", "/exact", "posts"),
    ];
    for (method, host, path, want) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("method {method}: {e}"));
        let resp = crate::support::client()
            .request(method.clone(), proxy.url("web", path))
            .header("host", host)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {host}{path} failed: {e}"));
        let json: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("echo answer for {host}{path} is not JSON: {e}"));
        assert_eq!(
            json["route"], want,
            "route for {method} {host}{path}: {json}"
        );
    }
}

#[tokio::test]
async fn http2_authority_routes_and_becomes_host() {
    let proxy = Proxy::start(config(
        vec![
            route(
                "by-host",
                matching(Some("localhost"), None),
                "echo@internal",
            ),
            route("other", matching(None, None), "echo@internal"),
        ],
        vec![],
    ))
    .await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap_or_else(|e| panic!("h2 client: {e}"));
    let url = format!("http://localhost:{}/x", proxy.addr.port());
    let resp = h2
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("h2 request failed: {e}"));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "spoke HTTP/2");
    let json: Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("not JSON: {e}"));
    assert_eq!(json["route"], "by-host", ":authority routes: {json}");
    assert_eq!(
        json["headers"]["host"],
        format!("localhost:{}", proxy.addr.port()),
        ":authority reaches the upstream as Host: {json}"
    );
}
