//! Balancing policies through the real binary: `least_request` steering away from a
//! slow target, `random` by weight, `consistent_hash` keeping keys and moving few
//! when a target is added, an unchanged upstream kept when it moves to another line,
//! and errors in `balance` reported like every other config error.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{self, Backend, ConfDir, Proxy, Reply};

pub(super) fn conf(body: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nworkers: 2\nlisteners: [{{ name: web, address: 127.0.0.1:0 }}]\n{body}"
    )
}

/// A backend answering its name.
pub(super) fn named(name: &'static str) -> Backend {
    Backend::start(move |_| Reply::text(200, name))
}

/// Sends `count` GETs of `path` over `concurrency` keep-alive connections, each with
/// the headers `headers(i)` gives request `i`; returns the bodies, in request order.
pub(super) async fn send(
    proxy: &Proxy,
    path: &str,
    count: usize,
    concurrency: usize,
    headers: impl Fn(usize) -> Vec<(String, String)> + Send + Sync + 'static,
) -> Vec<String> {
    let headers = Arc::new(headers);
    let url = proxy.url("web", path);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next, headers) = (
            support::client(),
            url.clone(),
            next.clone(),
            headers.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    return got;
                }
                let mut req = client.get(&url);
                for (name, value) in headers(i) {
                    req = req.header(name, value);
                }
                let resp = req
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                assert_eq!(
                    status, 200,
                    "request {i}: a backend's answer expected, got {body}"
                );
                got.push((i, body));
            }
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        all.extend(t.await.unwrap_or_else(|e| panic!("client task: {e}")));
    }
    all.sort();
    all.into_iter().map(|(_, body)| body).collect()
}

pub(super) fn counts(bodies: &[String]) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for b in bodies {
        *counts.entry(b.as_str()).or_insert(0) += 1;
    }
    counts
}

fn share(counts: &HashMap<&str, usize>, name: &str, total: usize) -> f64 {
    counts.get(name).copied().unwrap_or(0) as f64 / total as f64
}

#[tokio::test]
async fn binary_random_follows_weights() {
    let (a, b) = (named("a"), named("b"));
    let conf = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    balance: random
    targets: [{{ address: \"{}\", weight: 1 }}, {{ address: \"{}\", weight: 3 }}]
",
        a.addr(),
        b.addr()
    )));
    let proxy = Proxy::start(&conf);
    let bodies = send(&proxy, "/", 4000, 8, |_| vec![]).await;
    let counts = counts(&bodies);
    let b_share = share(&counts, "b", bodies.len());
    assert!(
        (0.72..=0.78).contains(&b_share),
        "b (weight 3 of 4) should get 75% ± 3%, got {:.1}% ({counts:?})",
        b_share * 100.0
    );
}

#[tokio::test]
async fn binary_least_request_steers_away_from_a_slow_target() {
    let slow = Backend::start(|_| Reply::text(200, "slow").delayed(Duration::from_millis(300)));
    let (a, b) = (named("a"), named("b"));
    let conf = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    balance: least_request
    targets: [{{ address: \"{}\" }}, {{ address: \"{}\" }}, {{ address: \"{}\" }}]
",
        slow.addr(),
        a.addr(),
        b.addr()
    )));
    let proxy = Proxy::start(&conf);
    let bodies = send(&proxy, "/", 600, 16, |_| vec![]).await;
    let counts = counts(&bodies);
    // round_robin would send it a third; with its requests piling up in flight, the
    // power of two choices picks it only when both draws land on it.
    let slow_share = share(&counts, "slow", bodies.len());
    assert!(
        slow_share < 0.15,
        "the slow target should get well under a third, got {:.1}% ({counts:?})",
        slow_share * 100.0
    );
}

fn hashed(targets: &[&Backend]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ address: \"{}\" }}", t.addr()))
        .collect();
    conf(&format!(
        "routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    balance: {{ policy: consistent_hash, key: \"header:x-user\", load_factor: off }}
    targets: [{}]
",
        list.join(", ")
    ))
}

