//! Route precedence over real HTTP: which route answers, as echo@internal reports it.

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
