//! Failover and locality through the real binary: a priority group takes all the
//! traffic while enough of it is up, passes the missing share to the next group when
//! it is not, and takes it back when its targets return; targets in the proxy's zone
//! (from `zone` or `PORTCULLIS_ZONE`) are preferred the same way, spilling over to the
//! other zones, for health and, past `zone_overload`, for load.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::balance::{check_reports, conf, counts, send};
use crate::support::{Backend, ConfDir, Proxy, Reply};

type Down = Arc<Mutex<HashSet<&'static str>>>;

/// A backend answering its name, whose `/healthz` fails while `down` holds it.
fn backend(name: &'static str, down: &Down) -> Backend {
    let down = down.clone();
    Backend::start(move |seen| {
        if seen.path == "/healthz" {
            let is_down = down.lock().map(|d| d.contains(name)).unwrap_or(false);
            return Reply::text(if is_down { 503 } else { 200 }, "");
        }
        Reply::text(200, name)
    })
}

fn set_down(down: &Down, names: &[&'static str]) {
    if let Ok(mut d) = down.lock() {
        d.clear();
        d.extend(names);
    }
}

/// Waits until `/status` shows exactly the targets at `indices` down.
async fn wait_down(proxy: &Proxy, indices: &[usize], total: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = proxy.status().await;
        let targets = &status["upstreams"][0]["targets"];
        if (0..total).all(|i| targets[i]["healthy"] == !indices.contains(&i)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "targets {indices:?} should be down: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `/` with the sticky cookie `cookie`: the body and the cookie the response sets.
async fn sticky_get(proxy: &Proxy, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = crate::support::client().get(proxy.url("web", "/"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET failed: {e}"));
    let set = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    (resp.text().await.unwrap_or_default(), set)
}

/// The share (0–1) of `bodies` from backend `name`.
fn share(bodies: &[String], name: &str) -> f64 {
    counts(bodies).get(name).copied().unwrap_or(0) as f64 / bodies.len() as f64
}

fn upstream(targets: &[(&Backend, &str)]) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|(b, extra)| format!("{{ address: \"{}\"{extra} }}", b.addr()))
        .collect();
    format!(
        "routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    health_check: {{ path: /healthz, interval: 100ms }}
    sticky: {{ cookie: srv }}
    targets: [{}]
",
        list.join(", ")
    )
}

#[tokio::test]
async fn binary_failover_spills_to_the_next_group_and_fails_back() {
    let down: Down = Arc::default();
    let (a1, a2, b) = (
        backend("a1", &down),
        backend("a2", &down),
        backend("b", &down),
    );
    let dir = ConfDir::with(&conf(&upstream(&[
        (&a1, ""),
        (&a2, ""),
        (&b, ", priority: 1"),
    ])));
    let proxy = Proxy::start(&dir);

    let bodies = send(&proxy, "/", 200, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "b"), 0.0, "group 0 healthy: b idle");

    // Half of group 0 up: its health is 50% / 70% = 71%; b takes the other 29%.
    set_down(&down, &["a1"]);
    wait_down(&proxy, &[0], 3).await;
    let bodies = send(&proxy, "/", 2000, 8, |_| vec![]).await;
    assert_eq!(share(&bodies, "a1"), 0.0, "a1 is down");
    let b_share = share(&bodies, "b");
    assert!(
        (0.24..=0.34).contains(&b_share),
        "b should take ~29%, got {:.1}% ({:?})",
        b_share * 100.0,
        counts(&bodies)
    );

    set_down(&down, &["a1", "a2"]);
    wait_down(&proxy, &[0, 1], 3).await;
    let bodies = send(&proxy, "/", 200, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "b"), 1.0, "group 0 down: all to b");
    let (body, pinned_to_b) = sticky_get(&proxy, None).await;
    assert_eq!(body, "b");
    let pinned_to_b = pinned_to_b.unwrap_or_else(|| panic!("the response pins to b"));

    // Fail-back, for sticky clients too.
    set_down(&down, &[]);
    wait_down(&proxy, &[], 3).await;
    let bodies = send(&proxy, "/", 200, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "b"), 0.0, "group 0 back: b idle again");
    let (body, repinned) = sticky_get(&proxy, Some(&pinned_to_b)).await;
    assert!(
        body.starts_with('a') && repinned.is_some(),
        "a client pinned to b while it took the traffic goes back, pinned anew: {body}"
    );
    let status = proxy.status().await;
    assert_eq!(
        status["upstreams"][0]["targets"][2]["priority"], 1,
        "/status shows the priority: {status}"
    );
}

fn zoned(local: [&Backend; 2], remote: &Backend, top: &str) -> String {
    conf(&format!(
        "{top}{}",
        upstream(&[
            (local[0], ", labels: { zone: z1 }"),
            (local[1], ", labels: { zone: z1, rack: r7 }"),
            (remote, ", labels: { zone: z2 }"),
        ])
    ))
}

