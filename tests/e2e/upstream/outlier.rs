//! Outlier detection through the real binary: a target that keeps failing is ejected,
//! returns, and is ejected again for longer; errors (and the circuit breaker's)
//! reported like the rest. The circuit breaker's limits: `limits.rs`.

use std::time::Duration;

use super::balance::{check_reports, conf, named};
use crate::support::{self, Backend, ConfDir, Proxy, Reply};

/// GET `/` through `proxy`: the status and the body.
pub(super) async fn get(proxy: &Proxy) -> (u16, String) {
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
