//! Router match cost: over a realistic table of ~50 routes (exact and wildcard hosts,
//! prefixes of several lengths, a few method/header conditions), and over a
//! multi-tenant table of 10, 1,000 and 50,000 routes (one per customer host, each
//! `host: tN.example.com, path_prefix: /api`), with the build time and the router's
//! memory per route at those sizes.
//!
//! Also a route with `any`/`not` of conditions, for their cost where they are used.
//!
//! Run: `cargo bench -p portcullis --bench router`. The memory figures are printed
//! first: the bytes the router holds once built, counted by this binary's allocator
//! (requested sizes, without the allocator's own rounding).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use portcullis::config::{
    Config, ECHO_UPSTREAM, HostMatch, ListenerConfig, Logic, PathMatch, RouteConfig, RouteMatch,
    ValueMatch,
};
use portcullis::router::{Candidate, Router};

/// The system allocator, counting the bytes live at any time.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` with the caller's arguments; the counter
// is a side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn route(name: String, matcher: RouteMatch) -> RouteConfig {
    RouteConfig {
        name,
        listeners: None,
        matcher,
        priority: None,
        filters: vec![],
        shadow: vec![],
        canaries: vec![],
        upstream: ECHO_UPSTREAM.into(),
        max_request_body: None,
        upgrade_idle_timeout: portcullis::config::UPGRADE_IDLE_TIMEOUT,
        mirror: None,
        origin: Default::default(),
    }
}

fn realistic_routes() -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    for i in 0..10 {
        for (j, prefix) in ["/api", "/api/v1", "/static", "/"].iter().enumerate() {
            routes.push(route(
                format!("svc{i}-{j}"),
                RouteMatch {
                    host: Some(HostMatch::Exact(format!("svc{i}.example.com"))),
                    path: Some(PathMatch::Prefix((*prefix).into())),
                    ..Default::default()
                },
            ));
        }
    }
    for i in 0..5 {
        routes.push(route(
            format!("tenant{i}"),
            RouteMatch {
                host: Some(HostMatch::Wildcard(format!(".tenant{i}.example.net"))),
                methods: Some(vec![Method::GET, Method::POST]),
                ..Default::default()
            },
        ));
    }
    routes.push(route(
        "canary".into(),
        RouteMatch {
            headers: vec![(http::HeaderName::from_static("x-canary"), "true".into())],
            ..Default::default()
        },
    ));
    routes.push(route("fallback".into(), RouteMatch::default()));
    routes
}

/// The realistic table and a host whose route combines conditions: `any` of a header
/// and a query parameter, and `not` a method.
fn routes_with_logic() -> Vec<RouteConfig> {
    let mut routes = realistic_routes();
    let header = |name: &'static str, value: &str| RouteMatch {
        headers: vec![(http::HeaderName::from_static(name), value.into())],
        ..Default::default()
    };
    routes.push(route(
        "logic".into(),
        RouteMatch {
            host: Some(HostMatch::Exact("logic.example.com".into())),
            path: Some(PathMatch::Prefix("/api".into())),
            logic: Some(Box::new(Logic {
                any: vec![
                    header("x-beta", "1"),
                    RouteMatch {
                        query: vec![("v".into(), ValueMatch::Equals("2".into()))],
                        ..Default::default()
                    },
                ],
                not: Some(RouteMatch {
                    methods: Some(vec![Method::DELETE]),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        },
    ));
    routes
}

/// One route per customer host, as a multi-tenant edge has them.
fn tenant_routes(n: usize) -> Vec<RouteConfig> {
    (0..n)
        .map(|i| {
            route(
                format!("t{i}"),
                RouteMatch {
                    host: Some(HostMatch::Exact(format!("t{i}.example.com"))),
                    path: Some(PathMatch::Prefix("/api".into())),
                    ..Default::default()
                },
            )
        })
        .collect()
}

fn config(routes: Vec<RouteConfig>) -> Config {
    Config {
        admin: None,
        workers: 1,
        workers_origin: None,
        module_cache: None,
        shutdown: Default::default(),
        node: Default::default(),
        listeners: vec![ListenerConfig {
            name: "web".into(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
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

const SIZES: [usize; 3] = [10, 1_000, 50_000];

/// Prints the bytes a built router holds per route at each size.
fn memory() {
    for n in SIZES {
        let cfg = config(tenant_routes(n));
        let before = LIVE.load(Ordering::Relaxed);
        let router = Router::build(&cfg);
        let held = LIVE.load(Ordering::Relaxed) - before + std::mem::size_of::<Router>();
        println!(
            "router memory, {n} tenant routes: {held} B, {:.0} B per route",
            held as f64 / n as f64
        );
        drop(black_box(router));
    }
}

fn realistic(c: &mut Criterion) {
    let router = Router::build(&config(realistic_routes()));
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let cases = [
        (
            "exact host, long prefix",
            "svc7.example.com",
            "/api/v1/users/42",
        ),
        ("wildcard host", "shop.tenant3.example.net", "/cart"),
        ("fallback", "unknown.test", "/nothing"),
    ];
    for (label, host, path) in cases {
        c.bench_function(&format!("router/{label}"), |b| {
            b.iter(|| {
                let cand = Candidate {
                    host: Some(black_box(host)),
                    path: black_box(path),
                    method: &Method::GET,
                    headers: &headers,
                    query: None,
                    client: None,
                };
                black_box(router.route("web", &cand))
            })
        });
    }
}

fn scale(c: &mut Criterion) {
    memory();
    let headers = HeaderMap::new();
    let mut group = c.benchmark_group("router_tenants");
    for n in SIZES {
        let cfg = config(tenant_routes(n));
        let router = Router::build(&cfg);
        // A host from the middle of the file: a linear scan would read half the table.
        let host = format!("t{}.example.com", n / 2);
        group.bench_with_input(BenchmarkId::new("match", n), &host, |b, host| {
            b.iter(|| {
                let cand = Candidate {
                    host: Some(black_box(host.as_str())),
                    path: black_box("/api/users/42"),
                    method: &Method::GET,
                    headers: &headers,
                    query: None,
                    client: None,
                };
                black_box(router.route("web", &cand))
            })
        });
        group.bench_with_input(BenchmarkId::new("miss", n), &(), |b, _| {
            b.iter(|| {
                let cand = Candidate {
                    host: Some(black_box("unknown.example.com")),
                    path: black_box("/api/users/42"),
                    method: &Method::GET,
                    headers: &headers,
                    query: None,
                    client: None,
                };
                black_box(router.route("web", &cand))
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("router_build");
    group.sample_size(10);
    for n in SIZES {
        let cfg = config(tenant_routes(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &cfg, |b, cfg| {
            b.iter(|| Router::build(cfg))
        });
    }
    group.finish();
}

/// The cost of `any`/`not` on the route that has them: the index finds it by host and
/// path as any other, then the combined conditions are checked (here the query holds,
/// after the header did not, and the method is not DELETE).
fn logic(c: &mut Criterion) {
    let router = Router::build(&config(routes_with_logic()));
    let headers = HeaderMap::new();
    c.bench_function("router/any and not", |b| {
        b.iter(|| {
            let cand = Candidate {
                host: Some(black_box("logic.example.com")),
                path: black_box("/api/items"),
                method: &Method::GET,
                headers: &headers,
                query: Some(black_box("v=2")),
                client: None,
            };
            black_box(router.route("web", &cand))
        })
    });
}

criterion_group!(benches, realistic, logic, scale);
criterion_main!(benches);
