//! The dashboard on the admin listener: its data (`/dashboard.json`) through the real
//! binary, and the page itself in a real headless Chromium — it shows the routes, a
//! route added by a reload appears without reloading the page, and rates move with
//! traffic. Screenshots go to `$CARGO_TARGET_TMPDIR/dashboard/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::browser::Browser;
use crate::support::*;
use crate::tls::pki::{Alg, Ca};

/// A proxy with a TLS listener, a filter on route `hello`, and an upstream with a
/// target nobody listens on.
fn conf() -> ConfDir {
    let leaf = Ca::new("Dashboard Test CA").server(&["shop.example.com"], Alg::Ecdsa);
    let conf = ConfDir::with(
        r#"admin: { address: 127.0.0.1:0 }
listeners:
  - { name: web, address: 127.0.0.1:0 }
  - name: websecure
    address: 127.0.0.1:0
    tls: { certificates: [{ cert: certs/shop.crt, key: certs/shop.key }] }
routes:
  - name: hello
    match: { path_prefix: /hello, methods: [GET] }
    filters: [stamp]
    upstream: echo@internal
  - { name: broken, match: { path_prefix: /broken }, upstream: nowhere }
filters:
  - { name: stamp, builtin: headers, config: { request: { set: { x-env: dashboard } } } }
upstreams:
  - { name: nowhere, targets: [{ address: "127.0.0.1:9" }] }
"#,
    );
    conf.write("certs/shop.crt", &leaf.chain_pem);
    conf.write("certs/shop.key", &leaf.key_pem);
    conf
}

async fn dashboard_json(proxy: &Proxy) -> Value {
    let url = proxy.admin_url("/dashboard.json");
    let resp = get_with(&url, &[]).await;
    assert_eq!(resp.status(), 200, "GET {url}");
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("{url} is not JSON: {e}"))
}

/// `n` GETs of `path` on listener `web`; returns the statuses seen.
async fn traffic(proxy: &Proxy, path: &str, n: usize) -> Vec<u16> {
    let url = proxy.url("web", path);
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(get_with(&url, &[]).await.status().as_u16());
    }
    statuses
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x["name"] == name))
        .unwrap_or_else(|| panic!("no {name:?} in {list:#}"))
}

#[tokio::test]
async fn data_shows_traffic_targets_certificates_and_reloads() {
    let conf = conf();
    let proxy = Proxy::start(&conf);
    assert_eq!(traffic(&proxy, "/hello", 20).await, vec![200; 20]);
    assert_eq!(traffic(&proxy, "/broken", 4).await, vec![502; 4]);
    conf.write("bad.yaml", "routes:\n  - { name: x, upstream: absent }\n");
    proxy.reload();
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d = dashboard_json(&proxy).await;
        if d["reloads"][0]["ok"] == false {
            break d;
        }
        assert!(Instant::now() < deadline, "no failed reload shown: {d:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let hello = find(&d["routes"], "hello");
    assert_eq!(
        hello["match"],
        serde_json::json!(["path_prefix /hello", "methods GET"])
    );
    let recent = &hello["recent"];
    assert_eq!(recent["requests"], 20, "hello: {hello:#}");
    assert_eq!(recent["errors"], 0, "hello: {hello:#}");
    assert!(recent["rps"].as_f64() > Some(0.0), "hello: {hello:#}");
    assert!(
        recent["p99_ms"].as_f64() >= recent["p50_ms"].as_f64()
            && recent["p50_ms"].as_f64() > Some(0.0),
        "latency quantiles: {hello:#}"
    );
    let broken = &find(&d["routes"], "broken")["recent"];
    assert_eq!(
        (&broken["requests"], &broken["errors"]),
        (&4.into(), &4.into())
    );
    assert_eq!(broken["error_rate"], 1.0);

    let stamp = &find(&d["filters"], "stamp")["recent"];
    assert_eq!(
        stamp["requests"], 20,
        "the filter saw every hello request: {d:#}"
    );
    assert_eq!(stamp["errors"], 0);

    let target = &find(&d["upstreams"], "nowhere")["targets"][0];
    assert_eq!(target["address"], "127.0.0.1:9");
    assert_eq!(target["active"], 0, "nothing in flight: {target}");
    assert!(target["ejections"].is_u64(), "ejections: {target}");

    let cert = &d["certificates"][0];
    assert_eq!(cert["listener"], "websecure", "certificates: {d:#}");
    assert_eq!(cert["names"], serde_json::json!(["shop.example.com"]));
    let days = cert["days_left"].as_f64().unwrap_or_default();
    assert!(days > 1.0, "a fresh test certificate has days left: {cert}");

    let reloads = d["reloads"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        reloads.len(),
        2,
        "the start and the failed reload: {reloads:#?}"
    );
    assert_eq!(reloads[1]["ok"], true);
    assert_eq!(reloads[1]["generation"], 1);
    assert_eq!(
        reloads[0]["generation"], 1,
        "a refused reload keeps generation 1"
    );
    let error = reloads[0]["errors"][0].as_str().unwrap_or_default();
    assert!(
        error.starts_with("bad.yaml:2: "),
        "the error names file and line: {error:?}"
    );
}

/// Where this run's screenshots go: `$CARGO_TARGET_TMPDIR/dashboard/NAME.png`.
fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard")
        .join(format!("{name}.png"))
}

