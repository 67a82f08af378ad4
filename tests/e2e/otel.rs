//! OpenTelemetry tracing through the real binary, exported to a real OTLP/HTTP
//! receiver (tests/e2e/otel/otlp_receiver.py, decoding with PyPI's
//! opentelemetry-proto): the spans of a request, its filter and its upstream
//! attempts (a retry included) with their parent links and attributes, the
//! `traceparent` the upstream sees, sampling, a dead collector, reload and config
//! errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, Backend, ConfDir, Proxy, PyServer, Reply};

const RECEIVER_MODULE: &str = "opentelemetry.proto.collector.trace.v1.trace_service_pb2";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn receiver() -> PyServer {
    PyServer::start(RECEIVER_MODULE, "otel/otlp_receiver.py", &[])
}

/// A backend that answers 503 to its first `failures` requests, then 200.
fn flaky(failures: usize) -> Backend {
    let seen = Arc::new(AtomicUsize::new(0));
    Backend::start(move |_| {
        if seen.fetch_add(1, Ordering::SeqCst) < failures {
            return Reply::text(503, "down");
        }
        Reply::text(200, "ok")
    })
}

fn conf(backend: &Backend, tracing: &str) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: r, upstream: app, filters: [stamp] }}]
filters:
  - name: stamp
    builtin: headers
    limits: {{ callback_timeout: 5s }}
    config: {{ request: {{ set: {{ x-stamped: "1" }} }}, response: {{ set: {{ x-seen: "1" }} }} }}
upstreams:
  - name: app
    targets: [{{ address: "{}" }}]
    retries: {{ attempts: 2, on: [5xx], backoff: 0 }}
{tracing}
"#,
        backend.addr()
    )
}

/// Everything the receiver got: `{ spans: [...], exports: [...] }`.
async fn received(receiver: &PyServer) -> Value {
    let url = format!("http://{}/spans", receiver.address());
    let resp = support::client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("{url} sent no JSON: {e}"))
}

