//! Host functions beyond headers: properties, shared data and queues, timers, http
//! calls, foreign functions, metrics.

use std::time::Duration;

use super::*;

#[tokio::test]
async fn properties_use_envoy_names_and_flow_between_filters() {
    let p = plugin(&filter("props", "props:pp"));
    let r = plugin(&filter("readprop", "readprop:rp"));
    let mut chain = HttpFilters::new(&[p, r], info());
    let mut req = request("/path/x?a=1&b=2", &[("x-request-id", "rid-1")]);
    cont(chain.request_headers(&mut req, true).await);
    let h = &req.headers;
    for (name, want) in [
        ("request.path", "/path/x?a=1&b=2"),
        ("request.url_path", "/path/x"),
        ("request.host", "api.example.com"),
        ("request.scheme", "http"),
        ("request.method", "GET"),
        ("request.query", "a=1&b=2"),
        ("request.id", "rid-1"),
        ("source.address", "10.1.2.3:4567"),
        ("source.port", "4567"),
        ("destination.address", "127.0.0.1:8080"),
        ("plugin_name", "props"),
        ("plugin_root_id", "root-props"),
        ("route_name", "api"),
    ] {
        assert_eq!(
            header(h, &format!("x-prop-{name}")),
            want,
            "property {name}"
        );
    }
    assert_eq!(
        header(h, "x-note"),
        "from-props",
        "set_property is seen by the next filter"
    );
    chain.finish().await;
    assert_eq!(
        shared::get("configured:props").map(|v| v.0),
        Some(b"props:pp".to_vec()),
        "plugin_name readable in on_configure, config handed over as is"
    );
}

#[tokio::test]
async fn shared_data_cas_counts_across_requests() {
    let p = plugin(&filter("shared", "shared:sh"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        let mut req = request("/", &[]);
        cont(chain.request_headers(&mut req, true).await);
        seen.push(
            header(&req.headers, "x-counter")
                .parse::<u64>()
                .unwrap_or(0),
        );
        chain.finish().await;
    }
    assert!(
        seen[0] >= 1 && seen[1] == seen[0] + 1 && seen[2] == seen[1] + 1,
        "counter went {seen:?}"
    );
}

async fn wait_for(key: &str) -> Option<Vec<u8>> {
    for _ in 0..200 {
        if let Some((v, _)) = shared::get(key) {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn timers_tick_per_vm() {
    let p = plugin(&filter("tick", "tick:tk"));
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    cont(chain.request_headers(&mut request("/", &[]), true).await);
    chain.finish().await;
    assert!(wait_for("ticks:tk").await.is_some(), "on_tick never ran");
    let mut chain = HttpFilters::new(&[p], info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    assert_ne!(header(&req.headers, "x-ticks"), "0");
    chain.finish().await;
}

#[tokio::test]
async fn queues_notify_their_registrant() {
    let p = plugin(&filter("queue", "queue:qu"));
    // The plugin must outlive the request: its root task ends with it.
    let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    chain.finish().await;
    assert!(
        header(&req.headers, "x-enqueued").ends_with(":Ok(())"),
        "enqueue: {:?}",
        req.headers
    );
    let v = wait_for("queue-last").await;
    assert!(
        v.as_deref().is_some_and(|v| v.starts_with(b"item-")),
        "on_queue_ready did not dequeue: {v:?}"
    );
}

struct Echo;
impl ForeignFunction for Echo {
    fn call(&self, filter: &str, args: &[u8]) -> Result<Vec<u8>, ForeignError> {
        Ok(format!("{filter}:{}", String::from_utf8_lossy(args)).into_bytes())
    }
}

#[tokio::test]
async fn foreign_functions_dispatch_to_the_registry() {
    let rt = Runtime::new()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_extension("test-echo", Arc::new(Echo));
    let p = rt
        .plugin_from_bytes(&filter("foreign", "foreign:test-echo"), probe_wasm())
        .unwrap_or_else(|e| panic!("{e}"));
    // A runtime without the extension: the same call finds nothing.
    let q = plugin(&filter("foreign-missing", "foreign:test-echo"));
    let mut chain = HttpFilters::new(&[p, q], info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(
        values(&req.headers, "x-foreign"),
        ["foreign:ping", "NotFound"]
    );
    chain.finish().await;
}

/// Answers every call with 200 and a body counting the calls, the first one slowly.
struct Upstream {
    calls: std::sync::atomic::AtomicU32,
}

impl HttpCaller for Upstream {
    fn call(&self, upstream: &str, req: http::Request<Bytes>, _t: Duration) -> CallFuture {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let ok = upstream == "auth" && req.uri().path() == "/auth";
        Box::pin(async move {
            if n == 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if !ok {
                return Err("no such upstream".to_string());
            }
            Ok(http::Response::new(Bytes::from(n.to_string())))
        })
    }
}

#[tokio::test]
async fn http_calls_resume_their_own_stream() {
    let p = plugin(&filter("call", "call:auth"));
    p.set_http_caller(Arc::new(Upstream { calls: 0.into() }));
    let run = |tag: &'static str| {
        let p = p.clone();
        async move {
            let mut chain = HttpFilters::new(&[p], info());
            let mut req = request("/", &[("x-in", tag)]);
            let d = chain.request_headers(&mut req, true).await;
            chain.finish().await;
            (d, req)
        }
    };
    // Two streams on one VM, interleaved: the first call answers last.
    let ((d1, r1), (d2, r2)) = tokio::join!(run("one"), run("two"));
    cont(d1);
    cont(d2);
    assert_eq!(header(&r1.headers, "x-seen-auth"), "one");
    assert_eq!(
        header(&r1.headers, "x-call-body"),
        "1",
        "stream one got another stream's answer"
    );
    assert_eq!(
        header(&r2.headers, "x-call-body"),
        "2",
        "stream two got another stream's answer"
    );

    let bad = plugin(&filter("call-bad", "call:nowhere"));
    bad.set_http_caller(Arc::new(Upstream { calls: 5.into() }));
    let mut chain = HttpFilters::new(&[bad], info());
    let r = respond(chain.request_headers(&mut request("/", &[]), true).await);
    assert_eq!(r.status(), 403, "a failed call is seen with no headers");
    assert_eq!(header(r.headers(), "x-call-status"), "none");
    chain.finish().await;
}

#[tokio::test]
async fn metrics_defined_by_guests_count() {
    let p = plugin(&filter("metric", "headers:mt"));
    for _ in 0..2 {
        let mut chain = HttpFilters::new(std::slice::from_ref(&p), info());
        cont(chain.request_headers(&mut request("/", &[]), true).await);
        chain.finish().await;
    }
    let id = metrics::define("metric", "probe_requests_total", metrics::Kind::Counter);
    assert_eq!(metrics::get(id), Some(2));
}

#[tokio::test]
async fn the_remaining_host_calls_answer_as_the_sdk_expects() {
    let p = plugin(&filter("misc", "misc:mi"));
    let mut chain = HttpFilters::new(&[p], info());
    let mut req = request("/", &[]);
    cont(chain.request_headers(&mut req, true).await);
    assert_eq!(
        header(&req.headers, "x-misc"),
        "time=true level=true grpc_refused=true gauge=42 effective=true status=0 done=true"
    );
    chain.finish().await;
}
