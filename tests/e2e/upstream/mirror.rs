//! Mirroring through the real binary: a shadow that is down or slow neither slows nor
//! fails the client; the shadow gets the requests with their bodies (up to
//! `max_body`), a share of them when `percent` says so; every copy is counted.

use std::time::{Duration, Instant};

use super::balance::{check_reports, conf, named};
use crate::support::{self, Backend, ConfDir, Proxy, Reply};

/// POSTs `count` numbered bodies to `path`, one at a time; asserts every answer is the
/// real backend's and returns the slowest.
async fn post_all(
    proxy: &Proxy,
    path: &str,
    count: usize,
    body: impl Fn(usize) -> String,
) -> Duration {
    let client = support::client();
    let mut slowest = Duration::ZERO;
    for i in 0..count {
        let started = Instant::now();
        let resp = client
            .post(proxy.url("web", path))
            .body(body(i))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} {i} failed: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!((status, text.as_str()), (200, "real"), "{path} request {i}");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

/// `portcullis_mirror_requests_total` for `route` and `result`, once it reaches
/// `want` (or after 20 s, whatever it is then).
async fn mirrored(proxy: &Proxy, route: &str, result: &str, want: u64) -> u64 {
    let prefix = format!("portcullis_mirror_requests_total{{route=\"{route}\",");
    let suffix = format!("result=\"{result}\"}}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = proxy.metrics().await;
        let got = m
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .find_map(|l| {
                l.split_once(&suffix)
                    .map(|(_, n)| n.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        if got >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn binary_a_shadow_down_or_slow_does_not_slow_the_client() {
    let real = named("real");
    let slow = Backend::start(|_| Reply::text(200, "shadow").delayed(Duration::from_secs(3)));
    let dead = super::closed_port().await;
    let dir = ConfDir::with(&conf(&format!(
        "routes:
  - {{ name: to-dead, match: {{ path: /dead }}, upstream: real, mirror: {{ upstream: dead }} }}
  - {{ name: to-slow, match: {{ path: /slow }}, upstream: real, mirror: {{ upstream: slow, max_body: 1KiB }} }}
upstreams:
  - {{ name: real, targets: [{{ address: \"{}\" }}] }}
  - {{ name: dead, targets: [{{ address: \"{dead}\" }}] }}
  - name: slow
    targets: [{{ address: \"{}\" }}]
    timeouts: {{ request: 10s }}
",
        real.addr(),
        slow.addr()
    )));
    let proxy = Proxy::start(&dir);

    let slowest = post_all(&proxy, "/dead", 20, |i| format!("dead-{i}")).await;
    assert!(
        slowest < Duration::from_millis(1500),
        "a shadow that refuses must not slow the client; slowest {slowest:?}"
    );
    let slowest = post_all(&proxy, "/slow", 20, |i| format!("body-{i}")).await;
    assert!(
        slowest < Duration::from_millis(1500),
        "a shadow answering after 3 s must not slow the client; slowest {slowest:?}"
    );
    // A body over max_body goes to the real upstream only.
    post_all(&proxy, "/slow", 1, |_| "x".repeat(4096)).await;
    assert_eq!(real.requests(), 41, "the real upstream got every request");

    assert_eq!(mirrored(&proxy, "to-dead", "failed", 20).await, 20);
    assert_eq!(mirrored(&proxy, "to-slow", "answered", 20).await, 20);
    assert_eq!(mirrored(&proxy, "to-slow", "skipped", 1).await, 1);
    let mut bodies: Vec<String> = slow
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    bodies.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("body-{i}")).collect();
    want.sort();
    assert_eq!(bodies, want, "the shadow got each body whole, and no other");
}

#[tokio::test]
async fn binary_percent_copies_a_share() {
    let real = named("real");
    let shadow = named("shadow");
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: real, mirror: {{ upstream: shadow, percent: 25% }} }}]
upstreams:
  - {{ name: real, targets: [{{ address: \"{}\" }}] }}
  - {{ name: shadow, targets: [{{ address: \"{}\" }}] }}
",
        real.addr(),
        shadow.addr()
    )));
    let proxy = Proxy::start(&dir);
    let bodies = super::balance::send(&proxy, "/", 800, 8, |_| vec![]).await;
    assert!(bodies.iter().all(|b| b == "real"));
    // Every copy is under way once the last answer is in: wait for them to settle.
    mirrored(&proxy, "r", "answered", 140).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copied = mirrored(&proxy, "r", "answered", 0).await;
    assert!(
        (140..=260).contains(&copied),
        "about a quarter of 800 copied, got {copied}"
    );
    assert_eq!(
        shadow.requests() as u64,
        copied,
        "each copy reached the shadow"
    );
}

#[tokio::test]
async fn binary_max_in_flight_bounds_the_copies_under_way() {
    let real = named("real");
    let slow = Backend::start(|_| Reply::text(200, "shadow").delayed(Duration::from_secs(2)));
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: real, mirror: {{ upstream: slow, max_in_flight: 2 }} }}]
upstreams:
  - {{ name: real, targets: [{{ address: \"{}\" }}] }}
  - {{ name: slow, targets: [{{ address: \"{}\" }}], timeouts: {{ request: 10s }} }}
",
        real.addr(),
        slow.addr()
    )));
    let proxy = Proxy::start(&dir);
    // Six requests well within the shadow's 2 s: two copies hold the two places, the
    // other four are not copied.
    let slowest = post_all(&proxy, "/", 6, |i| format!("body-{i}")).await;
    assert!(slowest < Duration::from_millis(1500), "slowest {slowest:?}");
    assert_eq!(mirrored(&proxy, "r", "skipped", 4).await, 4);
    assert_eq!(mirrored(&proxy, "r", "answered", 2).await, 2);
    // Once they are answered, the places are free again.
    post_all(&proxy, "/", 1, |_| "again".into()).await;
    assert_eq!(mirrored(&proxy, "r", "answered", 3).await, 3);
    assert_eq!(
        mirrored(&proxy, "r", "skipped", 0).await,
        4,
        "no more skipped"
    );
    assert_eq!(slow.requests(), 3);
}

#[test]
fn check_reports_mirror_errors() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - { name: a, upstream: echo@internal, mirror: { upstream: ghost, percent: 0 } }
  - { name: b, upstream: echo@internal, mirror: { upstream: echo@internal } }
  - { name: c, upstream: echo@internal, mirror: { percent: 5% } }
  - { name: d, upstream: echo@internal, mirror: { upstream: ghost, max_in_flight: 0 } }
",
        &[
            "up.yaml:3: routes.a.mirror.percent: `0` is not a percentage from 1% to 100%",
            "up.yaml:3: routes.a.mirror.upstream: unknown upstream `ghost` (defined: echo@internal)",
            "up.yaml:4: routes.b.mirror.upstream: a mirror goes to a configured upstream",
            "up.yaml:5: routes.c.mirror.upstream: missing required field",
            "up.yaml:6: routes.d.mirror.max_in_flight: must be at least 1, found 0",
            "up.yaml:6: routes.d.mirror.upstream: unknown upstream `ghost` (defined: echo@internal)",
        ],
    );
}
