//! The wasm host's per-request cost: a chain of 0, 1 and 5 minimal filters (each reads
//! one request header and adds one), and the cost of making a VM.
//!
//! Run: `cargo bench -p portcullis --bench wasm` (builds tests/filters first).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{FilterConfig, FilterLimits, FilterSource, OnError, Origin};
use portcullis::wasm::{Decision, HttpFilters, Plugin, Runtime, StreamInfo};

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

async fn one_request(plugins: &[Arc<Plugin>]) {
    let mut chain = HttpFilters::new(plugins, info());
    let (mut req, ()) = http::Request::builder()
        .uri("/bench?x=1")
        .header("host", "bench.local")
        .header("x-in", "value")
        .body(())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_parts();
    if let Decision::Respond(r) = chain.request_headers(&mut req, true).await {
        panic!("unexpected {} response", r.status());
    }
    let (mut resp, ()) = http::Response::new(()).into_parts();
    if let Decision::Respond(r) = chain.response_headers(&mut resp, true).await {
        panic!("unexpected {} response", r.status());
    }
    chain.finish().await;
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