#[tokio::test]
async fn binary_locality_prefers_the_proxy_zone_and_spills_over() {
    let down: Down = Arc::default();
    let (l1, l2, r) = (
        backend("l1", &down),
        backend("l2", &down),
        backend("r", &down),
    );
    let dir = ConfDir::with(&zoned([&l1, &l2], &r, ""));
    let proxy = Proxy::try_start_with(&dir, &[], &[("PORTCULLIS_ZONE", "z1")])
        .unwrap_or_else(|e| panic!("{e}"));

    let bodies = send(&proxy, "/", 200, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "r"), 0.0, "the local zone takes everything");
    assert!(share(&bodies, "l1") > 0.3 && share(&bodies, "l2") > 0.3);

    set_down(&down, &["l1"]);
    wait_down(&proxy, &[0], 3).await;
    let bodies = send(&proxy, "/", 2000, 8, |_| vec![]).await;
    let r_share = share(&bodies, "r");
    assert!(
        (0.24..=0.34).contains(&r_share),
        "half the local zone up: ~29% spills to z2, got {:.1}% ({:?})",
        r_share * 100.0,
        counts(&bodies)
    );

    set_down(&down, &["l1", "l2"]);
    wait_down(&proxy, &[0, 1], 3).await;
    let bodies = send(&proxy, "/", 100, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "r"), 1.0, "the local zone down: all to z2");

    set_down(&down, &[]);
    wait_down(&proxy, &[], 3).await;
    let bodies = send(&proxy, "/", 100, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "r"), 0.0, "back to the local zone");
    let status = proxy.status().await;
    assert_eq!(
        status["upstreams"][0]["targets"][1]["labels"]["rack"], "r7",
        "/status shows the labels: {status}"
    );
}

#[tokio::test]
async fn binary_the_zone_comes_from_the_configuration_without_the_environment() {
    let down: Down = Arc::default();
    let (l1, l2, r) = (
        backend("l1", &down),
        backend("l2", &down),
        backend("r", &down),
    );
    let dir = ConfDir::with(&zoned([&l1, &l2], &r, "zone: z2\n"));
    let proxy = Proxy::start(&dir);
    let bodies = send(&proxy, "/", 100, 4, |_| vec![]).await;
    assert_eq!(share(&bodies, "r"), 1.0, "zone: z2 prefers r");
}

#[tokio::test]
async fn binary_an_overloaded_local_zone_spills_and_takes_its_traffic_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let slow = Arc::new(AtomicBool::new(false));
    let local = {
        let slow = slow.clone();
        Backend::start(move |_| {
            let reply = Reply::text(200, "l");
            match slow.load(Ordering::SeqCst) {
                true => reply.delayed(Duration::from_millis(200)),
                false => reply,
            }
        })
    };
    let remote = Backend::start(|_| Reply::text(200, "r"));
    let dir = ConfDir::with(&conf(&format!(
        "zone: z1
routes: [{{ name: r, upstream: pool }}]
upstreams:
  - name: pool
    zone_overload: 4
    targets:
      - {{ address: \"{}\", labels: {{ zone: z1 }} }}
      - {{ address: \"{}\", labels: {{ zone: z2 }} }}
",
        local.addr(),
        remote.addr()
    )));
    let proxy = Proxy::start(&dir);

    // Within the bound (two at a time, at most 2 in flight): all to the local zone.
    let bodies = send(&proxy, "/", 200, 2, |_| vec![]).await;
    assert_eq!(
        share(&bodies, "r"),
        0.0,
        "not overloaded: {:?}",
        counts(&bodies)
    );

    // The local target slows down and 16 clients pile up on it: past 4 in flight, the
    // excess share spills to z2, which answers at once (about 3/4 settle there).
    slow.store(true, Ordering::SeqCst);
    let bodies = send(&proxy, "/", 400, 16, |_| vec![]).await;
    let r_share = share(&bodies, "r");
    assert!(
        r_share > 0.5,
        "a saturated local zone spills most requests, got {:.1}% ({:?})",
        r_share * 100.0,
        counts(&bodies)
    );
    assert!(
        share(&bodies, "l") > 0.0,
        "the local zone still takes its part"
    );

    // It keeps up again: the traffic comes back.
    slow.store(false, Ordering::SeqCst);
    let bodies = send(&proxy, "/", 200, 2, |_| vec![]).await;
    assert_eq!(share(&bodies, "r"), 0.0, "recovered: {:?}", counts(&bodies));
}

#[test]
fn check_reports_failover_and_locality_errors() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
zone: [a]
routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    failover_threshold: 0%
    zone_overload: 0
    targets:
      - { address: 127.0.0.1:9000, priority: -1 }
      - { address: 127.0.0.1:9001, labels: [zone] }
",
        &[
            "up.yaml:2: zone: expected a string, found a list",
            "up.yaml:6: upstreams.app.failover_threshold: must be above 0%",
            "up.yaml:7: upstreams.app.zone_overload: must be at least 1, found 0",
            "up.yaml:9: upstreams.app.targets.0.priority: must be at least 0, found -1",
            "up.yaml:10: upstreams.app.targets.1.labels: expected a mapping, found a list",
        ],
    );
}
