//! A fleet on one machine: three Portcullis processes, one etcd, one Redis. The
//! directory (shared) holds the listeners, the admin, `redis:` and `providers.etcd`;
//! etcd holds the routes and the global rate limit. A change in etcd reaches all three
//! (how fast, write to serving everywhere); an invalid one is refused by all three
//! with the same error; etcd stopped, all serve on and catch up once it is back; and
//! the global limit set in etcd holds across the three.

use std::time::{Duration, Instant};

use crate::support::*;

const ROUTES: &str = "/fleet/routes.yaml";
const FILTERS: &str = "/fleet/filters.yaml";

fn dir_conf(etcd: &EtcdServer, redis: &RedisServer) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
workers: 1
redis: {{ url: \"{}\", timeout: 500ms }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
providers:
  etcd: {{ endpoints: [{}], prefix: /fleet, timeout: 1s }}
",
        redis.url(),
        etcd.endpoint()
    )
}

fn routes_doc(route: &str) -> String {
    format!("routes: [{{ name: {route}, filters: [limit], upstream: echo@internal }}]\n")
}

fn limit_doc(rate: u32, burst: u32, budget: u32) -> String {
    format!(
        "filters:
  - {{ name: limit, builtin: rate-limit,
      config: {{ rate: {rate}, per: 1s, burst: {burst}, key: global, store: redis,
                local_budget: {budget}, on_store_error: deny }},
      limits: {{ callback_timeout: 5s }} }}
"
    )
}

struct Fleet {
    etcd: EtcdServer,
    _redis: RedisServer,
    _conf: ConfDir,
    proxies: Vec<Proxy>,
}

impl Fleet {
    async fn start(route: &str, rate: u32, burst: u32, budget: u32) -> Fleet {
        let etcd = EtcdServer::start();
        let redis = RedisServer::start();
        etcd.put(FILTERS, &limit_doc(rate, burst, budget)).await;
        etcd.put(ROUTES, &routes_doc(route)).await;
        let conf = ConfDir::with(&dir_conf(&etcd, &redis));
        let proxies: Vec<Proxy> = (0..3).map(|_| Proxy::start(&conf)).collect();
        for p in &proxies {
            assert!(
                p.wait_for_log("connected to Redis", Duration::from_secs(10)),
                "no connection to Redis; log:\n{}",
                p.logs()
            );
        }
        Fleet {
            etcd,
            _redis: redis,
            _conf: conf,
            proxies,
        }
    }

    fn logs(&self) -> String {
        let logs: Vec<String> = self.proxies.iter().map(Proxy::logs).collect();
        logs.join("\n---\n")
    }

    /// Polls every proxy until `GET /` is served by `route` on each; returns how long
    /// the slowest took.
    async fn wait_all_served_by(&self, route: &str, within: Duration) -> Duration {
        let start = Instant::now();
        let mut pending: Vec<&Proxy> = self.proxies.iter().collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for p in pending {
                if served_by(p, "/").await != route {
                    still.push(p);
                }
            }
            pending = still;
            if start.elapsed() > within {
                panic!(
                    "{} of 3 proxies not serving route {route:?} after {within:?}; logs:\n{}",
                    pending.len(),
                    self.logs()
                );
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        start.elapsed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_change_reaches_the_whole_fleet() {
    // A limit no test request reaches: this test is about configuration.
    let mut fleet = Fleet::start("v0", 100_000, 100_000, 100).await;
    fleet
        .wait_all_served_by("v0", Duration::from_secs(10))
        .await;

    let mut latencies = Vec::new();
    for i in 1..=20 {
        let route = format!("v{i}");
        fleet.etcd.put(ROUTES, &routes_doc(&route)).await;
        latencies.push(
            fleet
                .wait_all_served_by(&route, Duration::from_secs(10))
                .await,
        );
    }
    latencies.sort();
    let p99 = latencies[latencies.len() - 1];
    eprintln!(
        "etcd write -> all 3 proxies serving, over {} changes: p50 {:?}, p99 (max) {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99
    );
    assert!(p99 < Duration::from_secs(2), "p99 {p99:?}");

    // An invalid change: refused by all three, with the same error.
    fleet
        .etcd
        .put(ROUTES, "routes: [{ name: bad, upstream: nowhere }]\n")
        .await;
    let mut errors = Vec::new();
    for p in &fleet.proxies {
        let status = p
            .wait_for_status(Duration::from_secs(10), "the change refused", |s| {
                s["last_reload"]["ok"] == false
            })
            .await;
        errors.push(status["last_reload"]["errors"].clone());
        assert_eq!(
            served_by(p, "/").await,
            "v20",
            "the old configuration serves"
        );
    }
    assert!(
        errors[0]
            .to_string()
            .contains("/fleet/routes.yaml:1: routes.bad.upstream: unknown upstream `nowhere`"),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| *e == errors[0]),
        "the same error everywhere: {errors:#?}"
    );

    // etcd cut off: all serve on; a change made meanwhile reaches all once it is back.
    fleet.etcd.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in &fleet.proxies {
        assert_eq!(served_by(p, "/").await, "v20");
    }
    let elsewhere = fleet.etcd.restart_elsewhere();
    EtcdServer::put_at(&elsewhere, ROUTES, &routes_doc("while-away")).await;
    fleet.etcd.restart();
    fleet
        .wait_all_served_by("while-away", Duration::from_secs(20))
        .await;
}

/// The measurement: a global limit of 200/s, set in etcd, across the three;
/// 600/s offered for 10 s is admitted `200 × 10 + burst` within 2%. Run with
/// `cargo test --test e2e fleet_global_limit -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10 s of load at 600 req/s: a measurement, run by hand"]
async fn fleet_global_limit_from_etcd_holds_for_ten_seconds() {
    let (rate, burst) = (200, 200);
    let fleet = Fleet::start("limited", rate, burst, 10).await;
    let urls: Vec<String> = fleet.proxies.iter().map(|p| p.url("web", "/")).collect();
    let out = offer(&urls, 4, rate, Duration::from_secs(10)).await;
    assert!(out.unexpected.is_empty(), "{:?}", out.unexpected);
    let secs = out.elapsed.as_secs_f64();
    let bound = f64::from(rate) * secs + f64::from(burst);
    let (ok, no) = (out.admitted as f64, out.refused as f64);
    eprintln!(
        "fleet, limit from etcd: admitted {ok}, refused {no} in {secs:.2} s; \
         rate × time + burst = {bound:.1} ({:+.2}%)",
        (ok - bound) / bound * 100.0
    );
    assert!(
        (ok + no) / secs >= 2.0 * f64::from(rate),
        "the machine is too loaded to offer 600/s"
    );
    assert!(
        (ok - bound).abs() <= bound * 0.02,
        "admitted {ok}, expected {bound:.1} ± 2%"
    );
}
