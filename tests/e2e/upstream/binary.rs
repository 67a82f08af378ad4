//! The same guarantees through the real binary: YAML in a directory, `portcullis run`,
//! real backends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::support::{self, ConfDir, Proxy, Reply};

fn conf(routes_and_upstreams: &str) -> ConfDir {
    ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}\nworkers: 1\nlisteners: [{{ name: web, address: 127.0.0.1:0 }}]\n{routes_and_upstreams}"
    ))
}

async fn get(proxy: &Proxy, path: &str) -> (u16, String) {
    let resp = support::client()
        .get(proxy.url("web", path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("request {path} failed: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// A backend answering its name, whose `/healthz` answers 200 or 503 by `healthy`.
fn backend(name: &'static str, healthy: Arc<AtomicBool>) -> support::Backend {
    support::Backend::start(move |seen| {
        if seen.path == "/healthz" {
            let code = if healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
            return Reply::text(code, "");
        }
        Reply::text(200, name)
    })
}

#[tokio::test]
async fn binary_weighted_distribution_and_error_bodies() {
    let (a, b) = (
        backend("a", Arc::new(AtomicBool::new(true))),
        backend("b", Arc::new(AtomicBool::new(true))),
    );
    let dead = crate::inproc::closed_port().await;
    let proxy = Proxy::start(&conf(&format!(
        r#"routes:
  - {{ name: dead, match: {{ path_prefix: /dead }}, upstream: dead }}
  - {{ name: pool, match: {{ path_prefix: /pool }}, upstream: pool }}
upstreams:
  - {{ name: pool, targets: [{{ address: "{}", weight: 3 }}, {{ address: "{}", weight: 1 }}] }}
  - {{ name: dead, targets: [{{ address: "{dead}" }}] }}
"#,
        a.addr(),
        b.addr()
    )));
    for _ in 0..100 {
        let (status, body) = get(&proxy, "/pool").await;
        assert_eq!(
            status, 200,
            "a backend's answer expected, got {status} {body}"
        );
    }
    // One worker: smooth WRR is exact over whole cycles of 4.
    assert_eq!(
        (a.requests(), b.requests()),
        (75, 25),
        "3:1 weights over 100 requests"
    );
    assert_eq!(
        get(&proxy, "/dead").await,
        (502, "upstream unreachable\n".into())
    );
    assert_eq!(get(&proxy, "/nothing").await, (404, "no route\n".into()));
    let metrics = proxy.metrics().await;
    let counted = r#"portcullis_upstream_errors_total{upstream="dead",kind="connect"} 1"#;
    assert!(
        metrics.contains(counted),
        "expected {counted} in:\n{metrics}"
    );
}

#[tokio::test]
async fn binary_health_check_ejects_and_recovers() {
    let b_healthy = Arc::new(AtomicBool::new(true));
    let a = backend("a", Arc::new(AtomicBool::new(true)));
    let b = backend("b", b_healthy.clone());
    let proxy = Proxy::start(&conf(&format!(
        r#"routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    targets: [{{ address: "{}" }}, {{ address: "{}" }}]
    health_check: {{ path: /healthz, interval: 100ms, timeout: 2s }}
"#,
        a.addr(),
        b.addr()
    )));

    b_healthy.store(false, Ordering::SeqCst);
    // Once the probes see b down, a run of requests only reaches a.
    let mut ejected = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = b.requests();
        for _ in 0..6 {
            get(&proxy, "/").await;
        }
        if b.requests() == before {
            ejected = true;
            break;
        }
    }
    assert!(
        ejected,
        "b should stop getting traffic once its health check fails"
    );
    let status = proxy.status().await;
    let targets = &status["upstreams"][0]["targets"];
    assert_eq!(
        (targets[0]["healthy"].clone(), targets[1]["healthy"].clone()),
        (true.into(), false.into()),
        "/status shows b down and a up: {status}"
    );

    b_healthy.store(true, Ordering::SeqCst);
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = b.requests();
        for _ in 0..6 {
            get(&proxy, "/").await;
        }
        if b.requests() > before {
            recovered = true;
            break;
        }
    }
    assert!(
        recovered,
        "b should get traffic again once its health check passes"
    );
}

#[tokio::test]
async fn binary_streams_64_mib_without_its_rss_following() {
    const CHUNK: usize = 256 * 1024;
    const TOTAL: usize = 64 * 1024 * 1024;
    // A backend that counts the body as it streams (the harness backend keeps it).
    let counting = crate::inproc::Backend::start("a").await;
    let proxy = Proxy::start(&conf(&format!(
        "routes:\n  - {{ name: up, match: {{ path: /up }}, upstream: pool }}\n  - {{ name: echo, upstream: echo@internal }}\nupstreams: [{{ name: pool, targets: [{{ address: \"{}\" }}] }}]\n",
        counting.addr
    )));
    // Warm up so pools and buffers exist before the baseline.
    let _ = get(&proxy, "/warm").await;
    let pid = proxy.pid();
    let rss = move || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };

    for path in ["/up", "/echo"] {
        let before = rss();
        let peak = Arc::new(AtomicU64::new(before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (peak.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    peak.fetch_max(rss(), Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let stream = futures_util::stream::iter(
            (0..TOTAL / CHUNK).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
        );
        let resp = support::client()
            .post(proxy.url("web", path))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap_or_else(|e| panic!("upload to {path} failed: {e}"));
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        done.store(true, Ordering::SeqCst);
        let _ = sampler.join();
        assert_eq!(status, 200, "upload to {path}: {body}");
        let counted = if path == "/up" {
            body == format!("a {TOTAL}")
        } else {
            body.contains(&format!("\"body_bytes\":{TOTAL}"))
        };
        assert!(
            counted,
            "every byte should arrive through {path}, got {body}"
        );
        let grew_mib = peak.load(Ordering::SeqCst).saturating_sub(before) / 1024;
        assert!(
            grew_mib < 24,
            "the proxy's RSS should not follow a 64 MiB body through {path}; it grew by {grew_mib} MiB"
        );
    }
}
