//! The breaker through the real binary under load: a filter that spins on every
//! request costs its worker a handful of deadlines over ten seconds, not one per
//! request, and a route without it keeps answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Proxy, client, sample};
use crate::wasm_binary::conf;

/// How long the load runs: long enough for the back-off to double three times.
const LOAD: Duration = Duration::from_secs(10);
/// The spinning filter's deadline.
const DEADLINE_MS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_breaker_bounds_a_filter_that_spins_on_every_request() {
    let dir = conf(
        &format!(
            "  - {{ name: tag, wasm: probe.wasm, config: \"headers:tag\" }}\n\
             \x20 - {{ name: spin, wasm: probe.wasm, config: \"spin:sp\", \
             limits: {{ callback_timeout: {DEADLINE_MS}ms }} }}"
        ),
        "  - { name: tagged, match: { path_prefix: /ok }, filters: [tag], upstream: echo@internal }\n\
         \x20 - { name: spinning, match: { path_prefix: /spin }, filters: [spin], upstream: echo@internal }",
    );
    let proxy = Arc::new(Proxy::start(&dir));
    let until = Instant::now() + LOAD;

    let spun = Arc::new(AtomicU64::new(0));
    let mut spinners = Vec::new();
    for _ in 0..4 {
        let (proxy, spun) = (proxy.clone(), spun.clone());
        spinners.push(tokio::spawn(async move {
            let http = client();
            while Instant::now() < until {
                let resp = http
                    .get(proxy.url("web", "/spin"))
                    .header("x-spin", "1")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET /spin: {e}"));
                assert_eq!(resp.status(), 500, "a spinning filter's request fails");
                spun.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let ok = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let http = client();
            let mut served = 0u64;
            while Instant::now() < until {
                let resp = http
                    .get(proxy.url("web", "/ok"))
                    .header("x-in", "still-here")
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("GET /ok: {e}"));
                assert_eq!(resp.status(), 200, "the other route keeps serving");
                served += 1;
            }
            served
        })
    };
    for s in spinners {
        s.await.unwrap_or_else(|e| panic!("spinner: {e}"));
    }
    let served = ok.await.unwrap_or_else(|e| panic!("ok client: {e}"));

    let page = proxy.metrics().await;
    let timeouts = sample(
        &page,
        r#"portcullis_filter_failures_total{filter="spin",kind="timeout"}"#,
    );
    let suspended = sample(
        &page,
        r#"portcullis_filter_failures_total{filter="spin",kind="suspended"}"#,
    );
    let spun = spun.load(Ordering::Relaxed);
    eprintln!(
        "breaker over {LOAD:?}: {spun} spinning requests, {timeouts} deadline misses, \
         {suspended} failed suspended; {served} requests on the other route"
    );
    // One worker: a forgiven miss, then misses that open suspensions of 1, 2, 4 and
    // 8 s at about 0, 1, 3 and 7 s. Without the breaker every request would spin to
    // its deadline: 10 s / 50 ms = 200 of them.
    assert!(
        (2..=6).contains(&timeouts),
        "{timeouts} deadline misses in {LOAD:?} (expected about 5); {suspended} failed \
         suspended; {spun} spinning requests"
    );
    assert_eq!(
        timeouts + suspended,
        spun,
        "every spinning request failed, by deadline or suspension"
    );
    assert!(
        suspended > 10 * timeouts,
        "most spinning requests failed at once: {suspended} suspended, {timeouts} deadlines"
    );
    assert!(served > 0, "the other route answered");
}
