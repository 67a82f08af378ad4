//! The wasm host's per-request cost: a chain of 0, 1 and 5 minimal filters (each reads
//! one request header and adds one), the load comparison's chain of 5 standard filters
//! (with a 1 KiB response body), and the cost of making a VM.
//!
//! Run: `cargo bench -p portcullis --bench wasm` (builds tests/filters first).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{FilterConfig, FilterLimits, FilterSource, OnError, Origin};
use portcullis::wasm::{BodyDecision, Decision, HttpFilters, Plugin, Runtime, StreamInfo};

// One recipe for building the test filters, shared with the unit and e2e tests.
#[path = "../../tests/e2e/wasm_build.rs"]
mod wasm_build;

fn probe_wasm() -> Vec<u8> {
    let wasm = wasm_build::filter("probe");
    std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()))
}

fn plugin(rt: &Runtime, wasm: &[u8], name: &str) -> Arc<Plugin> {
    let f = FilterConfig {
        name: name.into(),
        source: FilterSource::Wasm("probe.wasm".into()),
        root_id: String::new(),
        config: b"min".to_vec(),
        on_error: OnError::Deny,
        limits: FilterLimits::default(),
        asynchronous: false,
        integrity: Default::default(),
        origin: Origin::default(),
    };
    rt.plugin_from_bytes(&f, wasm)
        .unwrap_or_else(|e| panic!("configuring {name}: {e}"))
}

fn info() -> StreamInfo {
    StreamInfo {
        client: ([127, 0, 0, 1], 40000).into(),
        local: ([127, 0, 0, 1], 8080).into(),
        listener: "web".into(),
        route: "bench".into(),
        tls_version: None,
    }
}

/// The chain of `benches/compare` (portbench/servers.py): every filter lets the
/// request through, `headers` sets one request and one response header.
fn builtin_chain(rt: &Runtime) -> Vec<Arc<Plugin>> {
    let chain = [
        (
            "allow",
            "ip-allowlist",
            r#"{"allow": ["127.0.0.0/8", "::1/128"]}"#,
        ),
        (
            "limit",
            "rate-limit",
            r#"{"rate": 100000000, "per": "1s", "burst": 100000000, "key": "client_ip"}"#,
        ),
        (
            "keys",
            "api-key",
            r#"{"header": "x-api-key", "keys": [{"key": "bench-key", "consumer": "bench"}]}"#,
        ),
        (
            "rewrite",
            "headers",
            r#"{"request": {"set": {"x-env": "bench"}}, "response": {"set": {"x-chain": "a"}}}"#,
        ),
        (
            "moved",
            "redirect",
            r#"{"regex": "^https?://old\\.example\\.com/(.*)", "replacement": "https://new.example.com/${1}"}"#,
        ),
    ];
    chain
        .iter()
        .map(|(name, builtin, config)| {
            let f = FilterConfig {
                name: (*name).into(),
                source: FilterSource::Builtin((*builtin).into()),
                root_id: String::new(),
                config: config.as_bytes().to_vec(),
                on_error: OnError::Deny,
                limits: FilterLimits::default(),
                asynchronous: false,
                integrity: Default::default(),
                origin: Origin::default(),
            };
            rt.plugin(&f)
                .unwrap_or_else(|e| panic!("configuring {name}: {e}"))
        })
        .collect()
}

/// A fresh chain through the request and response header phases; the caller runs the
/// rest and finishes it.
async fn through_headers(
    plugins: &[Arc<Plugin>],
    host: &str,
    header: (&str, &str),
    response_eos: bool,
) -> HttpFilters {
    let mut chain = HttpFilters::new(plugins, info());
    let (mut req, ()) = http::Request::builder()
        .uri("/bench?x=1")
        .header("host", host)
        .header(header.0, header.1)
        .body(())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_parts();
    if let d @ (Decision::Respond(_) | Decision::Fail(_)) =
        chain.request_headers(&mut req, true).await
    {
        panic!("unexpected {d:?}");
    }
    let (mut resp, ()) = http::Response::new(()).into_parts();
    if let d @ (Decision::Respond(_) | Decision::Fail(_)) =
        chain.response_headers(&mut resp, response_eos).await
    {
        panic!("unexpected {d:?}");
    }
    chain
}

/// One request through the standard chain, with a 1 KiB response body in one chunk.
async fn builtin_request(plugins: &[Arc<Plugin>], body: &bytes::Bytes) {
    let mut chain =
        through_headers(plugins, "127.0.0.1:8080", ("x-api-key", "bench-key"), false).await;
    // What the proxy's body wrapper does with a filtered chain (it skips even this
    // when no filter of the chain takes bodies).
    match chain.response_body(body.clone(), true).await {
        BodyDecision::Forward(b) if b.len() == body.len() => {}
        other => panic!("unexpected body decision {other:?}"),
    }
    chain.finish().await;
}

async fn one_request(plugins: &[Arc<Plugin>]) {
    through_headers(plugins, "bench.local", ("x-in", "value"), true)
        .await
        .finish()
        .await;
}

fn bench(c: &mut Criterion) {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let wasm = probe_wasm();
    let rt = Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let plugins: Vec<Arc<Plugin>> = (0..5)
        .map(|i| plugin(&rt, &wasm, &format!("min-{i}")))
        .collect();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("chain");
    for n in [0usize, 1, 5] {
        let chain = &plugins[..n];
        tokio.block_on(one_request(chain)); // make this worker's VMs
        g.bench_function(format!("{n}_filters"), |b| {
            b.iter(|| tokio.block_on(one_request(chain)))
        });
    }
    let builtin = builtin_chain(&rt);
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    tokio.block_on(builtin_request(&builtin, &body));
    g.bench_function("5_builtin", |b| {
        b.iter(|| tokio.block_on(builtin_request(&builtin, &body)))
    });
    g.finish();
    c.bench_function("vm_start", |b| {
        b.iter(|| {
            plugins[0]
                .start_fresh_vm()
                .unwrap_or_else(|e| panic!("{e}"))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
