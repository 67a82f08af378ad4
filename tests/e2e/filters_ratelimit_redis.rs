//! rate-limit with `store: redis` through the binary, on a real `redis-server`: one
//! limit across three Portcullis processes; each `on_store_error` policy when Redis
//! dies, and global limiting back without a restart when it returns; configuration
//! errors naming file, line and field.

use std::time::{Duration, Instant};

use crate::support::*;

/// One proxy of the fleet: a global limit of `rate`/s (burst `burst`) in `redis`,
/// `budget` tokens leased at once.
fn fleet_conf(redis: &str, rate: u32, burst: u32, budget: u32) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 1
redis: {{ url: \"{redis}\", timeout: 500ms }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes: [{{ name: r, filters: [limit], upstream: echo@internal }}]
filters:
  - {{ name: limit, builtin: rate-limit,
      config: {{ rate: {rate}, per: 1s, burst: {burst}, key: global, store: redis,
                local_budget: {budget}, on_store_error: deny }},
      limits: {{ callback_timeout: 5s }} }}
"
    )
}

/// Three instances, one Redis, a global limit of `rate`/s: an offered 3 × `rate`
/// spread over them for `run_for` is admitted `rate × time + burst` within 2%.
async fn three_instances_share_one_limit(rate: u32, burst: u32, budget: u32, run_for: Duration) {
    let redis = RedisServer::start();
    let conf = ConfDir::with(&fleet_conf(&redis.url(), rate, burst, budget));
    let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start(&conf)).collect();
    for p in &proxies {
        // A proxy serves before its Redis connections are open (checks meanwhile go
        // to on_store_error): measure once they are.
        assert!(
            p.wait_for_log("connected to Redis", Duration::from_secs(10)),
            "no connection to Redis; log:\n{}",
            p.logs()
        );
    }
    let urls: Vec<String> = proxies.iter().map(|p| p.url("web", "/")).collect();
    let out = offer(&urls, 4, rate, run_for).await;
    let logs = || {
        proxies
            .iter()
            .map(Proxy::logs)
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        out.unexpected.is_empty(),
        "expected only 200 and 429, got {:?}; logs:\n{}",
        out.unexpected,
        logs()
    );
    let secs = out.elapsed.as_secs_f64();
    let bound = f64::from(rate) * secs + f64::from(burst);
    let (ok, no) = (out.admitted as f64, out.refused as f64);
    eprintln!(
        "global rate limit, 3 instances: admitted {ok}, refused {no} in {secs:.2} s; \
         rate × time + burst = {bound:.1}"
    );
    let offered = (ok + no) / secs;
    assert!(
        offered >= 2.0 * f64::from(rate),
        "the clients offered only {offered:.0} req/s (wanted 3 × {rate}): the machine \
         is too loaded for this measurement"
    );
    assert!(
        (ok - bound).abs() <= bound * 0.02,
        "admitted {ok} in {secs:.2} s across 3 instances, expected rate × time + burst = \
         {bound:.1} within 2%; logs:\n{}",
        logs()
    );
    for p in &proxies {
        let m = p.metrics().await;
        assert!(
            !m.contains("portcullis_ratelimit_store_errors_total{"),
            "no check should have failed over to on_store_error:\n{m}"
        );
    }
}

#[tokio::test]
async fn three_instances_share_one_global_limit() {
    // Short for CI; the 10-second run the issue asks for is the ignored test below.
    // Budget 2: the tokens leased and unspent when the run stops (at most one per
    // instance) stay well inside the 2%.
    three_instances_share_one_limit(100, 20, 2, Duration::from_secs(4)).await;
}

/// The measurement: 200/s, 600/s offered, 10 s. Run with
/// `cargo test --test e2e ten_seconds -- --ignored`.
#[tokio::test]
#[ignore = "10 s of load at 600 req/s: a measurement, run by hand"]
async fn three_instances_share_one_global_limit_for_ten_seconds() {
    three_instances_share_one_limit(200, 200, 10, Duration::from_secs(10)).await;
}

