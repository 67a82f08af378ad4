//! `any`, `all` and `not` of route conditions through the real binary: which route
//! answers, as `echo@internal` reports it; where such a route stands in the
//! precedence (each of them one condition more, the rest unchanged); and their
//! errors named by file, line and field.

use crate::support::{ConfDir, Proxy};

const ROUTES: &str = r#"admin: { address: 127.0.0.1:0 }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: images
    match:
      path_prefix: /s
      any: [{ headers: { accept: { regex: "^image/" } } }, { query: { format: img } }]
    upstream: echo@internal
  - { name: s, match: { path_prefix: /s }, upstream: echo@internal }
  - name: humans
    match: { path_prefix: /n, not: { headers: { user-agent: { regex: "(?i)bot" } } } }
    upstream: echo@internal
  - { name: n, match: { path_prefix: /n }, upstream: echo@internal }
  - name: admin-writes
    match:
      path_prefix: /w
      all:
        - any: [{ methods: [POST] }, { headers: { x-write: "1" } }]
        - any: [{ client_ip: [10.0.0.0/8] }, { query: { admin: "1" } }]
    upstream: echo@internal
  - { name: w, match: { path_prefix: /w }, upstream: echo@internal }
  - name: paths
    match: { path_prefix: /x, any: [{ path: /x/one }, { path_regex: "^/x/[0-9]+$" }] }
    upstream: echo@internal
  - { name: x, match: { path_prefix: /x }, upstream: echo@internal }
  - name: p-two-headers
    match: { path_prefix: /p, headers: { a: "1", b: "1" } }
    upstream: echo@internal
  - name: p-any
    match: { path_prefix: /p, any: [{ headers: { a: "1" } }, { headers: { c: "1" } }] }
    upstream: echo@internal
  - { name: p-one-header, match: { path_prefix: /p, headers: { a: "1" } }, upstream: echo@internal }
  - { name: p, match: { path_prefix: /p }, upstream: echo@internal }
  - { name: fallback, upstream: echo@internal }
"#;

/// A request (method, path, headers) and the route that must answer it.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// The route that answers `method path` with `headers`, or `404`.
async fn route_of(proxy: &Proxy, method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let method = http::Method::from_bytes(method.as_bytes())
        .unwrap_or_else(|e| panic!("method {method}: {e}"));
    super::rules::route_of_request(proxy, method, path, headers).await
}

#[tokio::test]
async fn binary_any_all_and_not_of_conditions() {
    let dir = ConfDir::with(ROUTES);
    let proxy = Proxy::start(&dir);
    let cases: &[Case] = &[
        // any: either condition.
        ("GET", "/s/a.png", &[("accept", "image/png")], "images"),
        ("GET", "/s/a?format=img", &[], "images"),
        (
            "GET",
            "/s/a?format=img",
            &[("accept", "text/html")],
            "images",
        ),
        ("GET", "/s/a", &[("accept", "text/html")], "s"),
        // not.
        ("GET", "/n", &[("user-agent", "Mozilla/5.0")], "humans"),
        ("GET", "/n", &[], "humans"),
        ("GET", "/n", &[("user-agent", "Googlebot/2.1")], "n"),
        // all of two anys (the peer is 127.0.0.1, outside 10.0.0.0/8).
        ("POST", "/w?admin=1", &[], "admin-writes"),
        ("GET", "/w?admin=1", &[("x-write", "1")], "admin-writes"),
        ("GET", "/w?admin=1", &[], "w"),
        ("POST", "/w", &[], "w"),
        // Paths under any, past the index.
        ("GET", "/x/one", &[], "paths"),
        ("GET", "/x/42", &[], "paths"),
        ("GET", "/x/two", &[], "x"),
        // Precedence: two headers (2 conditions) before an `any` (1), and an `any`
        // level with one header (1): file order decides.
        ("GET", "/p", &[("a", "1"), ("b", "1")], "p-two-headers"),
        ("GET", "/p", &[("a", "1")], "p-any"),
        ("GET", "/p", &[("c", "1")], "p-any"),
        ("GET", "/p", &[("b", "1")], "p"),
    ];
    for (method, path, headers, want) in cases {
        assert_eq!(
            route_of(&proxy, method, path, headers).await,
            *want,
            "{method} {path} with {headers:?}"
        );
    }
}

#[test]
fn check_reports_logic_errors_with_file_line_and_field() {
    crate::upstream::check_reports_of(
        r#"listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: a
    match: { any: [], not: [{ path: /x }] }
    upstream: echo@internal
  - name: b
    match:
      all:
        - { headers: { x-a: { regex: "[" } } }
        - { hots: a.example.com }
    upstream: echo@internal
  - name: c
    match: { not: { not: { not: { not: { not: { not: { not: { not: { not: { path: /deep } } } } } } } } } }
    upstream: echo@internal
"#,
        &[
            "up.yaml:4: routes.a.match.any: names no condition",
            "up.yaml:4: routes.a.match.not: expected a mapping, found a list",
            "up.yaml:9: routes.b.match.all.0.headers.x-a.regex: `[` is not a regex: unclosed character class",
            "up.yaml:10: routes.b.match.all.1.hots: unknown field (expected one of: host, path, path_prefix, path_regex, methods, headers, query, client_ip, any, all, not)",
            "up.yaml:13: routes.c.match.not.not.not.not.not.not.not.not.not: `any`, `all` and `not` nest at most 8 levels deep",
        ],
    );
}