#[tokio::test]
async fn binary_consistent_hash_keeps_keys_and_moves_few_when_a_target_is_added() {
    let (a, b, c, d) = (named("a"), named("b"), named("c"), named("d"));
    let conf = ConfDir::with(&hashed(&[&a, &b, &c]));
    let proxy = Proxy::start(&conf);
    const KEYS: usize = 2000;
    let user = |i: usize| vec![("x-user".to_string(), format!("user-{}", i % KEYS))];
    // Every key twice: the second time must land where the first did. Without the
    // bounded load (`load_factor: off`; its unit tests cover it): even one request at
    // a time is not one in flight as the proxy counts, since a request counts until
    // the worker that served it lets go of its response body, which may be after the
    // client has read it and sent the next request to the other worker. Seen as two
    // in flight, the next key may rightly be sent past its target (this test failed
    // so once under load).
    let before = send(&proxy, "/", 2 * KEYS, 1, user).await;
    for k in 0..KEYS {
        assert_eq!(
            before[k],
            before[k + KEYS],
            "user-{k} went to {} then to {}",
            before[k],
            before[k + KEYS]
        );
    }
    let spread = counts(&before);
    assert_eq!(spread.len(), 3, "keys spread over all three: {spread:?}");

    conf.write("portcullis.yaml", hashed(&[&a, &b, &c, &d]));
    proxy.wait_for_generation(2).await;
    let after = send(&proxy, "/", KEYS, 1, user).await;
    let mut moved = 0;
    for k in 0..KEYS {
        if before[k] != after[k] {
            moved += 1;
            assert_eq!(
                after[k], "d",
                "user-{k} moved from {} to an old target",
                before[k]
            );
        }
    }
    // The new target takes about a quarter; never more than a third (1/N, N = 3).
    assert!(
        moved > KEYS / 8 && moved <= KEYS / 3,
        "adding a fourth target should move about {} of {KEYS} keys, at most {}; {moved} moved",
        KEYS / 4,
        KEYS / 3
    );
}

/// A backend whose `/healthz` counts its probes and always fails.
fn probed(name: &'static str, probes: Arc<AtomicUsize>) -> Backend {
    Backend::start(move |seen| {
        if seen.path == "/healthz" {
            probes.fetch_add(1, Ordering::SeqCst);
            return Reply::text(503, "");
        }
        Reply::text(200, name)
    })
}

#[tokio::test]
async fn binary_an_unchanged_upstream_moved_to_another_line_keeps_its_health() {
    let a = named("a");
    let probes = Arc::new(AtomicUsize::new(0));
    let b = probed("b", probes.clone());
    let upstream = format!(
        "upstreams:
  - name: pool
    targets: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]
    health_check: {{ path: /healthz, interval: 1h }}
",
        a.addr(),
        b.addr()
    );
    let route = "routes: [{ name: r, upstream: pool }]\n";
    let dir = ConfDir::with(&conf(&format!("{route}{upstream}")));
    let proxy = Proxy::start(&dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while proxy.status().await["upstreams"][0]["targets"][1]["healthy"] != false {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b's first probe should mark it down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same upstream, lines further down and after a comment.
    dir.write(
        "portcullis.yaml",
        conf(&format!("# moved\n\n{upstream}\n{route}")),
    );
    proxy.wait_for_generation(2).await;
    // A rebuilt upstream would probe at once and start with b up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = proxy.status().await;
    assert_eq!(
        status["upstreams"][0]["targets"][1]["healthy"], false,
        "b stays down across the reload: {status}"
    );
    assert_eq!(
        probes.load(Ordering::SeqCst),
        1,
        "the kept health check does not probe again within its 1h interval"
    );
    for _ in 0..10 {
        let body = send(&proxy, "/", 1, 1, |_| vec![]).await;
        assert_eq!(body, ["a"], "only a is in rotation");
    }
}

#[test]
fn check_reports_balance_errors_with_file_line_and_field() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: one }]
upstreams:
  - name: one
    targets: [{ address: 127.0.0.1:9000 }]
    balance: fastest
  - name: two
    targets: [{ address: 127.0.0.1:9000 }]
    balance:
      policy: consistent_hash
      key: header:two words
      spill: yes
",
        &[
            "up.yaml:6: upstreams.one.balance: `fastest` is not a balancing policy (one of: round_robin, least_request, random, consistent_hash)",
            "up.yaml:11: upstreams.two.balance.key: `two words` is not a header name",
            "up.yaml:12: upstreams.two.balance.spill: unknown setting of `consistent_hash`",
        ],
    );
}

/// Runs `portcullis check` on a directory holding `up.yaml` = `yaml`: it must fail and
/// print every line of `expected` (`FILE:LINE: FIELD: message`).
pub(crate) fn check_reports(yaml: &str, expected: &[&str]) {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(tmp.path().join("up.yaml"), yaml).unwrap_or_else(|e| panic!("write: {e}"));
    let (code, _, stderr) = support::run_to_end([
        OsStr::new("check"),
        OsStr::new("--conf"),
        tmp.path().as_os_str(),
    ]);
    assert_eq!(code, Some(1), "check must fail; stderr:\n{stderr}");
    for line in expected {
        assert!(
            stderr.lines().any(|l| l == *line),
            "expected the line `{line}` in:\n{stderr}"
        );
    }
}
