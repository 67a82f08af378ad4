//! Retries through the real binary: a failing GET tried again (and counted), a POST
//! with a small body sent again whole, a streamed POST sent once, a spent budget, a
//! per-try timeout, and errors in `retries` reported like the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::balance::{check_reports, conf};
use crate::support::{self, Backend, ConfDir, Proxy, Reply};

/// A backend that answers 503 to its first `failures` requests, then 200 with the
/// body it got.
fn flaky(failures: usize) -> Backend {
    let seen = Arc::new(AtomicUsize::new(0));
    Backend::start(move |req| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            return Reply::text(503, "down");
        }
        Reply::text(200, &format!("ok {}", String::from_utf8_lossy(&req.body)))
    })
}

fn proxy_for(backend: &Backend, retries: &str) -> (ConfDir, Proxy) {
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: app }}]
upstreams:
  - name: app
    targets: [{{ address: \"{}\" }}]
    retries: {retries}
",
        backend.addr()
    )));
    let proxy = Proxy::start(&dir);
    (dir, proxy)
}

#[tokio::test]
async fn binary_a_failing_get_is_retried_and_counted() {
    let backend = flaky(2);
    let (_dir, proxy) = proxy_for(&backend, "{ attempts: 3, on: [5xx], backoff: 0 }");
    let resp = support::client()
        .get(proxy.url("web", "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET failed: {e}"));
    assert_eq!(resp.status(), 200, "the third attempt succeeds");
    assert_eq!(backend.requests(), 3, "two failures, then the answer");
    let attempts: Vec<Option<String>> = backend
        .seen()
        .iter()
        .map(|s| {
            s.headers
                .get("x-portcullis-attempt")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        })
        .collect();
    assert_eq!(attempts, [None, Some("2".into()), Some("3".into())]);
    let m = proxy.metrics().await;
    let counted = r#"portcullis_upstream_retries_total{upstream="app",reason="5xx"} 2"#;
    assert!(m.contains(counted), "expected {counted} in:\n{m}");
}

#[tokio::test]
async fn binary_a_post_with_a_small_body_is_sent_again_whole() {
    let backend = flaky(1);
    let (_dir, proxy) = proxy_for(
        &backend,
        "{ attempts: 2, on: [gateway-error], backoff: 10ms }",
    );
    let resp = support::client()
        .post(proxy.url("web", "/orders"))
        .body("hello")
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST failed: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap_or_default(), "ok hello");
    let bodies: Vec<Bytes> = backend.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(bodies, [Bytes::from("hello"), Bytes::from("hello")]);
}

#[tokio::test]
async fn binary_a_streamed_post_is_sent_once() {
    let backend = flaky(1);
    let (_dir, proxy) = proxy_for(&backend, "{ attempts: 3, on: [5xx], backoff: 0 }");
    // No Content-Length: the body is still arriving when the first attempt goes out,
    // so it cannot be sent again.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(Bytes::from("hel")), Ok(Bytes::from("lo"))];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = support::client()
        .post(proxy.url("web", "/orders"))
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST failed: {e}"));
    assert_eq!(resp.status(), 503, "the upstream's own answer, not retried");
    assert_eq!(backend.requests(), 1, "a streamed body goes once");
}

#[tokio::test]
async fn binary_a_spent_budget_stops_retries() {
    let backend = flaky(usize::MAX);
    let (_dir, proxy) = proxy_for(
        &backend,
        "{ attempts: 3, on: [5xx], backoff: 0, budget: 20%, min_retries: 0 }",
    );
    let resp = support::client()
        .get(proxy.url("web", "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET failed: {e}"));
    // One request in flight: 20% of it is no retry at all.
    assert_eq!(resp.status(), 503);
    assert_eq!(backend.requests(), 1, "the budget allowed no retry");
    let m = proxy.metrics().await;
    let denied = r#"portcullis_upstream_retries_denied_total{upstream="app"} 1"#;
    assert!(m.contains(denied), "expected {denied} in:\n{m}");
}

#[tokio::test]
async fn binary_a_slow_attempt_is_cut_by_the_per_try_timeout_and_retried() {
    let seen = Arc::new(AtomicUsize::new(0));
    let backend = Backend::start(move |_| {
        let reply = Reply::text(200, "answered");
        if seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return reply.delayed(Duration::from_secs(10));
        }
        reply
    });
    let (_dir, proxy) = proxy_for(
        &backend,
        "{ attempts: 2, on: [gateway-error], per_try_timeout: 300ms, backoff: 0 }",
    );
    let started = std::time::Instant::now();
    let resp = support::client()
        .get(proxy.url("web", "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET failed: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap_or_default(), "answered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the first attempt was cut at 300ms, not waited for 10 s: {:?}",
        started.elapsed()
    );
    let m = proxy.metrics().await;
    let counted = r#"portcullis_upstream_retries_total{upstream="app",reason="timeout"} 1"#;
    assert!(m.contains(counted), "expected {counted} in:\n{m}");
}

#[test]
fn check_reports_retry_errors_with_file_line_and_field() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    targets: [{ address: 127.0.0.1:9000 }]
    retries:
      attempts: 11
      on: [5xx, teapot]
      budget: 120%
",
        &[
            "up.yaml:7: upstreams.app.retries.attempts: must be at most 10, found 11",
            "up.yaml:8: upstreams.app.retries.on.1: `teapot` is not one of: connect-failure, refused-stream, reset, 5xx, gateway-error",
            "up.yaml:9: upstreams.app.retries.budget: `120%` is not a percentage from 0% to 100%",
        ],
    );
}
