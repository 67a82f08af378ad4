//! gRPC callouts from a filter (`proxy_grpc_call`, `proxy_grpc_stream` and their
//! callbacks), made as the Rust SDK's `grpc_auth_random` makes them: the test filter
//! `tests/filters/grpc-callout`, served by the real binary, calls the real gRPC server
//! of the gRPC tests (Python `grpcio`, tests/e2e/grpc/grpc_server.py) over h2c, and
//! decides or annotates the request from what comes back.

use std::time::{Duration, Instant};

use crate::inproc::closed_port;
use crate::support::*;
use crate::wasm_build;

/// A proxy whose routes each run one grpc-callout filter (`name: config`) in front of
/// the echo upstream; the upstream `grpc` is the server at `server`, `dead` a closed
/// port.
async fn serve(server: &str, filters: &[(&str, &str)]) -> (Proxy, ConfDir) {
    let conf = ConfDir::new();
    let wasm = std::fs::read(wasm_build::filter("grpc_callout"))
        .unwrap_or_else(|e| panic!("grpc_callout.wasm: {e}"));
    conf.write("grpc_callout.wasm", wasm);
    let mut routes = String::new();
    let mut defs = String::new();
    for (name, config) in filters {
        routes += &format!(
            "  - {{ name: {name}, match: {{ path_prefix: /{name} }}, filters: [{name}], upstream: echo@internal }}\n"
        );
        defs += &format!(
            "  - {{ name: {name}, wasm: grpc_callout.wasm, config: \"{config}\", limits: {{ callback_timeout: 5s }} }}\n"
        );
    }
    conf.write(
        "proxy.yaml",
        format!(
            "admin: {{ address: 127.0.0.1:0 }}\nworkers: 2\n\
             listeners: [{{ name: web, address: 127.0.0.1:0 }}]\n\
             routes:\n{routes}filters:\n{defs}\
             upstreams:\n  - {{ name: grpc, protocol: h2c, targets: [{{ address: {server} }}] }}\n\
             \x20 - {{ name: dead, protocol: h2c, targets: [{{ address: {} }}] }}\n",
            closed_port().await
        ),
    );
    (Proxy::start(&conf), conf)
}

/// GETs `path` with `headers`: the status, the `x-grpc-status` header and the body.
async fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let resp = get_with(&proxy.url("web", path), headers).await;
    let status = resp.status().as_u16();
    let grpc = resp
        .headers()
        .get("x-grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("body of {path}: {e}"));
    (status, grpc, body)
}

fn echo(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("expected echo JSON, got {body:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_decides_each_request_from_the_servers_answer() {
    let server = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let (proxy, _conf) = serve(
        &server.address(),
        &[("auth", "unary grpc"), ("lost", "unary nowhere")],
    )
    .await;

    // The message went out framed and came back unframed: the server upper-cased it.
    let (status, _, body) = get(&proxy, "/auth", &[("x-token", "allow"), ("x-user", "ann")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(echo(&body)["headers"]["x-grpc-reply"], "ALLOW", "{body}");

    let (status, _, body) = get(&proxy, "/auth", &[("x-token", "nope")]).await;
    assert_eq!((status, body.as_str()), (403, "denied: NOPE\n"));

    // Many requests at once, over both workers: each gets its own answer.
    let calls = (0..20).map(|i| {
        let token = if i % 2 == 0 { "allow" } else { "no" };
        let proxy = &proxy;
        async move { (token, get(proxy, "/auth", &[("x-token", token)]).await.0) }
    });
    for (token, status) in futures_util::future::join_all(calls).await {
        assert_eq!(status, if token == "allow" { 200 } else { 403 }, "{token}");
    }

    // An upstream the configuration does not name: refused at once, as Envoy does.
    let (status, _, body) = get(&proxy, "/lost", &[("x-token", "allow")]).await;
    assert_eq!(
        (status, body.as_str()),
        (500, "dispatch_grpc_call failed: ParseFailure\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_calls_close_with_the_grpc_status_and_message() {
    let server = PyServer::start("grpc", "grpc/grpc_server.py", &["not-serving"]);
    let (proxy, _conf) = serve(
        &server.address(),
        &[
            ("auth", "unary grpc"),
            ("slow", "slow grpc 300"),
            ("dead", "unary dead"),
        ],
    )
    .await;

    // The server's own status and message (UNAVAILABLE, 14).
    let (status, grpc, body) = get(&proxy, "/auth", &[("x-token", "allow")]).await;
    assert_eq!(
        (status, grpc.as_str(), body.as_str()),
        (503, "14", "not serving\n")
    );

    // The call's timeout passes first: DEADLINE_EXCEEDED (4), well before the server
    // would have answered.
    let started = Instant::now();
    let (status, grpc, body) = get(&proxy, "/slow", &[("x-token", "3")]).await;
    assert_eq!((status, grpc.as_str()), (503, "4"), "{body}");
    assert_eq!(body, "upstream request timeout\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // An upstream that cannot be reached: UNAVAILABLE.
    let (status, grpc, body) = get(&proxy, "/dead", &[("x-token", "allow")]).await;
    assert_eq!((status, grpc.as_str()), (503, "14"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_delivers_metadata_each_message_trailers_and_its_close() {
    let server = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let (proxy, _conf) = serve(
        &server.address(),
        &[("words", "stream grpc"), ("lost", "stream nowhere")],
    )
    .await;

    let (status, _, body) = get(&proxy, "/words", &[("x-words", "abc,def,ghi")]).await;
    assert_eq!(status, 200, "{body}");
    let seen = &echo(&body)["headers"];
    // Each message reversed by the server, in order, then OK.
    assert_eq!(seen["x-stream-replies"], "cba,fed,ihg", "{seen}");
    assert_eq!(seen["x-stream-status"], "0", "{seen}");
    // Initial metadata: the response head (`:status` first, then its headers).
    let initial = seen["x-stream-initial"].as_str().unwrap_or_default();
    assert!(initial.ends_with(" application/grpc"), "{seen}");
    let trailers = seen["x-stream-trailers"].as_str().unwrap_or_default();
    assert!(trailers.split(',').any(|t| t == "grpc-status"), "{seen}");

    let (status, _, body) = get(&proxy, "/lost", &[("x-words", "a")]).await;
    assert_eq!(
        (status, body.as_str()),
        (500, "open_grpc_stream failed: ParseFailure\n")
    );
}