/// A proxy with three global limits of 2 per hour, one per `on_store_error` policy,
/// at `/allow`, `/deny` and `/local`, keyed by the `x-k` header.
fn policies_conf(redis: &str) -> String {
    let mut c = format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 1
redis: {{ url: \"{redis}\", timeout: 100ms }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
"
    );
    for p in ["allow", "deny", "local"] {
        c += &format!(
            "  - {{ name: {p}, match: {{ path_prefix: /{p} }}, filters: [lim-{p}], upstream: echo@internal }}\n"
        );
    }
    c += "filters:\n";
    for p in ["allow", "deny", "local"] {
        c += &format!(
            "  - {{ name: lim-{p}, builtin: rate-limit, config: {{ rate: 2, per: 1h, key: \"header:x-k\", \
             store: redis, local_budget: 1, on_store_error: {p} }}, limits: {{ callback_timeout: 5s }} }}\n"
        );
    }
    c
}

/// The statuses of `n` requests to `path` with key `key`, and the slowest answer.
async fn statuses(proxy: &Proxy, path: &str, key: &str, n: usize) -> (Vec<u16>, Duration) {
    let c = client();
    let mut out = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let r = c
            .get(proxy.url("web", path))
            .header("x-k", key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        slowest = slowest.max(t.elapsed());
        out.push(r.status().as_u16());
    }
    (out, slowest)
}

#[tokio::test]
async fn store_errors_follow_each_policy_and_redis_coming_back_restores_the_limit() {
    let mut redis = RedisServer::start();
    let conf = ConfDir::with(&policies_conf(&redis.url()));
    let proxy = Proxy::start(&conf);
    assert!(
        proxy.wait_for_log("connected to Redis", Duration::from_secs(10)),
        "no connection to Redis; log:\n{}",
        proxy.logs()
    );
    // Redis up: the limit is Redis' (2 admitted, then 429), and its bucket is there.
    for p in ["allow", "deny", "local"] {
        let (got, _) = statuses(&proxy, &format!("/{p}"), "up", 3).await;
        assert_eq!(
            got,
            [200, 200, 429],
            "/{p} with Redis up; log:\n{}",
            proxy.logs()
        );
    }
    let keys = redis.cli(&["KEYS", "portcullis:rl:*"]);
    assert_eq!(
        keys.lines().count(),
        3,
        "one bucket per filter in Redis: {keys}"
    );

    redis.stop();
    // Each policy decides, within the timeout (100 ms; generous slack for a loaded
    // machine), for a key this instance knows nothing about.
    let expected: [(&str, &[u16]); 3] = [
        ("allow", &[200, 200, 200, 200]),
        ("deny", &[429, 429, 429, 429]),
        // This instance's own bucket of 2.
        ("local", &[200, 200, 429, 429]),
    ];
    for (p, want) in expected {
        let (got, slowest) = statuses(&proxy, &format!("/{p}"), "down", want.len()).await;
        assert_eq!(got, want, "/{p} with Redis down; log:\n{}", proxy.logs());
        assert!(
            slowest < Duration::from_millis(100 + 900),
            "/{p}: a request took {slowest:?} with Redis down (timeout 100 ms)"
        );
    }
    let m = proxy.metrics().await;
    for p in ["allow", "deny", "local"] {
        let series =
            format!("portcullis_ratelimit_store_errors_total{{filter=\"lim-{p}\",policy=\"{p}\"}}");
        assert!(m.contains(&series), "{series} missing from:\n{m}");
    }

    // Redis back (empty): the proxy reconnects by itself and the limit is Redis'
    // again, for the `deny` filter too.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, _) = statuses(&proxy, "/deny", "probe", 1).await;
        if got == [200] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/deny still refused 10 s after Redis came back; log:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in ["allow", "local"] {
        let (got, _) = statuses(&proxy, &format!("/{p}"), "back", 3).await;
        assert_eq!(got, [200, 200, 429], "/{p} once Redis is back");
    }
    let keys = redis.cli(&["KEYS", "portcullis:rl:*"]);
    assert!(
        keys.contains("lim-allow") && keys.contains("lim-local") && keys.contains("lim-deny"),
        "the buckets are in the new Redis: {keys}"
    );
}

#[test]
fn redis_config_errors_name_file_line_and_field() {
    let conf = ConfDir::new();
    conf.write(
        "proxy.yaml",
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, filters: [limit], upstream: echo@internal }]
filters:
  - name: limit
    builtin: rate-limit
    config: { rate: 5, store: redis }
",
    );
    let dir = conf.path().to_string_lossy().into_owned();
    let (code, _, err) = run_to_end(["check", "--conf", dir.as_str()]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        err.contains("proxy.yaml:4") && err.contains("filters.limit.config.store"),
        "expected the filter's line and field, got: {err}"
    );
    conf.write("redis.yaml", "redis:\n  url: http://127.0.0.1:6379\n");
    let (code, _, err) = run_to_end(["check", "--conf", dir.as_str()]);
    assert_eq!(code, Some(1), "stderr: {err}");
    assert!(
        err.contains("redis.yaml:2")
            && err.contains("redis.url")
            && err.contains("not a Redis URL"),
        "expected redis.yaml:2 and redis.url, got: {err}"
    );
}