/// Waits (10 s) until the receiver holds `n` spans of `trace`; returns them.
async fn spans_of(receiver: &PyServer, trace: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = received(receiver).await;
        let spans: Vec<Value> = got["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["trace_id"] == trace)
            .cloned()
            .collect();
        if spans.len() >= n || Instant::now() > deadline {
            assert_eq!(
                spans.len(),
                n,
                "expected {n} spans of trace {trace}; the receiver got:\n{got:#}"
            );
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn traceparent_seen(backend: &Backend) -> Vec<String> {
    backend
        .seen()
        .iter()
        .map(|s| {
            s.headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(none)")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn binary_a_traced_request_exports_its_filter_and_attempt_spans_under_the_request_span() {
    let receiver = receiver();
    let backend = flaky(1);
    let dir = ConfDir::with(&conf(
        &backend,
        &format!(
            "tracing:\n  otlp: {{ endpoint: \"http://{}\", timeout: 2s, headers: {{ x-tenant: team-a }} }}\n  sample_ratio: 0\n  service_name: edge-test\n",
            receiver.address()
        ),
    ));
    let proxy = Proxy::start(&dir);
    let resp = support::get_with(
        &proxy.url("web", "/a"),
        &[
            ("traceparent", &format!("00-{TRACE_ID}-{CALLER_SPAN}-01")),
            ("tracestate", "vendor=1"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200, "the retry succeeds");
    assert_eq!(
        resp.headers().get("x-seen").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );

    // The request, the filter twice (request and response headers), two attempts.
    let spans = spans_of(&receiver, TRACE_ID, 5).await;
    let named =
        |name: &str| -> Vec<&Value> { spans.iter().filter(|s| s["name"] == name).collect() };
    let server = named("GET r");
    assert_eq!(server.len(), 1, "one request span in {spans:#?}");
    let server = server[0];
    assert_eq!(server["kind"], 2, "SERVER");
    assert_eq!(
        server["parent_span_id"], CALLER_SPAN,
        "the caller's span is its parent"
    );
    assert_eq!(server["trace_state"], "vendor=1");
    assert_eq!(server["resource"]["service.name"], "edge-test");
    assert_eq!(server["scope"], "portcullis");
    assert_eq!(attr(server, "http.request.method"), "GET");
    assert_eq!(attr(server, "url.path"), "/a");
    assert_eq!(attr(server, "http.route"), "r");
    assert_eq!(attr(server, "http.response.status_code"), 200);
    assert_eq!(attr(server, "portcullis.upstream"), "app");
    let server_id = server["span_id"].as_str().unwrap_or_default().to_string();

    let filters = named("filter stamp");
    assert_eq!(filters.len(), 2, "a span per header phase in {spans:#?}");
    let mut phases: Vec<&str> = filters
        .iter()
        .map(|s| {
            attr(s, "portcullis.filter.phase")
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    phases.sort_unstable();
    assert_eq!(phases, ["request_headers", "response_headers"]);
    for f in &filters {
        assert_eq!(
            f["parent_span_id"], server_id,
            "a filter span is the request's child"
        );
        assert_eq!(f["kind"], 1, "INTERNAL");
        assert_eq!(attr(f, "portcullis.filter.name"), "stamp");
        assert_eq!(attr(f, "portcullis.filter.outcome"), "continue");
    }

    let mut attempts = named("upstream app");
    attempts.sort_by_key(|s| attr(s, "portcullis.attempt").as_i64());
    assert_eq!(attempts.len(), 2, "one span per attempt in {spans:#?}");
    let (first, second) = (attempts[0], attempts[1]);
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(
            a["parent_span_id"], server_id,
            "an attempt span is the request's child"
        );
        assert_eq!(a["kind"], 3, "CLIENT");
        assert_eq!(attr(a, "portcullis.attempt"), i as i64 + 1);
        assert_eq!(attr(a, "server.address"), &backend.addr().to_string());
    }
    assert_eq!(attr(first, "http.response.status_code"), 503);
    assert_eq!(first["status_code"], 2, "the failed attempt is an ERROR");
    assert_eq!(attr(second, "http.response.status_code"), 200);
    assert_eq!(
        second["status_code"], 0,
        "the answered attempt has no error"
    );
    let (s, e) = (server["start"].as_u64(), server["end"].as_u64());
    for a in &attempts {
        assert!(
            s <= a["start"].as_u64() && a["end"].as_u64() <= e,
            "the attempt {a:#} lies within the request {server:#}"
        );
    }

    // The upstream saw each attempt's own span as its parent, in the caller's trace.
    let seen = traceparent_seen(&backend);
    let expected: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "00-{TRACE_ID}-{}-01",
                a["span_id"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(seen, expected, "the traceparent of each attempt");
    for s in backend.seen() {
        assert_eq!(
            s.headers.get("tracestate").map(|v| v.as_bytes()),
            Some(&b"vendor=1"[..]),
            "tracestate goes on as the client sent it"
        );
    }

    // The export: protobuf, with the configured header.
    let got = received(&receiver).await;
    let export = &got["exports"][0];
    assert_eq!(export["content_type"], "application/x-protobuf");
    assert_eq!(export["headers"]["x-tenant"], "team-a");
    let metrics = proxy.metrics().await;
    assert!(
        support::sample(&metrics, "portcullis_trace_spans_total") >= 5,
        "exported spans counted:\n{metrics}"
    );
}

#[tokio::test]
async fn binary_sampling_follows_the_ratio_and_the_callers_flag() {
    let receiver = receiver();
    let backend = Backend::echo("b");
    let tracing = |ratio: &str| {
        format!(
            "tracing:\n  otlp: {{ endpoint: \"http://{}/v1/traces\" }}\n  sample_ratio: {ratio}\n",
            receiver.address()
        )
    };
    let dir = ConfDir::with(&conf(&backend, &tracing("0")));
    let proxy = Proxy::start(&dir);
    let url = proxy.url("web", "/s");

    // Ratio 0, no traceparent: not sampled, but the upstream gets a new trace.
    assert_eq!(support::get_with(&url, &[]).await.status(), 200);
    // Ratio 0, a sampled caller: traced all the same.
    let sampled = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let tp = format!("00-{sampled}-{CALLER_SPAN}-01");
    assert_eq!(
        support::get_with(&url, &[("traceparent", &tp)])
            .await
            .status(),
        200
    );
    spans_of(&receiver, sampled, 4).await;

    dir.write("portcullis.yaml", conf(&backend, &tracing("1")));
    proxy.wait_for_generation(2).await;
    // Ratio 1, a caller that did not sample: not traced, its traceparent kept.
    let unsampled = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    let tp_unsampled = format!("00-{unsampled}-{CALLER_SPAN}-00");
    assert_eq!(
        support::get_with(&url, &[("traceparent", &tp_unsampled)])
            .await
            .status(),
        200
    );
    // Ratio 1 (the reload applied), no traceparent: traced.
    assert_eq!(support::get_with(&url, &[]).await.status(), 200);

    let seen = traceparent_seen(&backend);
    assert_eq!(seen.len(), 4, "{seen:?}");
    let fresh = &seen[0];
    assert!(
        fresh.len() == 55 && fresh.starts_with("00-") && fresh.ends_with("-00"),
        "an unsampled new trace goes upstream flagged 00: {fresh}"
    );
    assert!(seen[1].starts_with(&format!("00-{sampled}-")) && seen[1].ends_with("-01"));
    assert_eq!(
        seen[2], tp_unsampled,
        "an unsampled caller's traceparent is passed on"
    );
    let new_trace = &seen[3][3..35];
    assert!(seen[3].ends_with("-01"), "sampled at ratio 1: {}", seen[3]);
    spans_of(&receiver, new_trace, 4).await;

    let got = received(&receiver).await;
    let traces: std::collections::BTreeSet<&str> = got["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["trace_id"].as_str())
        .collect();
    assert_eq!(
        traces,
        [sampled, new_trace].into_iter().collect(),
        "only the sampled requests were exported"
    );
}

/// A collector that accepts connections and never answers.
fn black_hole() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("cannot bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no address: {e}"));
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Ends when the test process does; holds every connection open, silent.
        for conn in listener.incoming().take(64).flatten() {
            held.push(conn);
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn binary_a_silent_collector_neither_slows_nor_fails_requests_and_its_spans_are_counted() {
    let backend = Backend::echo("b");
    let (hole, _thread) = black_hole();
    let dir = ConfDir::with(&conf(
        &backend,
        &format!("tracing:\n  otlp: {{ endpoint: \"http://{hole}\", timeout: 300ms }}\n"),
    ));
    let proxy = Proxy::start(&dir);
    let client = support::client();
    let url = proxy.url("web", "/dead");
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..100 {
        let t = Instant::now();
        let resp = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200);
        slowest = slowest.max(t.elapsed());
    }
    let total = started.elapsed();
    // The export waits 300 ms per batch on the silent collector; no request may.
    assert!(
        slowest < Duration::from_millis(250),
        "a request took {slowest:?} with the collector silent (100 in {total:?})"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = proxy.metrics().await;
        let dropped = support::sample(
            &text,
            "portcullis_trace_spans_dropped_total{reason=\"export_failed\"}",
        );
        if dropped > 0 {
            assert_eq!(support::sample(&text, "portcullis_trace_spans_total"), 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span counted as dropped:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy.wait_for_log("span export failed", Duration::from_secs(5)),
        "the failure is logged:\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn binary_tracing_errors_name_file_line_and_field() {
    let dir = ConfDir::with(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]\n\
         tracing:\n  otlp:\n    endpoint: grpc://collector:4317\n    headers: { \"bad header\": x }\n  sample_ratio: 2\n",
    );
    let (code, _out, err) =
        support::run_to_end(["check".as_ref(), "--conf".as_ref(), dir.path().as_os_str()]);
    assert_ne!(code, Some(0), "{err}");
    for expected in [
        "portcullis.yaml:4: tracing.otlp.endpoint: `grpc://collector:4317` is not an OTLP/HTTP URL",
        "portcullis.yaml:5: tracing.otlp.headers.",
        ": not a valid header name",
        "portcullis.yaml:6: tracing.sample_ratio: expected a number from 0 to 1, found `2`",
    ] {
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
}
