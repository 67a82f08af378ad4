//! Reloads must not grow the process: every generation's plugins, VMs and pooled
//! instance slots are released once the next generation serves.

use std::time::Duration;

use crate::support::*;

/// A route through five standard filters, like a typical edge config.
fn conf() -> String {
    r#"
workers: 2
admin: { address: 127.0.0.1:0, reload: true }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - { name: chain, match: { path_prefix: /chain }, filters: [office, limit, keys, rewrite, moved], upstream: echo@internal }
filters:
  - { name: office, builtin: ip-allowlist, config: { allow: [127.0.0.0/8] }, limits: { callback_timeout: 5s } }
  - { name: limit, builtin: rate-limit, config: { rate: 100000, per: 1s, burst: 100000, key: client_ip }, limits: { callback_timeout: 5s } }
  - { name: keys, builtin: api-key, config: { header: x-api-key, keys: [{ key: s3cret, consumer: alice }] }, limits: { callback_timeout: 5s } }
  - { name: rewrite, builtin: headers, config: { request: { set: { x-env: prod } } }, limits: { callback_timeout: 5s } }
  - { name: moved, builtin: redirect, config: { regex: "^http://([^/]+)/old/(.*)", replacement: "http://${1}/new/${2}" }, limits: { callback_timeout: 5s } }
"#
    .to_string()
}

/// Reloads over the admin API and sends requests so both workers make VMs of the new
/// generation's plugins.
async fn reload_and_serve(proxy: &Proxy, c: &reqwest::Client, n: usize, requests: usize) {
    for _ in 0..n {
        let resp = c
            .post(proxy.admin_url("/reload"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /reload failed: {e}\nstderr:\n{}", proxy.logs()));
        assert_eq!(resp.status(), 200, "POST /reload: {:?}", resp.text().await);
        for _ in 0..requests {
            // A fresh connection each time, so the requests spread over the workers.
            let resp = client()
                .get(proxy.url("web", "/chain/x"))
                .header("x-api-key", "s3cret")
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET /chain/x failed: {e}\nstderr:\n{}", proxy.logs()));
            assert_eq!(resp.status(), 200, "GET /chain/x through five filters");
        }
    }
}

/// Reloads measured after the warm-up.
const RELOADS: usize = 200;

/// How much RSS may move over them: allocator noise. Before the fix each freed VM's
/// pooled memory slot kept 1 MiB resident and new VMs kept landing in fresh slots, so
/// this scenario grew by ~15 MiB (and a release build by ~120 MiB over 300 reloads).
const SLACK_KIB: u64 = 6 * 1024;

#[tokio::test]
async fn many_reloads_of_five_filters_do_not_grow_rss() {
    let conf = ConfDir::with(&conf());
    let proxy = Proxy::start(&conf);
    let c = client();
    // Warm-up with traffic: both workers make VMs, allocator arenas and pooled slots
    // reach their working size.
    reload_and_serve(&proxy, &c, 20, 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let warm = proxy.rss_kib();
    // Then reloads alone, as a config pipeline does on a quiet proxy.
    reload_and_serve(&proxy, &c, RELOADS, 0).await;
    // Root tasks notice their plugin is gone within a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = proxy.rss_kib();
    let grown = after.saturating_sub(warm);
    eprintln!("rss after warm-up {warm} KiB, after {RELOADS} more reloads {after} KiB");
    assert!(
        grown < SLACK_KIB,
        "RSS grew by {grown} KiB over {RELOADS} reloads (expected under {SLACK_KIB} KiB): \
         {warm} KiB after warm-up, {after} KiB after"
    );
    // Still serving through all five filters.
    reload_and_serve(&proxy, &c, 1, 2).await;
}
