//! A route split between upstreams through the real binary: shares by weight over
//! 10k requests, canaries by header and cookie, a reload that moves the shares at
//! once without failing a request, and errors in `upstreams` reported like the rest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::balance::{check_reports, conf, counts, named, send};
use crate::support::{self, Backend, ConfDir, Proxy};

fn split(v1: &Backend, v2: &Backend, weights: (u32, u32)) -> String {
    conf(&format!(
        "routes:
  - name: r
    upstreams:
      - {{ name: v2, match: {{ headers: {{ x-canary: \"true\" }} }} }}
      - {{ name: v2, match: {{ cookies: {{ beta: \"on\" }} }} }}
      - {{ name: v1, weight: {} }}
      - {{ name: v2, weight: {} }}
upstreams:
  - {{ name: v1, targets: [{{ address: \"{}\" }}] }}
  - {{ name: v2, targets: [{{ address: \"{}\" }}] }}
",
        weights.0,
        weights.1,
        v1.addr(),
        v2.addr()
    ))
}

#[tokio::test]
async fn binary_weighted_split_and_canaries() {
    let (v1, v2) = (named("v1"), named("v2"));
    let dir = ConfDir::with(&split(&v1, &v2, (90, 10)));
    let proxy = Proxy::start(&dir);

    let bodies = send(&proxy, "/", 10_000, 8, |_| vec![]).await;
    let counts = counts(&bodies);
    let v2_share = counts.get("v2").copied().unwrap_or(0) as f64 / 10_000.0;
    assert!(
        (0.07..=0.13).contains(&v2_share),
        "v2 (weight 10 of 100) should get 10% ± 3% of 10k requests, got {counts:?}"
    );

    let canary = send(&proxy, "/", 200, 4, |_| {
        vec![("x-canary".to_string(), "true".to_string())]
    })
    .await;
    assert!(
        canary.iter().all(|b| b == "v2"),
        "x-canary: true goes to v2: {:?}",
        counts_of(&canary)
    );
    let cookie = send(&proxy, "/", 200, 4, |_| {
        vec![("cookie".to_string(), "a=1; beta=on".to_string())]
    })
    .await;
    assert!(
        cookie.iter().all(|b| b == "v2"),
        "beta=on goes to v2: {:?}",
        counts_of(&cookie)
    );
    let other = send(&proxy, "/", 200, 4, |_| {
        vec![("cookie".to_string(), "beta=off".to_string())]
    })
    .await;
    let shares = counts_of(&other);
    assert_eq!(
        shares.get("v2"),
        Some(&20),
        "beta=off is shared by weight: {shares:?}"
    );
}

fn counts_of(bodies: &[String]) -> std::collections::HashMap<String, usize> {
    counts(bodies)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

#[tokio::test]
async fn binary_a_reload_moves_the_split_at_once_without_failing_a_request() {
    let (v1, v2) = (named("v1"), named("v2"));
    let dir = ConfDir::with(&split(&v1, &v2, (90, 10)));
    let proxy = Proxy::start(&dir);

    // Traffic all through the reload; every request must succeed (`send` asserts 200).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url, stop, sent) = (
            support::client(),
            proxy.url("web", "/"),
            stop.clone(),
            sent.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let resp = client
                    .get(&url)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("a request failed during the reload: {e}"));
                assert_eq!(resp.status(), 200, "during the reload");
                let _ = resp.text().await;
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    dir.write("portcullis.yaml", split(&v1, &v2, (10, 90)));
    proxy.wait_for_generation(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap_or_else(|e| panic!("load task: {e}"));
    }
    assert!(
        sent.load(Ordering::SeqCst) > 0,
        "traffic ran through the reload"
    );

    let bodies = send(&proxy, "/", 1000, 4, |_| vec![]).await;
    let counts = counts_of(&bodies);
    assert_eq!(
        counts.get("v2"),
        Some(&900),
        "the new split's first cycle of 100 already gives v2 90: {counts:?}"
    );
}

#[test]
fn check_reports_split_errors_with_file_line_and_field() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - name: both
    upstream: echo@internal
    upstreams: [{ name: echo@internal }]
  - name: split
    upstreams:
      - { name: ghost, weight: 5 }
      - { name: echo@internal, weight: 5, match: { headers: { x-a: b } } }
      - { name: echo@internal, weight: -1 }
  - name: canaries-only
    upstreams:
      - { name: echo@internal, match: { cookies: { beta: on } } }
",
        &[
            "up.yaml:5: routes.both.upstreams: give either upstream or upstreams, not both",
            "up.yaml:9: routes.split.upstreams.1.weight: an entry with match takes exactly the requests it matches; give it no weight",
            "up.yaml:10: routes.split.upstreams.2.weight: must be at least 0, found -1",
            "up.yaml:12: routes.canaries-only.upstreams: needs an entry without match and with a weight above 0, for the requests no canary takes",
            "up.yaml:8: routes.split.upstreams.0.name: unknown upstream `ghost` (defined: echo@internal)",
        ],
    );
}
