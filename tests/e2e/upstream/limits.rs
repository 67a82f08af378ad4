//! The circuit breaker through the real binary: past `max_requests` in flight a
//! request gets 503 at once; past `max_connections` open, a request that needs a new connection gets 503 at once and
//! the next, once a connection is free again, is served; past `max_pending` requests
//! waiting for a connection, another gets 503 at once; both counted in the metrics.

use std::time::{Duration, Instant};

use crate::support::{self, Backend, ConfDir, Proxy, Reply};

/// One worker, so that every request shares the one pool the limit is read against.
fn conf(body: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nworkers: 1\nlisteners: [{{ name: web, address: 127.0.0.1:0 }}]\nroutes: [{{ name: r, upstream: app }}]\n{body}"
    )
}

/// `count` GETs started 20 ms apart, each on a new client: status, body, time taken.
async fn burst(proxy: &Proxy, count: u64) -> Vec<(u16, String, Duration)> {
    let url = proxy.url("web", "/");
    let mut tasks = Vec::new();
    for i in 0..count {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i)).await;
            let started = Instant::now();
            let resp = support::client()
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET failed: {e}"));
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            (status, body, started.elapsed())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| panic!("task: {e}")));
    }
    out
}

fn overflow_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"portcullis_upstream_errors_total{upstream="app",kind="overflow"} "#)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn binary_the_circuit_breaker_answers_503_past_max_requests() {
    let slow = Backend::start(|_| Reply::text(200, "slow").delayed(Duration::from_millis(800)));
    let dir = ConfDir::with(&conf(&format!(
        "upstreams:
  - name: app
    targets: [{{ address: \"{}\" }}]
    circuit_breaker: {{ max_requests: 2 }}
",
        slow.addr()
    )));
    let proxy = Proxy::start(&dir);
    let mut ok = 0;
    let mut refused = 0;
    for (status, body, took) in burst(&proxy, 8).await {
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
    assert_eq!(overflow_count(&m), refused, "counted as overflow:\n{m}");
}

#[tokio::test]
async fn binary_max_connections_refuses_a_request_that_needs_one_more() {
    let slow = Backend::start(|_| Reply::text(200, "slow").delayed(Duration::from_millis(800)));
    let dir = ConfDir::with(&conf(&format!(
        "upstreams:
  - name: app
    targets: [{{ address: \"{}\" }}]
    circuit_breaker: {{ max_connections: 2 }}
",
        slow.addr()
    )));
    let proxy = Proxy::start(&dir);
    let results = burst(&proxy, 8).await;
    let mut ok = 0;
    let mut refused = 0;
    for (status, body, took) in &results {
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(body, "upstream overloaded\n");
                assert!(
                    *took < Duration::from_millis(700),
                    "refused at once, took {took:?}"
                );
                refused += 1;
            }
            other => panic!("200 or 503 expected, got {other} {body}"),
        }
    }
    assert!(
        (2..=3).contains(&ok) && refused >= 5,
        "two connections at most: {ok} answered, {refused} refused ({results:?})"
    );
    assert_eq!(slow.requests(), ok, "the refused never reached the backend");
    let m = proxy.metrics().await;
    assert_eq!(
        overflow_count(&m),
        refused as u64,
        "counted as overflow:\n{m}"
    );
    let status = proxy.status().await;
    let open = status["upstreams"][0]["connections"].as_u64();
    assert!(
        open.is_some_and(|n| (1..=3).contains(&n)),
        "/status shows the open connections: {status}"
    );

    // The two connections are idle in the pool now: requests reuse them.
    for (status, body, _) in burst(&proxy, 2).await {
        assert_eq!((status, body.as_str()), (200, "slow"), "served again");
    }
}

#[tokio::test]
async fn binary_max_pending_refuses_past_the_requests_waiting_for_a_connection() {
    // Connects to it hang (its accept queue is full) until the 1 s connect timeout.
    let (hole, _fillers, _listener) = super::black_hole();
    let dir = ConfDir::with(&conf(&format!(
        "upstreams:
  - name: app
    targets: [{{ address: \"{hole}\" }}]
    timeouts: {{ connect: 1s }}
    circuit_breaker: {{ max_pending: 2 }}
"
    )));
    let proxy = Proxy::start(&dir);
    let results = burst(&proxy, 6).await;
    let waited: Vec<_> = results.iter().filter(|(s, _, _)| *s == 502).collect();
    let refused: Vec<_> = results.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!(
        (waited.len(), refused.len()),
        (2, 4),
        "two wait for their connect (and fail it), the rest are refused: {results:?}"
    );
    for (_, body, took) in refused {
        assert_eq!(body, "upstream overloaded\n");
        assert!(
            *took < Duration::from_millis(800),
            "refused without waiting for the connect timeout, took {took:?}"
        );
    }
    let m = proxy.metrics().await;
    assert_eq!(overflow_count(&m), 4, "counted as overflow:\n{m}");
}

#[test]
fn check_reports_breaker_limit_errors() {
    super::balance::check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    targets: [{ address: 127.0.0.1:9000 }]
    circuit_breaker: { max_connections: 0, max_pending: x }
  - name: other
    targets: [{ address: 127.0.0.1:9000 }]
    circuit_breaker: { max_queue: 3 }
",
        &[
            "up.yaml:6: upstreams.app.circuit_breaker.max_connections: must be at least 1, found 0",
            "up.yaml:6: upstreams.app.circuit_breaker.max_pending: expected an integer, found `x`",
            "up.yaml:9: upstreams.other.circuit_breaker.max_queue: unknown field (expected one of: max_requests, max_connections, max_pending)",
            "up.yaml:9: upstreams.other.circuit_breaker: needs at least one of max_requests, max_connections, max_pending",
        ],
    );
}
