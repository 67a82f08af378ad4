//! Sticky sessions through the real binary: the cookie the proxy sets pins a client
//! to its target across requests and across a reload that leaves the upstream
//! unchanged; when the target goes down, or out of the configuration, the policy
//! picks another and the response pins the client to it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::balance::{check_reports, conf};
use crate::support::{self, Backend, ConfDir, Proxy, Reply};

/// A backend answering its name, whose `/healthz` fails while `down` names it.
fn backend(name: &'static str, down: Arc<Mutex<String>>) -> Backend {
    Backend::start(move |seen| {
        if seen.path == "/healthz" {
            let is_down = down.lock().map(|d| *d == name).unwrap_or(false);
            return Reply::text(if is_down { 503 } else { 200 }, "");
        }
        Reply::text(200, name)
    })
}

fn config(targets: &[&Backend], extra_route: bool) -> String {
    let list: Vec<String> = targets
        .iter()
        .map(|t| format!("{{ address: \"{}\" }}", t.addr()))
        .collect();
    let extra = if extra_route {
        "  - { name: other, match: { path: /other }, upstream: echo@internal }\n"
    } else {
        ""
    };
    conf(&format!(
        "routes:
  - {{ name: r, upstream: pool }}
{extra}upstreams:
  - name: pool
    targets: [{}]
    health_check: {{ path: /healthz, interval: 100ms }}
    sticky: {{ cookie: srv, max_age: 1h }}
",
        list.join(", ")
    ))
}

/// GET `/` with `cookie` (if any), on a new connection: the body and the `srv` cookie
/// the response sets, if it sets one.
async fn get(proxy: &Proxy, cookie: Option<&str>) -> (String, Option<String>) {
    let mut req = support::client().get(proxy.url("web", "/"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("theme=dark; {c}"));
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET failed: {e}"));
    assert_eq!(resp.status(), 200);
    let set = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("srv="))
        .map(|v| v.split(';').next().unwrap_or("").to_string());
    (resp.text().await.unwrap_or_default(), set)
}

/// Sends 20 requests with `cookie`: every one must reach `want` and set no cookie.
async fn stays(proxy: &Proxy, cookie: &str, want: &str, when: &str) {
    for i in 0..20 {
        let (body, set) = get(proxy, Some(cookie)).await;
        assert_eq!(body, want, "request {i} {when}: pinned to {want}");
        assert_eq!(
            set, None,
            "request {i} {when}: already pinned, no new cookie"
        );
    }
}

async fn wait_health(proxy: &Proxy, index: usize, healthy: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while proxy.status().await["upstreams"][0]["targets"][index]["healthy"] != healthy {
        assert!(
            tokio::time::Instant::now() < deadline,
            "target {index} should become healthy={healthy}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn binary_sticky_pins_across_a_reload_and_moves_when_the_target_goes() {
    let down = Arc::new(Mutex::new(String::new()));
    let (a, b, c) = (
        backend("a", down.clone()),
        backend("b", down.clone()),
        backend("c", down.clone()),
    );
    let dir = ConfDir::with(&config(&[&a, &b, &c], false));
    let proxy = Proxy::start(&dir);

    let (first, set) = get(&proxy, None).await;
    let cookie = set.unwrap_or_else(|| panic!("the first response pins the client"));
    stays(&proxy, &cookie, &first, "before the reload").await;

    // A reload that leaves the upstream as it was.
    dir.write("portcullis.yaml", config(&[&a, &b, &c], true));
    proxy.wait_for_generation(2).await;
    stays(&proxy, &cookie, &first, "after the reload").await;

    // The pinned target fails its health check: the client moves, and is re-pinned.
    let index = ["a", "b", "c"]
        .iter()
        .position(|n| *n == first)
        .unwrap_or_else(|| panic!("unknown backend {first}"));
    if let Ok(mut d) = down.lock() {
        *d = first.clone();
    }
    wait_health(&proxy, index, false).await;
    let (second, set) = get(&proxy, Some(&cookie)).await;
    assert_ne!(second, first, "a target out of rotation is not pinned");
    let moved = set.unwrap_or_else(|| panic!("the response pins the client anew"));
    assert_ne!(moved, cookie);
    stays(&proxy, &moved, &second, "once moved").await;

    // The new target leaves the configuration: its cookie falls back to the policy.
    let remaining: Vec<&Backend> = [(&a, "a"), (&b, "b"), (&c, "c")]
        .into_iter()
        .filter(|(_, n)| *n != second)
        .map(|(t, _)| t)
        .collect();
    dir.write("portcullis.yaml", config(&remaining, true));
    proxy.wait_for_generation(3).await;
    let (third, set) = get(&proxy, Some(&moved)).await;
    assert_ne!(third, second, "a removed target is not pinned");
    assert!(set.is_some(), "pinned to the new target");
}

#[tokio::test]
async fn binary_without_a_cookie_the_policy_spreads_and_each_response_pins() {
    let down = Arc::new(Mutex::new(String::new()));
    let (a, b) = (backend("a", down.clone()), backend("b", down.clone()));
    let dir = ConfDir::with(&config(&[&a, &b], false));
    let proxy = Proxy::start(&dir);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..20 {
        let (body, set) = get(&proxy, None).await;
        let set = set.unwrap_or_else(|| panic!("every unpinned response pins"));
        let previous = seen.insert(body.clone(), set.clone());
        assert!(
            previous.is_none_or(|p| p == set),
            "one cookie value per target: {body}"
        );
    }
    assert_eq!(
        seen.len(),
        2,
        "round_robin still spreads new clients: {seen:?}"
    );
}

#[test]
fn check_reports_sticky_errors() {
    check_reports(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: app }]
upstreams:
  - name: app
    targets: [{ address: 127.0.0.1:9000 }]
    sticky: { cookie: \"a b\", max_age: soon }
  - name: other
    targets: [{ address: 127.0.0.1:9000 }]
    sticky: {}
",
        &[
            "up.yaml:6: upstreams.app.sticky.cookie: `a b` is not a cookie name",
            "up.yaml:9: upstreams.other.sticky.cookie: missing required field",
        ],
    );
}
