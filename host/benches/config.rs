//! What a reload costs before any wasm runs: reading, parsing, merging and validating a
//! configuration directory (`config::load`), for configurations of growing size.
//!
//! Run: `cargo bench -p portcullis --bench config`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// The five standard filters as docs/filters/ documents them, as the load
/// comparison's 5-filter chain uses them.
const FILTERS: &str = r#"filters:
  - name: allow
    builtin: ip-allowlist
    config: { allow: [127.0.0.0/8, "::1/128"] }
  - name: limit
    builtin: rate-limit
    config: { rate: 100000000, per: 1s, burst: 100000000, key: client_ip }
  - name: keys
    builtin: api-key
    config: { header: x-api-key, keys: [ { key: "bench-key", consumer: bench } ] }
  - name: rewrite
    builtin: headers
    config:
      request: { set: { x-env: bench } }
      response: { set: { x-chain: a } }
  - name: moved
    builtin: redirect
    config: { regex: "^https?://old\\.example\\.com/(.*)", replacement: "https://new.example.com/${1}" }
"#;

/// Writes a configuration with `routes` routes (each with its own host and prefix, every
/// tenth one running the five filters) and `upstreams` upstreams.
fn write_conf(dir: &Path, routes: usize, upstreams: usize) {
    let mut main = String::from(
        "admin:\n  address: 127.0.0.1:0\nworkers: 1\nlisteners:\n  - name: web\n    address: 127.0.0.1:0\nupstreams:\n",
    );
    for u in 0..upstreams {
        writeln!(
            main,
            "  - name: up{u}\n    targets:\n      - {{ address: 127.0.0.1:{} }}\n    timeouts: {{ connect: 2s, request: 30s }}",
            9000 + u % 1000
        )
        .unwrap();
    }
    let mut r = String::from("routes:\n");
    for i in 0..routes {
        writeln!(
            r,
            "  - name: r{i}\n    match: {{ host: h{i}.example.com, path_prefix: /api/{i} }}\n    upstream: up{}",
            i % upstreams
        )
        .unwrap();
        if i % 10 == 0 {
            r.push_str("    filters: [allow, limit, keys, rewrite, moved]\n");
        }
    }
    std::fs::write(dir.join("main.yaml"), main).unwrap();
    std::fs::write(dir.join("routes.yaml"), r).unwrap();
    std::fs::write(dir.join("filters.yaml"), FILTERS).unwrap();
}

fn load(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_load");
    // A 50,000-route load takes a good part of a second: ten samples are enough.
    group.sample_size(10);
    for routes in [10usize, 100, 1000, 50_000] {
        let dir = tempfile::tempdir().unwrap();
        write_conf(dir.path(), routes, (routes / 10).max(1));
        // A configuration that does not load would measure the error path instead.
        if let Err(e) = portcullis::config::load(dir.path()) {
            panic!("the bench configuration with {routes} routes should load, got: {e:?}");
        }
        group.bench_with_input(BenchmarkId::from_parameter(routes), dir.path(), |b, p| {
            b.iter(|| portcullis::config::load(p))
        });
    }
    group.finish();
}

criterion_group!(benches, load);
criterion_main!(benches);
