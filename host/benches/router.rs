//! Router match cost over a realistic table of ~50 routes: exact and wildcard hosts,
//! prefixes of several lengths, a few method/header conditions.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::config::{
    Config, ECHO_UPSTREAM, HostMatch, ListenerConfig, PathMatch, RouteConfig, RouteMatch,
};
use portcullis::router::{Candidate, Router};

fn routes() -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    let mut push = |name: String, matcher: RouteMatch| {
        routes.push(RouteConfig {
            name,
            listeners: None,
            matcher,
            priority: None,
            filters: vec![],
            upstream: ECHO_UPSTREAM.into(),
            origin: Default::default(),
        })
    };
    for i in 0..10 {
        for (j, prefix) in ["/api", "/api/v1", "/static", "/"].iter().enumerate() {
            push(
                format!("svc{i}-{j}"),
                RouteMatch {
                    host: Some(HostMatch::Exact(format!("svc{i}.example.com"))),
                    path: Some(PathMatch::Prefix((*prefix).into())),
                    ..Default::default()
                },
            );
        }
    }
    for i in 0..5 {
        push(
            format!("tenant{i}"),
            RouteMatch {
                host: Some(HostMatch::Wildcard(format!(".tenant{i}.example.net"))),
                methods: Some(vec![Method::GET, Method::POST]),
                ..Default::default()
            },
        );
    }
    push(
        "canary".into(),
        RouteMatch {
            headers: vec![(http::HeaderName::from_static("x-canary"), "true".into())],
            ..Default::default()
        },
    );
    push("fallback".into(), RouteMatch::default());
    routes
}

fn config() -> Config {
    Config {
        admin: None,
        workers: 1,
        module_cache: None,
        listeners: vec![ListenerConfig {
            name: "web".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            limits: Default::default(),
            origin: Default::default(),
        }],
        routes: routes(),
        filters: vec![],
        upstreams: vec![],
        external_files: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    let router = Router::build(&cfg);
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let cases = [
        (
            "exact host, long prefix",
            "svc7.example.com",
            "/api/v1/users/42",
        ),
        ("wildcard host", "shop.tenant3.example.net", "/cart"),
        ("fallback (scans all)", "unknown.test", "/nothing"),
    ];
    for (label, host, path) in cases {
        c.bench_function(&format!("router/{label}"), |b| {
            b.iter(|| {
                let cand = Candidate {
                    host: Some(black_box(host)),
                    path: black_box(path),
                    method: &Method::GET,
                    headers: &headers,
                };
                black_box(router.route("web", &cand))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
