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

#[tokio::test]
async fn unary_streaming_and_bidirectional_calls_pass_with_their_trailers() {
    let server = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let conf = ConfDir::with(&format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - {{ name: echo, match: {{ path_prefix: /portcullis.test.Echo/ }}, filters: [tag], upstream: grpc }}
  - {{ name: dead, match: {{ path_prefix: /portcullis.test.Dead/ }}, upstream: dead }}
filters:
  - name: tag
    builtin: headers
    limits: {{ callback_timeout: 5s }}
    config: {{ request: {{ set: {{ x-from-client: "set-by-filter" }} }} }}
upstreams:
  - {{ name: grpc, protocol: h2c, targets: [{{ address: {} }}] }}
  - {{ name: dead, protocol: h2c, targets: [{{ address: {} }}] }}
"#,
        server.address(),
        closed_port().await
    ));
    let proxy = Proxy::start(&conf);
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
