//! gRPC through the proxy: a real client and server (Python `grpcio`,
//! tests/e2e/grpc/*.py) over HTTP/2 without TLS on both sides (`protocol: h2c` on the
//! upstream), and the proxy's own errors as gRPC statuses.

use serde_json::Value;

use crate::inproc::closed_port;
use crate::support::*;

async fn grpc_client(target: &str, args: &[&str]) -> Value {
    let mut all = vec![target];
    all.extend_from_slice(args);
    py_client("grpc", "grpc/grpc_client.py", &all).await
}

/// A proxy (listener `web`) serving `rest` (its routes, filters and upstreams), in
/// front of a fresh gRPC test server whose address replaces `GRPC_SERVER` in it.
fn behind_proxy(rest: &str) -> (PyServer, ConfDir, Proxy) {
    let server = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let conf = ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners: [{{ name: web, address: 127.0.0.1:0 }}]\n{}",
        rest.replace("GRPC_SERVER", &server.address())
    ));
    let proxy = Proxy::start(&conf);
    (server, conf, proxy)
}

#[tokio::test]
async fn unary_streaming_and_bidirectional_calls_pass_with_their_trailers() {
    let dead = closed_port().await;
    let (_server, _conf, proxy) = behind_proxy(&format!(
        r#"
routes:
  - {{ name: echo, match: {{ path_prefix: /portcullis.test.Echo/ }}, filters: [tag], upstream: grpc }}
  - {{ name: dead, match: {{ path_prefix: /portcullis.test.Dead/ }}, upstream: dead }}
filters:
  - name: tag
    builtin: headers
    limits: {{ callback_timeout: 5s }}
    config: {{ request: {{ set: {{ x-from-client: "set-by-filter" }} }} }}
upstreams:
  - {{ name: grpc, protocol: h2c, targets: [{{ address: GRPC_SERVER }}] }}
  - {{ name: dead, protocol: h2c, targets: [{{ address: {dead} }}] }}
"#
    ));
    let target = proxy.addr("web").to_string();

    let seen = grpc_client(&target, &["calls"]).await;
    assert_eq!(seen["unary"], "HELLO GRPC", "{seen}");
    // The server's trailers (its metadata, and the status gRPC itself reads from them)
    // came back; the request filter's header reached the server.
    assert_eq!(seen["trailers"]["x-trailer"], "from-server", "{seen}");
    assert_eq!(
        seen["trailers"]["x-seen-from-client"], "set-by-filter",
        "{seen}"
    );
    assert_eq!(
        seen["server_stream"],
        serde_json::json!(["0", "1", "2", "3", "4"]),
        "{seen}"
    );
    assert_eq!(
        seen["bidi"],
        serde_json::json!(["cba", "fed", "ihg"]),
        "{seen}"
    );
    assert_eq!(
        seen["fail"]["code"], "NOT_FOUND",
        "the server's status: {seen}"
    );
    assert_eq!(seen["fail"]["details"], "no such thing", "{seen}");

    // An upstream that cannot be reached: the client reads UNAVAILABLE (14) and the
    // proxy's text, not an HTTP 502 it would have to interpret.
    let dead = grpc_client(&target, &["unary", "portcullis.test.Dead"]).await;
    assert_eq!(dead["code"], "UNAVAILABLE", "{dead}");
    assert_eq!(dead["details"], "upstream unreachable", "{dead}");
    // No route: UNIMPLEMENTED (12), as gRPC maps a 404.
    let none = grpc_client(&target, &["unary", "portcullis.test.Nowhere"]).await;
    assert_eq!(none["code"], "UNIMPLEMENTED", "{none}");
    assert_eq!(none["details"], "no route", "{none}");
}

/// Request trailers (which gRPC clients rarely send, but HTTP/2 allows) reach an
/// `h2c` upstream after the body.
#[tokio::test]
async fn request_trailers_reach_an_h2c_upstream() {
    use bytes::Bytes;
    use http_body::Frame;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let backend = Backend::start(|_| Reply::text(200, "ok"));
    let conf = ConfDir::with(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: r, upstream: app }}]
