//! Filter canaries through the real binary: `{ filter: OLD, canary: { filter: NEW,
//! weight: N } }` runs NEW instead of OLD on N% of the requests, and a reload moves
//! the weight without failing a request; with `header` or `cookie`, the requests
//! that carry it run NEW whatever the weight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::support::*;

/// Requests sent to measure the share.
const N: u64 = 20_000;
/// Requests under way at once.
const CONCURRENCY: u64 = 8;

fn conf_text(weight: u32) -> String {
    conf_with(&format!("weight: {weight}"))
}

/// The route's canary entry with `canary` (the fields after `filter: v2`).
fn conf_with(canary: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - name: r
    filters: [{{ filter: v1, canary: {{ filter: v2, {canary} }} }}]
    upstream: echo@internal
filters:
  - {{ name: v1, builtin: headers, config: {{ request: {{ set: {{ x-version: v1 }} }} }} }}
  - {{ name: v2, builtin: headers, config: {{ request: {{ set: {{ x-version: v2 }} }} }} }}
"
    )
}

/// How many requests of entry `v1` on route `r` ran version `v`, by `metrics`.
fn requests_of(metrics: &str, v: &str) -> u64 {
    let labels = format!("filter=\"v1\",route=\"r\",version=\"{v}\"");
    sample(
        metrics,
        &format!("portcullis_filter_canary_requests_total{{{labels}}}"),
    )
}

/// The `x-version` the upstream got, or why there is none.
async fn version(client: &reqwest::Client, url: &str) -> Result<String, String> {
    version_with(client, url, &[]).await
}

/// [`version`] of a request with `headers`.
async fn version_with(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<String, String> {
    let mut req = client.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let echo: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
    echo["headers"]["x-version"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no x-version: {echo}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_percent_canary_gets_five_percent_and_a_reload_to_all_fails_nothing() {
    let conf = ConfDir::with(&conf_text(5));
    let proxy = Proxy::start(&conf);
    let url = proxy.url("web", "/");
    let v2 = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url, v2) = (client(), url.clone(), v2.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..N / CONCURRENCY {
                match version(&client, &url).await.as_deref() {
                    Ok("v2") => {
                        v2.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok("v1") => {}
                    other => panic!("a request failed or ran no version: {other:?}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let v2 = v2.load(Ordering::Relaxed);
    let share = v2 as f64 / N as f64;
    assert!(
        (0.04..=0.06).contains(&share),
        "weight 5: {v2} of {N} requests ran the canary ({:.2}%)",
        share * 100.0
    );
    let metrics = proxy.metrics().await;
    let series = |v: &str| requests_of(&metrics, v);
    assert_eq!((series("v1"), series("v2")), (N - v2, v2), "{metrics}");

    // Under load, the canary goes to 100%: no request may fail on the way.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url) = (client(), url.clone());
        let (stop, failed, sent) = (stop.clone(), failed.clone(), sent.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if version(&client, &url).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    conf.write("portcullis.yaml", conf_text(100));
    proxy.wait_for_generation(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let (failed, sent) = (failed.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
    assert!(sent > 100, "too little load to tell: {sent} requests");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the reload"
    );
    let client = client();
    for _ in 0..50 {
        assert_eq!(
            version(&client, &url).await.as_deref(),
            Ok("v2"),
            "weight 100"
        );
    }
}

/// With weight 0, exactly the requests with the header or the cookie run the canary,
/// and the canary metric counts them under its version.
#[tokio::test]
async fn a_canary_by_header_or_cookie_takes_exactly_the_requests_that_carry_it() {
    let conf = ConfDir::with(&conf_with(
        "header: { name: x-canary, value: \"1\" }, cookie: { name: beta, value: on }",
    ));
    let proxy = Proxy::start(&conf);
    let (client, url) = (client(), proxy.url("web", "/"));
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[], "v1"),
        (&[("x-canary", "1")], "v2"),
        (&[("x-canary", "0")], "v1"),
        (&[("cookie", "theme=dark; beta=on")], "v2"),
        (&[("cookie", "beta=off")], "v1"),
        (&[("x-canary", "2"), ("cookie", "beta=on")], "v2"),
    ];
    for (headers, want) in cases {
        for _ in 0..10 {
            let got = version_with(&client, &url, headers).await;
            assert_eq!(got.as_deref(), Ok(want), "{headers:?}");
        }
    }
    let metrics = proxy.metrics().await;
    let series = |v: &str| requests_of(&metrics, v);
    assert_eq!((series("v1"), series("v2")), (30, 30), "{metrics}");
}
