//! Outlier detection and the circuit breaker through the real binary: a target that
//! keeps failing is ejected, returns, and is ejected again for longer; past
//! `max_requests` in flight a request gets 503 at once; errors reported like the rest.

use std::time::Duration;

use super::balance::{check_reports, conf, named};
use crate::support::{self, Backend, ConfDir, Proxy, Reply};

async fn get(proxy: &Proxy) -> (u16, String) {
    let resp = support::client()
        .get(proxy.url("web", "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET failed: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn binary_a_failing_target_is_ejected_returns_and_is_ejected_for_longer() {
    let good = named("good");
    let bad = Backend::start(|_| Reply::text(500, "broken"));
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    targets: [{{ address: \"{}\" }}, {{ address: \"{}\" }}]
    outlier_detection: {{ consecutive_5xx: 3, base_ejection_time: 1s, max_ejection_percent: 50 }}
",
        good.addr(),
        bad.addr()
    )));
    let proxy = Proxy::start(&dir);

    for _ in 0..30 {
        get(&proxy).await;
    }
    assert_eq!(
        bad.requests(),
        3,
        "three failures in a row, then no more traffic"
    );
    let status = proxy.status().await;
    assert_eq!(
        status["upstreams"][0]["targets"][1]["healthy"], false,
        "/status shows it out: {status}"
    );

    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..30 {
        get(&proxy).await;
    }
    assert_eq!(
        bad.requests(),
        6,
        "back after 1 s, failing again, out again"
    );
    // The second ejection lasts 2 s: still out after 1.2 s more.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..10 {
        let (status, body) = get(&proxy).await;
        assert_eq!((status, body.as_str()), (200, "good"), "only good answers");
    }
    assert_eq!(bad.requests(), 6, "the second ejection is longer");
}

#[tokio::test]
async fn binary_the_circuit_breaker_answers_503_past_max_requests() {
    let slow = Backend::start(|_| Reply::text(200, "slow").delayed(Duration::from_millis(800)));
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: app }}]
upstreams:
  - name: app
    targets: [{{ address: \"{}\" }}]
    circuit_breaker: {{ max_requests: 2 }}
",
        slow.addr()
    )));
    let proxy = Proxy::start(&dir);
    let url = proxy.url("web", "/");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // Spread a little so the first two are in flight when the rest arrive.
            tokio::time::sleep(Duration::from_millis(20 * i)).await;
            let started = std::time::Instant::now();
            let resp = support::client()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET failed: {e}"));
            let status = resp.status().as_u16();
            (
                status,
                resp.text().await.unwrap_or_default(),
                started.elapsed(),
            )
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body, took) = t.await.unwrap_or_else(|e| panic!("task: {e}"));
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(body, "upstream overloaded\n");
                assert!(
                    took < Duration::from_millis(700),
                    "refused at once, took {took:?}"
                );
                refused += 1;
            }
            other => panic!("200 or 503 expected, got {other} {body}"),
        }
    }
    assert!(
        ok >= 2 && refused >= 4,
        "2 in flight at most: {ok} answered, {refused} refused"
    );
    let m = proxy.metrics().await;
    let counted =
        format!(r#"portcullis_upstream_errors_total{{upstream="app",kind="overflow"}} {refused}"#);
    assert!(m.contains(&counted), "expected {counted} in:\n{m}");
}

#[test]
fn check_reports_breaker_and_outlier_errors() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    targets: [{ address: 127.0.0.1:9000 }]
    circuit_breaker: { max_pendings: 3 }
    outlier_detection:
      consecutive_5xx: 0
",
        &[
            "up.yaml:6: upstreams.app.circuit_breaker: needs at least one of max_requests, max_connections, max_pending",
            "up.yaml:6: upstreams.app.circuit_breaker.max_pendings: unknown field (expected one of: max_requests, max_connections, max_pending)",
            "up.yaml:8: upstreams.app.outlier_detection.consecutive_5xx: must be at least 1, found 0",
        ],
    );
}
