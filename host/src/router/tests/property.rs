//! The index against the linear reference over random route sets and requests: same
//! route for every request on every listener, same order. Seeded, so a failure names
//! the seed that reproduces it.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::linear::LinearRouter;
use super::*;

/// Route hosts: exact (some upper case, which the router lower-cases), wildcards
/// nested in one another, and a wildcard without its leading dot, which only a
/// hand-built configuration can hold.
const HOSTS: &[&str] = &[
    "a.test", "b.test", "x.a.test", "B.Test", "*.test", "*.a.test", "*.b.test", "*a.test",
];
const REQUEST_HOSTS: &[&str] = &[
    "a.test", "A.TEST", "b.test", "x.a.test", "y.a.test", "X.A.Test", "q.b.test", "a.b.test",
    "test", ".test", "xa.test", "c.test", "[::1]",
];
const METHODS: &[Method] = &[Method::GET, Method::POST, Method::PUT, Method::DELETE];
const HEADERS: &[(&str, &str)] = &[("x-a", "1"), ("x-a", "2"), ("x-b", "1"), ("x-b", "B")];
const LISTENERS: &[&str] = &["web", "admin", "ghost"];

/// A path over a small alphabet, so that prefixes nest and collide often.
fn path(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..6);
    let mut p = String::from("/");
    for _ in 0..len {
        p.push(['a', 'b', '/'][rng.random_range(0..3)]);
    }
    if rng.random_bool(0.03) {
        // An empty prefix matches every path, as a plain string prefix does.
        p.clear();
    }
    p
}

fn pick<'a, T>(rng: &mut StdRng, from: &'a [T]) -> &'a T {
    &from[rng.random_range(0..from.len())]
}

fn random_route(rng: &mut StdRng, i: usize, hosts: &[String]) -> RouteConfig {
    let host = rng.random_bool(0.7).then(|| {
        let h = pick(rng, hosts);
        match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Wildcard(suffix.into()),
            None => HostMatch::Exact(h.clone()),
        }
    });
    let path = match rng.random_range(0..3) {
        0 => None,
        1 => Some(PathMatch::Exact(path(rng))),
        _ => Some(PathMatch::Prefix(path(rng))),
    };
    let methods = rng.random_bool(0.2).then(|| {
        let n = rng.random_range(1..3);
        (0..n).map(|_| pick(rng, METHODS).clone()).collect()
    });
    let mut headers = Vec::new();
    for _ in 0..rng.random_range(0..3) {
        if rng.random_bool(0.3) {
            let (k, v) = pick(rng, HEADERS);
            headers.push((HeaderName::from_static(k), v.to_string()));
        }
    }
    let listeners = rng.random_bool(0.15).then(|| {
        let n = rng.random_range(0..3);
        (0..n).map(|_| pick(rng, LISTENERS).to_string()).collect()
    });
    let priority = rng.random_bool(0.15).then(|| rng.random_range(-2..3));
    let mut r = route(
        &format!("r{i}"),
        RouteMatch {
            host,
            path,
            methods,
            headers,
            ..RouteMatch::default()
        },
        priority,
    );
    r.listeners = listeners;
    r
}

fn random_request(
    rng: &mut StdRng,
    hosts: &[String],
) -> (Option<String>, String, Method, HeaderMap) {
    let host = match rng.random_range(0..10) {
        0 => None,
        1..4 => Some(pick(rng, REQUEST_HOSTS).to_string()),
        _ => {
            let h = pick(rng, hosts).clone();
            Some(match h.strip_prefix('*') {
                Some(suffix) => format!("{}{suffix}", pick(rng, &["x", "Y", "a.b", ""])),
                None => h,
            })
        }
    };
    let mut headers = HeaderMap::new();
    for _ in 0..rng.random_range(0..4) {
        let (k, v) = pick(rng, HEADERS);
        headers.append(*k, HeaderValue::from_static(v));
    }
    (host, path(rng), pick(rng, METHODS).clone(), headers)
}

/// Builds both routers over `routes` and checks them on `requests` random requests
/// and every listener's order; returns how many requests found a route.
fn agree(seed: u64, routes: usize, hosts: &[String], requests: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cfg = config(
        (0..routes)
            .map(|i| random_route(&mut rng, i, hosts))
            .collect(),
    );
    let mut admin = cfg.listeners[0].clone();
    admin.name = "admin".into();
    cfg.listeners.push(admin);
    let index = Router::build(&cfg);
    let linear = LinearRouter::build(&cfg);
    for listener in ["web", "admin", "nope"] {
        assert_eq!(
            index.order(listener),
            linear.order(listener),
            "seed {seed}: order on {listener}"
        );
    }
    let mut routed = 0;
    for _ in 0..requests {
        let (host, path, method, headers) = random_request(&mut rng, hosts);
        let cand = Candidate {
            host: host.as_deref(),
            path: &path,
            method: &method,
            headers: &headers,
            query: None,
            client: None,
        };
        let listener = *pick(&mut rng, &["web", "admin", "ghost"]);
        let got = index.route(listener, &cand);
        let want = linear.route(listener, &cand);
        let name = |id: Option<usize>| id.map(|i| &cfg.routes[i]);
        assert_eq!(
            got,
            want,
            "seed {seed}: {method} {host:?} {path:?} {headers:?} on {listener}:\n\
             index chose {:#?}\nlinear chose {:#?}",
            name(got),
            name(want),
        );
        routed += usize::from(got.is_some());
    }
    routed
}

#[test]
fn index_agrees_with_the_linear_matcher_on_small_tables() {
    let hosts: Vec<String> = HOSTS.iter().map(|h| h.to_string()).collect();
    let (mut routed, mut requests) = (0, 0);
    for seed in 0..600 {
        let routes = [0, 1, 5, 12, 30, 60][seed as usize % 6];
        routed += agree(seed, routes, &hosts, 60);
        requests += 60;
    }
    // Many requests find some route, or the comparison would say little.
    assert!(
        routed * 4 > requests,
        "{routed} of {requests} requests routed"
    );
}

#[test]
fn index_agrees_with_the_linear_matcher_on_large_tables() {
    // Many hosts, and enough routes per host and without one that they are indexed by
    // path (exact paths, nested prefixes, priorities across them).
    let mut hosts: Vec<String> = (0..40).map(|i| format!("t{i}.test")).collect();
    hosts.extend((0..10).map(|i| format!("*.w{i}.test")));
    hosts.extend(HOSTS.iter().map(|h| h.to_string()));
    let mut routed = 0;
    for seed in 1000..1030 {
        routed += agree(seed, 1500, &hosts, 400);
    }
    assert!(
        routed * 4 > 30 * 400,
        "{routed} of {} requests routed",
        30 * 400
    );
}
