//! The host-side cost of one rate-limit check: the foreign function's decode, the
//! limiter lookup, the key hash and the GCRA update, with 1 and 100k distinct clients.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::ratelimit::{Params, Query, RateLimits};

fn checks(c: &mut Criterion) {
    let rl = RateLimits::new();
    let params = Params {
        rate: 1_000_000,
        per_ns: 1_000_000_000,
        burst: 1_000_000,
        max_keys: 0,
    };
    let keys: Vec<String> = (0..100_000u32)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    for k in &keys {
        rl.check("bench", params, k.as_bytes(), 1);
    }
    let mut g = c.benchmark_group("ratelimit");
    g.bench_function("check/one_client", |b| {
        b.iter(|| rl.check(black_box("bench"), params, black_box(b"10.0.0.1"), 1))
    });
    let mut i = 0usize;
    g.bench_function("check/100k_clients", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            rl.check(black_box("bench"), params, keys[i].as_bytes(), 1)
        })
    });
    let encoded: Vec<Vec<u8>> = keys
        .iter()
        .take(1024)
        .map(|k| {
            Query {
                params,
                cost: 1,
                key: k.as_bytes(),
            }
            .encode()
        })
        .collect();
    let mut j = 0usize;
    g.bench_function("foreign_call/1k_clients", |b| {
        b.iter(|| {
            j = (j + 1) % encoded.len();
            rl.call(black_box("bench"), &encoded[j])
        })
    });
    g.finish();
}

criterion_group!(benches, checks);
criterion_main!(benches);
