//! Precedence and matching rules of the router.

#![allow(clippy::expect_used)]

use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::config::{HostMatch, PathMatch, RouteConfig, RouteMatch};

mod linear;
mod property;

fn route(name: &str, matcher: RouteMatch, priority: Option<i64>) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        listeners: None,
        matcher,
        priority,
        filters: vec![],
        shadow: vec![],
        canaries: vec![],
        upstream: crate::config::ECHO_UPSTREAM.into(),
        max_request_body: None,
        upgrade_idle_timeout: crate::config::UPGRADE_IDLE_TIMEOUT,
        mirror: None,
        origin: Default::default(),
    }
}

fn config(routes: Vec<RouteConfig>) -> Config {
    Config {
        admin: None,
        workers: 1,
        workers_origin: None,
        module_cache: None,
        shutdown: Default::default(),
        node: Default::default(),
        listeners: vec![crate::config::ListenerConfig {
            name: "web".into(),
            address: "127.0.0.1:0".parse().expect("valid test input"),
            protocol: Default::default(),
            tls: None,
            limits: Default::default(),
            http2: Default::default(),
            proxy_protocol: None,
            http3: false,
            origin: Default::default(),
        }],
        routes,
        l4_routes: Vec::new(),
        filters: vec![],
        services: vec![],
        upstreams: vec![],
        redis: None,
        tracing: None,
        access_log: None,
        providers: Default::default(),
        external_files: vec![],
    }
}

fn host(h: &str) -> Option<HostMatch> {
    Some(match h.strip_prefix('*') {
        Some(suffix) => HostMatch::Wildcard(suffix.into()),
        None => HostMatch::Exact(h.into()),
    })
}

/// The name of the route chosen for `method host path` with `headers`.
fn pick(cfg: &Config, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let router = Router::build(cfg);
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).expect("valid test input"),
            HeaderValue::from_str(v).expect("valid test input"),
        );
    }
    let method = Method::from_bytes(method.as_bytes()).expect("valid test input");
    let hostname = strip(host);
    let cand = Candidate {
        host: hostname,
        path,
        method: &method,
        headers: &map,
        query: None,
        client: None,
    };
    router
        .route("web", &cand)
        .map(|id| cfg.routes[id].name.clone())
        .unwrap_or_else(|| "<none>".into())
}

fn strip(host: &str) -> Option<&str> {
    let mut headers = HeaderMap::new();
    let uri: http::Uri = "/".parse().expect("valid test input");
    if host.is_empty() {
        return None;
    }
    headers.insert(
        http::header::HOST,
        HeaderValue::from_str(host).expect("valid test input"),
    );
    // Leak to get a 'static borrow in tests: tiny and bounded.
    let (uri, headers) = Box::leak(Box::new((uri, headers)));
    request_host(uri, headers)
}

fn m(host_: Option<&str>, path: Option<PathMatch>) -> RouteMatch {
    RouteMatch {
        host: host_.and_then(host),
        path,
        methods: None,
        headers: vec![],
        ..RouteMatch::default()
    }
}

fn prefix(p: &str) -> Option<PathMatch> {
    Some(PathMatch::Prefix(p.into()))
}

#[test]
fn exact_host_beats_wildcard_beats_none() {
    let cfg = config(vec![
        route("any", m(None, None), None),
        route("wild", m(Some("*.example.com"), None), None),
        route("exact", m(Some("api.example.com"), None), None),
    ]);
    assert_eq!(pick(&cfg, "GET", "api.example.com", "/", &[]), "exact");
    assert_eq!(pick(&cfg, "GET", "API.Example.COM:8080", "/", &[]), "exact");
    assert_eq!(pick(&cfg, "GET", "www.example.com", "/", &[]), "wild");
    assert_eq!(pick(&cfg, "GET", "a.b.example.com", "/", &[]), "any");
    assert_eq!(pick(&cfg, "GET", "example.com", "/", &[]), "any");
    assert_eq!(pick(&cfg, "GET", "", "/", &[]), "any");
}

#[test]
fn exact_path_beats_longer_prefix_beats_shorter() {
    let cfg = config(vec![
        route("root", m(None, prefix("/")), None),
        route("api", m(None, prefix("/api")), None),
        route("api-v1", m(None, prefix("/api/v1")), None),
        route(
            "health",
            m(None, Some(PathMatch::Exact("/api/v1/health".into()))),
            None,
        ),
    ]);
    assert_eq!(pick(&cfg, "GET", "h", "/api/v1/health", &[]), "health");
    assert_eq!(pick(&cfg, "GET", "h", "/api/v1/health/x", &[]), "api-v1");
    assert_eq!(pick(&cfg, "GET", "h", "/api/v2", &[]), "api");
    assert_eq!(pick(&cfg, "GET", "h", "/apix", &[]), "api");
    assert_eq!(pick(&cfg, "GET", "h", "/other", &[]), "root");
}