upstreams: [{{ name: app, protocol: h2c, targets: [{{ address: {} }}] }}]
"#,
        backend.addr()
    ));
    let proxy = Proxy::start(&conf);
    let tcp = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 handshake: {e}"));
    tokio::spawn(conn);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-checksum", http::HeaderValue::from_static("abc123"));
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let req = http::Request::post(format!("http://{}/upload", proxy.addr("web")))
        .body(body)
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = sender
        .send_request(req)
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    assert_eq!(resp.status(), 200);
    let seen = backend.seen();
    let seen = seen
        .first()
        .unwrap_or_else(|| panic!("the backend saw nothing"));
    assert_eq!(seen.version, "HTTP/2.0", "h2c to the upstream");
    assert_eq!(seen.body, Bytes::from_static(b"payload"));
    let got = seen.trailers.as_ref().and_then(|t| t.get("x-checksum"));
    assert_eq!(got.map(|v| v.as_bytes()), Some(&b"abc123"[..]), "{seen:?}");
}

/// `grpc-timeout` is the call's deadline: a call still waiting for its answer, or
/// still streaming, when it passes gets `grpc-status: 4` (DEADLINE_EXCEEDED) from the
/// proxy. The client here sets no deadline of its own (a raw HTTP/2 client sending
/// the header), so what it reads is the proxy's doing.
#[tokio::test]
async fn grpc_timeout_ends_the_call_with_deadline_exceeded() {
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::time::{Duration, Instant};

    let server = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let conf = ConfDir::with(&format!(
        r#"
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: echo, upstream: grpc }}]
upstreams: [{{ name: grpc, protocol: h2c, targets: [{{ address: {} }}] }}]
"#,
        server.address()
    ));
    let proxy = Proxy::start(&conf);
    let tcp = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap_or_else(|e| panic!("HTTP/2 handshake: {e}"));
    tokio::spawn(conn);
    // One call: its status (from the head of a trailers-only answer, else from the
    // trailers), the messages' bytes, and how long it took.
    let call = |method: &str, message: &'static [u8], timeout: &'static str| {
        let mut sender = sender.clone();
        let uri = format!("http://{}/portcullis.test.Echo/{method}", proxy.addr("web"));
        async move {
            let mut frame = vec![0u8];
            frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
            frame.extend_from_slice(message);
            let req = http::Request::post(uri)
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("grpc-timeout", timeout)
                .body(http_body_util::Full::new(Bytes::from(frame)))
                .unwrap_or_else(|e| panic!("{e}"));
            let started = Instant::now();
            let resp = sender
                .send_request(req)
                .await
                .unwrap_or_else(|e| panic!("request: {e}"));
            let head_status = resp.headers().get("grpc-status").cloned();
            let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
                .await
                .unwrap_or_else(|_| panic!("the call never ended"))
                .unwrap_or_else(|e| panic!("body: {e}"));
            let status = body
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
                .or(head_status)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            (status, body.to_bytes(), started.elapsed())
        }
    };

    let (status, _, took) = call("Slow", b"5", "300m").await;
    assert_eq!(
        status.as_deref(),
        Some("4"),
        "a unary call past its deadline"
    );
    assert!(
        took < Duration::from_secs(3),
        "ended at the deadline, not the answer: {took:?}"
    );

    let (status, body, took) = call("SlowStream", b"20", "700m").await;
    assert_eq!(status.as_deref(), Some("4"), "a stream past its deadline");
    assert!(
        !body.is_empty(),
        "the messages before the deadline came through"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");

    let (status, body, _) = call("Slow", b"0", "10S").await;
    assert_eq!(status.as_deref(), Some("0"), "a call within its deadline");
    assert!(body.ends_with(b"late"), "{body:?}");
}

/// `health_check: { type: grpc }` asks each target with gRPC's health protocol: a
/// target answering NOT_SERVING leaves rotation, and calls go to the one SERVING.
/// `type: tcp` on the same kind of upstream only connects: both stay in.
#[tokio::test]
async fn grpc_health_checks_take_a_not_serving_target_out() {
    let serving = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let not_serving = PyServer::start("grpc", "grpc/grpc_server.py", &["not-serving"]);
    let conf = ConfDir::with(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: echo, upstream: grpc }}]
