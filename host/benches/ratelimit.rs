//! The host-side cost of one rate-limit check: the foreign function's decode, the
//! limiter lookup, the key hash and the GCRA update, with 1 and 100k distinct clients;
//! and a global limit (`store: redis`) against a real `redis-server` beside the local
//! one, in wall time and in process CPU time per check (`cpu/*`: user + system time of
//! the whole process, the Redis connection thread included, Redis itself not).
//!
//! Run: `cargo bench -p portcullis --bench ratelimit` (the Redis cases need
//! `redis-server` on the PATH; without it they are skipped with a message).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{Origin, RedisConfig};
use portcullis::ratelimit::wire::{Global, OnStoreError};
use portcullis::ratelimit::{Params, Query, RateLimits};
use portcullis::wasm::ForeignFunction;
use portcullis::wasm::foreign::Answer;

const PARAMS: Params = Params {
    rate: 1_000_000,
    per_ns: 1_000_000_000,
    burst: 1_000_000,
    max_keys: 0,
};

fn checks(c: &mut Criterion) {
    let rl = RateLimits::new();
    let keys: Vec<String> = (0..100_000u32)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect();
    for k in &keys {
        rl.check("bench", PARAMS, k.as_bytes(), 1);
    }
    let mut g = c.benchmark_group("ratelimit");
    g.bench_function("check/one_client", |b| {
        b.iter(|| rl.check(black_box("bench"), PARAMS, black_box(b"10.0.0.1"), 1))
    });
    let mut i = 0usize;
    g.bench_function("check/100k_clients", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            rl.check(black_box("bench"), PARAMS, keys[i].as_bytes(), 1)
        })
    });
    let encoded: Vec<Vec<u8>> = keys
        .iter()
        .take(1024)
        .map(|k| {
            Query {
                params: PARAMS,
                cost: 1,
                key: k.as_bytes(),
                global: None,
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

/// A `redis-server` on a free port, killed on drop.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child, port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

/// User + system CPU time of this process so far.
#[allow(unsafe_code)]
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; zeroed is a valid rusage.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One check through the foreign function, awaiting Redis when it answers later;
/// whether it was admitted (the limits here are never reached: a refusal is a Redis
/// failure, decided by `on_store_error: deny`).
fn check(rl: &RateLimits, rt: &tokio::runtime::Runtime, query: &[u8]) -> bool {
    let reply = match rl.answer("bench", query) {
        Ok(Answer::Now(v)) => v,
        Ok(Answer::Later(f)) => rt.block_on(f),
        Err(e) => panic!("{e}"),
    };
    black_box(reply.get(1) == Some(&1))
}

fn global(c: &mut Criterion) {
    let Some(server) = redis_server() else {
        eprintln!(
            "ratelimit/redis: skipped: redis-server is not installed (apt-get install -y redis-server)"
        );
        return;
    };
    let rl: Arc<RateLimits> = RateLimits::new_shared();
    rl.set_redis(Some(&RedisConfig {
        url: format!("redis://127.0.0.1:{}", server.1),
        timeout: Duration::from_secs(1),
        pool: 2,
        name: "redis".into(),
        origin: Origin {
            file: "bench".into(),
            line: 0,
        },
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Limits never reached, even by the local limiter's millions of checks a second:
    // a refusal here can only be a Redis failure.
    let params = Params {
        rate: u32::MAX,
        per_ns: 1_000_000_000,
        burst: u32::MAX,
        max_keys: 0,
    };
    let query = |budget: Option<u32>| {
        Query {
            params,
            cost: 1,
            key: b"10.0.0.1",
            global: budget.map(|local_budget| Global {
                on_store_error: OnStoreError::Deny,
                local_budget,
            }),
        }
        .encode()
    };
    let cases = [
        ("local", query(None)),
        ("redis_budget_100", query(Some(100))),
        ("redis_budget_1", query(Some(1))),
    ];
    // Until the connections are open (the first check after them loads the script).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check(&rl, &rt, &cases[2].1) {
        assert!(Instant::now() < deadline, "Redis did not answer within 5 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admit = |q: &[u8]| assert!(check(&rl, &rt, q), "a check failed over to on_store_error");
    let mut g = c.benchmark_group("ratelimit/redis");
    for (name, q) in &cases {
        g.bench_function(format!("wall/{name}"), |b| b.iter(|| admit(q)));
        g.bench_function(format!("cpu/{name}"), |b| {
            b.iter_custom(|n| {
                let start = cpu_time();
                for _ in 0..n {
                    admit(q);
                }
                cpu_time().saturating_sub(start)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, checks, global);
criterion_main!(benches);
