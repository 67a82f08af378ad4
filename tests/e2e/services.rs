//! Service modules (`services:`): one VM for the process, on no route, whose root
//! context ticks, makes `http_call`s and shares data and queues with the route filters;
//! kept by a reload that leaves it unchanged, replaced by one that changes it. The
//! module is the test filter `tests/filters/service`, in both of its roles.

use std::time::{Duration, Instant};

use crate::support::*;
use crate::wasm_build;

fn yaml(service_config: &str, extra: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nworkers: 2\n\
         listeners: [{{ name: web, address: 127.0.0.1:0 }}]\n\
         routes:\n  - {{ name: all, filters: [reader], upstream: echo@internal }}\n{extra}\
         filters:\n  - {{ name: reader, wasm: service.wasm, config: reader }}\n\
         services:\n  - {{ name: feeder, wasm: service.wasm, config: \"{service_config}\" }}\n"
    )
}

/// A proxy serving `yaml(service_config, extra)` with the service module in place.
fn serve(service_config: &str, extra: &str) -> (Proxy, ConfDir) {
    let conf = ConfDir::new();
    let wasm = std::fs::read(wasm_build::filter("service"))
        .unwrap_or_else(|e| panic!("service.wasm: {e}"));
    conf.write("service.wasm", wasm);
    conf.write("proxy.yaml", yaml(service_config, extra));
    (Proxy::start(&conf), conf)
}

/// What the reader filter saw of tag `tag` (and sent, with `send`): the echo's
/// `x-service-*` headers.
async fn seen(proxy: &Proxy, tag: &str, send: Option<&str>) -> serde_json::Value {
    let mut headers = vec![("x-tag", tag)];
    headers.extend(send.map(|s| ("x-send", s)));
    crate::wasm_binary::get_echo(proxy, "/", &headers).await["headers"].clone()
}

fn number(seen: &serde_json::Value, what: &str) -> u64 {
    seen[format!("x-service-{what}")]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Polls until `ok` holds for what the reader sees of `tag` (5 s).
async fn until(
    proxy: &Proxy,
    tag: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = seen(proxy, tag, None).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never so: {s}\n{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_ticks_calls_out_and_shares_with_the_filters_and_survives_reloads() {
    let (proxy, conf) = serve("service a echo@internal", "");

    // It ticks with no request on any route, and its first tick's http_call came back.
    let s = until(&proxy, "a", |s| {
        number(s, "ticks") >= 3 && s["x-service-call"] == "200"
    })
    .await;
    // One VM for the process, though two workers serve the route.
    assert_eq!(s["x-service-vms"], "1", "{s}");

    // What a route filter enqueues reaches the service's on_queue_ready, whichever
    // worker served the request; the service's writes reach the filters.
    for word in ["one", "two", "three"] {
        let s = seen(&proxy, "a", Some(word)).await;
        assert_eq!(s["x-service-queued"], "true", "{s}");
    }
    until(&proxy, "a", |s| s["x-service-got"] == "one,two,three").await;

    // A reload that leaves the service as it is keeps its VM: it ticks on.
    let before = number(&seen(&proxy, "a", None).await, "ticks");
    let route = "  - { name: more, match: { path_prefix: /more }, upstream: echo@internal }\n";
    conf.write("proxy.yaml", yaml("service a echo@internal", route));
    proxy.wait_for_generation(2).await;
    let s = until(&proxy, "a", |s| number(s, "ticks") > before + 3).await;
    assert_eq!(s["x-service-vms"], "1", "kept, not restarted: {s}");

    // A reload that changes it replaces it: the new one ticks, the old one stops.
    conf.write("proxy.yaml", yaml("service b echo@internal", route));
    proxy.wait_for_generation(3).await;
    let s = until(&proxy, "b", |s| number(s, "ticks") >= 3).await;
    assert_eq!(s["x-service-vms"], "1", "{s}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let old = number(&seen(&proxy, "a", None).await, "ticks");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        number(&seen(&proxy, "a", None).await, "ticks"),
        old,
        "the replaced service still ticks"
    );
}

/// A gRPC stream the service's root context opens (no request anywhere) delivers
/// each message and its close to that root context, as the server sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_streams_from_a_grpc_server_on_its_own() {
    let server = PyServer::start("grpc", "grpc/grpc_server.py", &[]);
    let upstream = format!(
        "upstreams:\n  - {{ name: grpc, protocol: h2c, targets: [{{ address: {} }}] }}\n",
        server.address()
    );
    let (proxy, _conf) = serve("service s echo@internal grpc", &upstream);
    // SlowStream sends its 3 messages 0.2 s apart, then OK.
    let s = until(&proxy, "s", |s| {
        s["x-service-stream"]
            .as_str()
            .is_some_and(|v| v.contains("closed"))
    })
    .await;
    assert_eq!(s["x-service-stream"], "0,1,2|closed=0", "{s}");
}