upstreams:
  - name: grpc
    protocol: h2c
    health_check: {{ type: grpc, interval: 200ms, timeout: 2s }}
    targets: [{{ address: "{a}" }}, {{ address: "{b}" }}]
  - name: connect_only
    health_check: {{ type: tcp, interval: 200ms }}
    targets: [{{ address: "{a}" }}, {{ address: "{b}" }}, {{ address: "{dead}" }}]
"#,
        a = serving.address(),
        b = not_serving.address(),
        dead = closed_port().await,
    ));
    let proxy = Proxy::start(&conf);
    let health = |status: &Value, upstream: &str| -> Vec<bool> {
        status["upstreams"]
            .as_array()
            .and_then(|u| u.iter().find(|u| u["name"] == upstream))
            .and_then(|u| u["targets"].as_array())
            .map(|t| t.iter().map(|t| t["healthy"] == true).collect())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status = proxy.status().await;
        if health(&status, "grpc") == [true, false]
            && health(&status, "connect_only") == [true, true, false]
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health never settled: {status:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The NOT_SERVING server fails every call: none reaches it.
    let target = proxy.addr("web").to_string();
    for _ in 0..4 {
        let seen = grpc_client(&target, &["unary", "portcullis.test.Echo"]).await;
        assert_eq!(seen["code"], "OK", "{seen}");
    }
}

/// A filter's local reply to a gRPC call reaches the client as Envoy sends it: a
/// trailers-only answer (`200`, `application/grpc`, no body) whose `grpc-status` is
/// the filter's gRPC status (the Rust SDK's `send_grpc_response`), else the HTTP
/// status's gRPC code, and whose `grpc-message` is the reply's body. Found running the
/// Rust SDK's grpc_auth_random example (docs/compatibility.md): its clients read
/// UNKNOWN instead of ABORTED.
#[tokio::test]
async fn a_filters_local_reply_to_a_grpc_call_is_a_grpc_status() {
    let (_server, _conf, proxy) = behind_proxy(&format!(
        r#"
routes:
  - {{ name: abort, match: {{ path_prefix: /portcullis.test.Abort/ }}, filters: [abort], upstream: grpc }}
  - {{ name: deny, match: {{ path_prefix: /portcullis.test.Deny/ }}, filters: [deny], upstream: grpc }}
filters:
  - {{ name: abort, wasm: "{probe}", config: "grpc_deny:probe" }}
  - {{ name: deny, wasm: "{probe}", config: "local:probe" }}
upstreams: [{{ name: grpc, protocol: h2c, targets: [{{ address: GRPC_SERVER }}] }}]
"#,
        probe = crate::wasm_build::filter("probe").display(),
    ));
    let target = proxy.addr("web").to_string();

    let aborted = grpc_client(&target, &["unary", "portcullis.test.Abort"]).await;
    assert_eq!(aborted["code"], "ABORTED", "{aborted}");
    assert_eq!(aborted["details"], "Aborted by probe", "{aborted}");
    // A plain 403 with a text body: PERMISSION_DENIED, the text as the message.
    let denied = grpc_client(&target, &["unary", "portcullis.test.Deny"]).await;
    assert_eq!(denied["code"], "PERMISSION_DENIED", "{denied}");
    assert_eq!(denied["details"], "denied by probe", "{denied}");

    let resp = h2_client()
        .post(proxy.url("web", "/portcullis.test.Abort/Unary"))
        .header("content-type", "application/grpc")
        .body(&b"\0\0\0\0\0"[..])
        .send()
        .await
        .unwrap_or_else(|e| panic!("request: {e}"));
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "application/grpc", "{h:?}");
    assert_eq!(h["grpc-status"], "10", "{h:?}");
    assert_eq!(h["x-denied-by"], "probe", "the filter's metadata: {h:?}");
    let body = resp.bytes().await.unwrap_or_default();
    assert!(body.is_empty(), "trailers-only: {body:?}");
}
