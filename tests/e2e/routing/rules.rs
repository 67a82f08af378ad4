//! The rest of Traefik's rule vocabulary through the real binary: path regex, query
//! parameters (present, equal, regex), header values by regex or presence, and the
//! client's IP by CIDR (through `X-Forwarded-For` only from a trusted peer); which
//! route answers, as `echo@internal` reports it, and their place in the precedence.

use crate::support::{self, ConfDir, Proxy};

const ROUTES: &str = r#"admin: { address: 127.0.0.1:0 }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - { name: user-by-id, match: { path_regex: "^/users/[0-9]+$" }, upstream: echo@internal }
  - { name: users, match: { path_prefix: /users }, upstream: echo@internal }
  - { name: q-debug, match: { path_prefix: /q, query: { debug: { present: true } } }, upstream: echo@internal }
  - { name: q-v2, match: { path_prefix: /q, query: { v: "2" } }, upstream: echo@internal }
  - { name: q-id, match: { path_prefix: /q, query: { id: { regex: "^[0-9]+$" } } }, upstream: echo@internal }
  - { name: q-both, match: { path_prefix: /q, query: { v: "2", id: { regex: "^[0-9]+$" } } }, upstream: echo@internal }
  - { name: q, match: { path_prefix: /q }, upstream: echo@internal }
  - { name: h-agent, match: { path_prefix: /h, headers: { user-agent: { regex: "(?i)^curl/" } } }, upstream: echo@internal }
  - { name: h-debug, match: { path_prefix: /h, headers: { x-debug: { present: true } } }, upstream: echo@internal }
  - { name: h, match: { path_prefix: /h }, upstream: echo@internal }
  - { name: ip-local, match: { path_prefix: /ip, client_ip: [127.0.0.0/8, "::1"] }, upstream: echo@internal }
  - { name: ip-ten, match: { path_prefix: /ten, client_ip: [10.0.0.0/8] }, upstream: echo@internal }
  - { name: ten, match: { path_prefix: /ten }, upstream: echo@internal }
  - name: xff-trusted
    match: { path_prefix: /xff, client_ip: { cidrs: [203.0.113.0/24], trusted_proxies: [127.0.0.1/32] } }
    upstream: echo@internal
  - name: xff-untrusted
    match: { path_prefix: /other-xff, client_ip: { cidrs: [203.0.113.0/24], trusted_proxies: [10.0.0.0/8] } }
    upstream: echo@internal
  - { name: fallback, upstream: echo@internal }
"#;

/// A request (path, headers) and the route that must answer it.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// The route that answers `path` with `headers`, or `404`.
async fn route_of(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> String {
    route_of_request(proxy, http::Method::GET, path, headers).await
}

/// The route that answers `method path` with `headers`, or `404`.
pub(super) async fn route_of_request(
    proxy: &Proxy,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> String {
    let mut req = support::client().request(method, proxy.url("web", path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} failed: {e}"));
    if resp.status() == 404 {
        return "404".into();
    }
    let json: serde_json::Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"));
    json["route"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn binary_regex_query_header_and_client_ip_conditions() {
    let dir = ConfDir::with(ROUTES);
    let proxy = Proxy::start(&dir);
    let cases: &[Case] = &[
        // A regex outranks any prefix; a path it does not match falls through.
        ("/users/42", &[], "user-by-id"),
        ("/users/42/orders", &[], "users"),
        ("/users/abc", &[], "users"),
        // Query parameters, raw as sent; more conditions first, then file order.
        ("/q?debug", &[], "q-debug"),
        ("/q?a=1&debug=", &[], "q-debug"),
        ("/q?v=2", &[], "q-v2"),
        ("/q?v=3", &[], "q"),
        ("/q?id=17", &[], "q-id"),
        ("/q?id=x17", &[], "q"),
        ("/q?v=2&id=5", &[], "q-both"),
        ("/q?v=2&debug", &[], "q-debug"),
        ("/q", &[], "q"),
        // Header values by regex and by presence.
        ("/h", &[("user-agent", "Curl/8.4")], "h-agent"),
        ("/h", &[("user-agent", "Mozilla/5.0 curl/8")], "h"),
        ("/h", &[("x-debug", "")], "h-debug"),
        ("/h", &[], "h"),
        // The peer is 127.0.0.1.
        ("/ip", &[], "ip-local"),
        ("/ten", &[], "ten"),
        ("/ten", &[("x-forwarded-for", "10.1.2.3")], "ten"),
        // X-Forwarded-For counts only from a trusted peer, its last entry by default.
        ("/xff", &[("x-forwarded-for", "203.0.113.9")], "xff-trusted"),
        (
            "/xff",
            &[("x-forwarded-for", "203.0.113.9, 198.51.100.1")],
            "fallback",
        ),
        ("/xff", &[], "fallback"),
        (
            "/other-xff",
            &[("x-forwarded-for", "203.0.113.9")],
            "fallback",
        ),
    ];
    for (path, headers, want) in cases {
        assert_eq!(
            route_of(&proxy, path, headers).await,
            *want,
            "GET {path} with {headers:?}"
        );
    }
}

#[test]
fn check_reports_rule_errors_with_file_line_and_field() {
    crate::upstream::check_reports_of(
        r#"listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: a
    match: { path_regex: "(", query: { debug: { present: false } } }
    upstream: echo@internal
  - name: b
    match: { path: /x, path_regex: "^/x", client_ip: [10.0.0.0/33] }
    upstream: echo@internal
  - name: c
    match:
      headers: { x-a: { regex: "[" }, x-b: { present: true, regex: a } }
      client_ip: { cidrs: [], depth: 0 }
    upstream: echo@internal
"#,
        &[
            "up.yaml:4: routes.a.match.path_regex: `(` is not a regex: unclosed group",
            "up.yaml:4: routes.a.match.query.debug.present: only `present: true` is a condition",
            "up.yaml:7: routes.b.match.path: give one of path, path_prefix and path_regex",
            "up.yaml:7: routes.b.match.client_ip: `10.0.0.0/33`: the prefix length must be 0–32",
            "up.yaml:11: routes.c.match.headers.x-a.regex: `[` is not a regex: unclosed character class",
            "up.yaml:11: routes.c.match.headers.x-b: give a value, or exactly one of `present: true` and `regex: R`",
            "up.yaml:12: routes.c.match.client_ip.cidrs: names no address",
            "up.yaml:12: routes.c.match.client_ip.depth: must be at least 1, found 0",
        ],
    );
}