/// The number in route `route`'s req/s cell, as the page shows it.
fn rps_of(kind: &str, name: &str) -> String {
    format!(
        "parseFloat(document.querySelector('[data-{kind}=\"{name}\"] .rps')?.textContent || '0')"
    )
}

#[tokio::test]
async fn the_page_shows_routes_reloads_and_traffic_live_in_chromium() {
    let conf = conf();
    let proxy = Proxy::start(&conf);
    let mut browser = Browser::start(1280, 900).await;
    browser.goto(&proxy.admin_url("/")).await;

    let row = browser
        .wait_for(
            "document.querySelector('[data-route=\"hello\"]')?.innerText",
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|last| panic!("the page never showed route hello: {last}"));
    let row = row.as_str().unwrap_or_default();
    for want in [
        "hello",
        "path_prefix /hello",
        "methods GET",
        "stamp",
        "echo@internal",
    ] {
        assert!(
            row.contains(want),
            "route row should show {want:?}: {row:?}"
        );
    }
    assert_eq!(
        browser
            .eval("document.getElementById('generation').textContent")
            .await,
        "1"
    );
    assert!(
        browser
            .eval("document.querySelector('[data-listener=\"websecure\"]').innerText")
            .await
            .as_str()
            .is_some_and(|t| t.contains("shop.example.com") && t.contains("days")),
        "the TLS listener shows its certificate's expiry"
    );

    // A route added by a reload appears without the page being reloaded: the marker
    // set on this document survives.
    browser.eval("window.stillTheSamePage = true").await;
    conf.write(
        "added.yaml",
        "routes:\n  - { name: added, match: { host: added.example.com }, upstream: echo@internal }\n",
    );
    let started = Instant::now();
    browser
        .wait_for(
            "document.querySelector('[data-route=\"added\"]')?.innerText",
            Duration::from_secs(10),
        )
        .await
        .unwrap_or_else(|last| panic!("route added never appeared: {last}\n{}", proxy.logs()));
    let appeared = started.elapsed();
    assert_eq!(browser.eval("window.stillTheSamePage === true").await, true);
    assert_eq!(
        browser
            .eval("document.getElementById('generation').textContent")
            .await,
        "2"
    );
    assert!(
        browser
            .eval("document.getElementById('reloads').tBodies[0].rows.length")
            .await
            == 2,
        "the reload history shows the start and the reload"
    );

    // Traffic moves the route's and the filter's rates on the page.
    assert_eq!(browser.eval(&rps_of("route", "hello")).await, 0);
    let statuses = traffic(&proxy, "/hello", 30).await;
    assert_eq!(statuses, vec![200; 30]);
    for kind in ["route", "filter"] {
        let name = if kind == "route" { "hello" } else { "stamp" };
        browser
            .wait_for(
                &format!("{} > 0", rps_of(kind, name)),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|_| panic!("the {kind} {name}'s rate never moved"));
    }
    browser.screenshot(&artifact("desktop"), true).await;

    // On a phone: no sideways scrolling, each row a card.
    browser.viewport(390, 844, true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let overflow = browser
        .eval("document.documentElement.scrollWidth - window.innerWidth")
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is wider than a phone by {overflow} px"
    );
    browser.screenshot(&artifact("phone"), false).await;
    eprintln!(
        "route added by a reload shown after {appeared:?}; screenshots in {}",
        artifact("")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
}