#[test]
fn host_outranks_path() {
    let cfg = config(vec![
        route("long-path", m(None, prefix("/api/very/long")), None),
        route("host", m(Some("a.test"), None), None),
    ]);
    assert_eq!(pick(&cfg, "GET", "a.test", "/api/very/long/x", &[]), "host");
    assert_eq!(
        pick(&cfg, "GET", "b.test", "/api/very/long/x", &[]),
        "long-path"
    );
}

#[test]
fn priority_beats_specificity_and_higher_wins() {
    let cfg = config(vec![
        route(
            "exact",
            m(Some("a.test"), Some(PathMatch::Exact("/x".into()))),
            None,
        ),
        route("low", m(None, None), Some(1)),
        route("high", m(None, prefix("/x")), Some(5)),
        route("negative", m(None, None), Some(-10)),
    ]);
    assert_eq!(pick(&cfg, "GET", "a.test", "/x", &[]), "high");
    assert_eq!(pick(&cfg, "GET", "a.test", "/y", &[]), "low");
    let router = Router::build(&cfg);
    // Even a negative priority beats a route without one.
    assert_eq!(router.order("web"), vec![2, 1, 3, 0]);
}

#[test]
fn methods_and_headers_must_hold_and_count() {
    let mut get_only = m(None, prefix("/"));
    get_only.methods = Some(vec![Method::GET]);
    let mut canary = m(None, prefix("/"));
    canary.headers = vec![(http::HeaderName::from_static("x-canary"), "true".into())];
    let cfg = config(vec![
        route("plain", m(None, prefix("/")), None),
        route("get", get_only, None),
        route("canary", canary, None),
    ]);
    // Equally specific (one condition each): file order decides between get and canary.
    assert_eq!(pick(&cfg, "GET", "h", "/", &[("x-canary", "true")]), "get");
    assert_eq!(
        pick(&cfg, "POST", "h", "/", &[("x-canary", "true")]),
        "canary"
    );
    assert_eq!(
        pick(&cfg, "POST", "h", "/", &[("x-canary", "TRUE")]),
        "plain"
    );
    assert_eq!(
        pick(
            &cfg,
            "POST",
            "h",
            "/",
            &[("x-canary", "no"), ("x-canary", "true")]
        ),
        "canary"
    );
}

#[test]
fn ties_keep_file_order_and_no_match_is_none() {
    let cfg = config(vec![
        route("first", m(None, prefix("/a")), None),
        route("second", m(None, prefix("/b")), None),
        route("third", m(None, prefix("/a")), None),
    ]);
    assert_eq!(pick(&cfg, "GET", "h", "/a", &[]), "first");
    assert_eq!(pick(&cfg, "GET", "h", "/c", &[]), "<none>");
}

#[test]
fn routes_serve_only_their_listeners() {
    let mut only_admin = route("elsewhere", m(None, None), Some(100));
    only_admin.listeners = Some(vec!["other".into()]);
    let cfg = config(vec![only_admin, route("here", m(None, None), None)]);
    assert_eq!(pick(&cfg, "GET", "h", "/", &[]), "here");
    assert_eq!(Router::build(&cfg).order("nope"), Vec::<usize>::new());
}

#[test]
fn host_parsing_strips_ports_and_keeps_ipv6_brackets() {
    assert_eq!(strip("Example.com:80"), Some("Example.com"));
    assert_eq!(strip("example.com."), Some("example.com"));
    assert_eq!(strip("[::1]:8080"), Some("[::1]"));
    assert_eq!(strip("10.0.0.1"), Some("10.0.0.1"));
    assert_eq!(strip("user@h.test:8080"), Some("h.test"), "userinfo cut");
    assert_eq!(strip("a@b@c.test"), Some("c.test"), "after the last @");
    assert_eq!(
        strip("[::1"),
        Some("[::1"),
        "no closing bracket: as written"
    );
    assert_eq!(strip("h.test:"), Some("h.test"));
    assert_eq!(strip("user@"), None);
    let uri: http::Uri = "http://h.test:81/p".parse().expect("valid test input");
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static("ignored.test"));
    assert_eq!(request_host(&uri, &headers), Some("h.test"));
}
