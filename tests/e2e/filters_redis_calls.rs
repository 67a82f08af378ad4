//! A filter's own Redis calls (Higress's `proxy_redis_call`), through the binary on a
//! real `redis-server`: `examples/rust-sdk-redis-counter`, built from source, counts
//! requests with `INCR`; two proxies naming one Redis count together; Redis down or
//! frozen, the filter gets an error within its timeout and the request goes on.

use std::time::{Duration, Instant};

use crate::examples::{RUST, build};
use crate::support::*;

const KEY: &str = "portcullis:test:hits";

/// A proxy whose route counts requests in `redis`, waiting `timeout_ms` at most.
fn counter_conf(redis: &str, timeout_ms: u32) -> ConfDir {
    let module = build(&RUST, "examples/rust-sdk-redis-counter");
    ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 2
redis: {{ url: \"{redis}\", timeout: 2s }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: r, filters: [counter], upstream: echo@internal }}]
filters:
  - {{ name: counter, wasm: \"{}\",
      config: {{ key: \"{KEY}\", timeout: {timeout_ms}ms }} }}
",
        module.display()
    ))
}

fn connected(p: &Proxy) {
    assert!(
        p.wait_for_log("connected to Redis", Duration::from_secs(10)),
        "no connection to Redis; log:\n{}",
        p.logs()
    );
}

/// GET / through `p`: status, the `x-hits` and `x-hits-error` headers, time taken.
async fn hit(p: &Proxy) -> (u16, String, String, Duration) {
    let start = Instant::now();
    let r = client()
        .get(p.url("web", "/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /: {e}; log:\n{}", p.logs()));
    let h = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    (
        r.status().as_u16(),
        h("x-hits"),
        h("x-hits-error"),
        start.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_count_together_in_one_redis() {
    let redis = RedisServer::start();
    let conf = counter_conf(&redis.url(), 1000);
    let proxies = [Proxy::start(&conf), Proxy::start(&conf)];
    proxies.iter().for_each(connected);
    for n in 1..=20 {
        let p = &proxies[n % 2];
        let (status, hits, error, _) = hit(p).await;
        assert_eq!(status, 200, "request {n}; log:\n{}", p.logs());
        assert_eq!(
            hits,
            n.to_string(),
            "request {n} (proxy {}) saw count {hits:?} ({error}): the count is not shared",
            n % 2
        );
    }
    assert_eq!(redis.cli(&["GET", KEY]).trim(), "20", "the count in Redis");
    let status = proxies[0].status().await;
    let r = &status["redis"];
    assert_eq!(r["name"], "redis", "/status redis: {r}");
    assert_eq!(r["connected"], true, "/status redis: {r}");
    assert_eq!(r["pool"]["size"], 2, "/status redis: {r}");
    assert_eq!(r["failures"], 0, "/status redis: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_or_frozen_gives_the_filter_an_error_within_its_timeout() {
    let mut redis = RedisServer::start();
    let conf = counter_conf(&redis.url(), 300);
    let proxy = Proxy::start(&conf);
    connected(&proxy);
    let (status, hits, error, _) = hit(&proxy).await;
    assert_eq!((status, hits.as_str()), (200, "1"), "{error}");

    // Frozen: Redis holds the connection and never answers; the filter's 300 ms pass.
    let pid = redis.pid().unwrap_or_default().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    };
    signal("-STOP");
    let (status, hits, error, took) = hit(&proxy).await;
    signal("-CONT");
    assert_eq!(status, 200, "the request goes on without the count");
    assert_eq!(hits, "unavailable");
    assert!(
        error.contains("no reply from redis") && error.contains("300ms"),
        "x-hits-error: {error:?}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1500),
        "a frozen Redis answered in {took:?}: expected the filter's 300 ms timeout"
    );

    // Down: the connection refused; answered at once, not after the timeout.
    redis.stop();
    for _ in 0..3 {
        let (status, hits, error, took) = hit(&proxy).await;
        assert_eq!((status, hits.as_str()), (200, "unavailable"), "{error}");
        assert!(
            error.contains("no reply from redis"),
            "x-hits-error: {error:?}"
        );
        assert!(took < Duration::from_millis(1500), "took {took:?}");
    }
    let status = proxy.status().await;
    let r = &status["redis"];
    assert_eq!(r["connected"], false, "/status redis with Redis down: {r}");
    assert!(
        r["failures"].as_u64().unwrap_or_default() >= 4,
        "the frozen call and three down ones are failures: {r}"
    );
    assert!(
        r["last_error"].as_str().is_some_and(|e| !e.is_empty()) && r["last_error_at"].is_string(),
        "/status redis: {r}"
    );

    // Back: counting resumes with no restart (the new Redis is empty).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, hits, error, _) = hit(&proxy).await;
        assert_eq!(status, 200);
        if hits == "1" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counting did not resume within 10 s of Redis' return: {hits} {error}; log:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(proxy.status().await["redis"]["connected"], true);
}
