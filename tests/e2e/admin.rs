//! The admin listener: /ready, /status, /metrics, /reload.

use std::time::Duration;

use crate::server::basic_conf;
use crate::support::*;

#[tokio::test]
async fn ready_once_serving() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let resp = client()
        .get(proxy.admin_url("/ready"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /ready failed: {e}"));
    assert_eq!(resp.status(), 200, "/ready once serving");
}

#[tokio::test]
async fn status_shows_what_is_in_force() {
    let proxy = Proxy::start(&basic_conf(
        "",
        "upstreams:\n  - { name: app, targets: [{ address: 127.0.0.1:9 }] }\n",
    ));
    let status = proxy.status().await;
    assert_eq!(status["generation"], 1, "status: {status:#}");
    assert_eq!(status["last_reload"]["ok"], true, "status: {status:#}");
    assert_eq!(status["last_reload"]["errors"], serde_json::json!([]));
    let loaded_at = status["loaded_at"].as_str().unwrap_or_default();
    assert!(
        loaded_at.len() >= 20 && loaded_at.contains('T') && loaded_at.ends_with('Z'),
        "loaded_at should be RFC 3339, got {loaded_at:?}"
    );
    let web = &status["listeners"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["address"], "127.0.0.1:0", "the configured address");
    assert_eq!(
        web["bound"][0],
        proxy.addr("web").to_string(),
        "bound should be the actual address: {status:#}"
    );
    assert_eq!(status["routes"][0]["name"], "all");
    assert_eq!(status["routes"][0]["upstream"], "echo@internal");
    assert_eq!(status["upstreams"][0]["name"], "app");
    assert_eq!(
        status["upstreams"][0]["targets"][0]["address"],
        "127.0.0.1:9"
    );
    assert!(status["filters"].is_array(), "filters: {status:#}");
}

#[tokio::test]
async fn a_failed_reload_keeps_the_generation_and_shows_errors() {
    let conf = basic_conf("", "");
    let proxy = Proxy::start(&conf);
    conf.write(
        "broken.yaml",
        "routes:\n  - { name: x, upstream: nowhere }\n",
    );
    proxy.reload();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = proxy.status().await;
        if status["last_reload"]["ok"] == false {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed reload never showed in /status: {status:#}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status["generation"], 1,
        "a failed reload must not move the generation"
    );
    let errors = status["last_reload"]["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.contains("broken.yaml"))),
        "errors should name the file: {errors:?}"
    );
    // Still serving the old configuration.
    let resp = client()
        .get(proxy.url("web", "/still"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET after a failed reload: {e}"));
    assert_eq!(resp.status(), 200);

    conf.remove("broken.yaml");
    proxy.reload();
    let status = proxy.wait_for_generation(2).await;
    assert_eq!(status["last_reload"]["ok"], true, "{status:#}");
}

#[tokio::test]
async fn a_reload_moves_a_listener_without_restart() {
    let conf = basic_conf("", "");
    let proxy = Proxy::start(&conf);
    let old = proxy.addr("web");
    conf.write(
        "portcullis.yaml",
        "admin: { address: 127.0.0.1:0 }
listeners:
  - { name: web, address: 127.0.0.1:0 }
  - { name: other, address: 127.0.0.1:0 }
routes:
  - { name: all, upstream: echo@internal }
",
    );
    proxy.reload();
    let status = proxy.wait_for_generation(2).await;
    assert!(
        proxy.wait_for_log("listening listener=other", Duration::from_secs(10)),
        "the new listener should be bound and logged:\n{}",
        proxy.logs()
    );
    assert_eq!(
        proxy.addr("web"),
        old,
        "an unchanged listener keeps its socket"
    );
    let resp = client()
        .get(proxy.url("other", "/new"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET on the added listener: {e}\n{status:#}"));
    assert_eq!(resp.status(), 200);

    // Removing it again closes its socket; `web` keeps serving.
    let other = proxy.addr("other");
    conf.write(
        "portcullis.yaml",
        "admin: { address: 127.0.0.1:0 }
listeners:
  - { name: web, address: 127.0.0.1:0 }
routes:
  - { name: all, upstream: echo@internal }
",
    );
    proxy.reload();
    proxy.wait_for_generation(3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(other).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the removed listener {other} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client()
        .get(proxy.url("web", "/after"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET on the kept listener: {e}"));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn metrics_expose_requests_and_reloads() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let c = client();
    for _ in 0..3 {
        let resp = c
            .get(proxy.url("web", "/m"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /m: {e}"));
        assert_eq!(resp.status(), 200);
    }
    let resp = c
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ctype.starts_with("text/plain"), "content-type {ctype:?}");
    let text = resp.text().await.unwrap_or_default();
    for want in [
        r#"portcullis_requests_total{listener="web",route="all",code="2xx"} 3"#,
        r#"portcullis_request_duration_seconds_count{route="all"} 3"#,
        "portcullis_config_generation 1",
        r#"portcullis_reloads_total{result="ok"} 1"#,
        r#"portcullis_connections_open{listener="web"}"#,
        "# TYPE portcullis_upstream_errors_total counter",
        "# TYPE portcullis_filter_failures_total counter",
    ] {
        assert!(
            text.contains(want),
            "expected {want:?} in /metrics:\n{text}"
        );
    }
}

#[tokio::test]
async fn post_reload_only_when_enabled() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let resp = client()
        .post(proxy.admin_url("/reload"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /reload: {e}"));
    assert_eq!(resp.status(), 404, "admin.reload is off by default");

    let conf = ConfDir::with(
        "admin: { address: 127.0.0.1:0, reload: true }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: all, upstream: echo@internal }]
",
    );
    let proxy = Proxy::start(&conf);
    let resp = client()
        .post(proxy.admin_url("/reload"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /reload: {e}"));
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["ok"], true, "{body}");
    assert!(
        body["generation"].as_u64().is_some_and(|g| g >= 2),
        "{body}"
    );
}

#[tokio::test]
async fn removing_a_listener_lets_its_in_flight_request_finish() {
    let backend = Backend::slow("slow", Duration::from_secs(2));
    let with_other = format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
  - {{ name: other, address: 127.0.0.1:0 }}
routes:
  - {{ name: slow, upstream: slow }}
upstreams:
  - {{ name: slow, targets: [{{ address: {} }}] }}
",
        backend.addr()
    );
    let conf = ConfDir::with(&with_other);
    let proxy = Proxy::start(&conf);
    let url = proxy.url("other", "/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while backend.requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conf.write(
        "portcullis.yaml",
        with_other.replace("  - { name: other, address: 127.0.0.1:0 }\n", ""),
    );
    proxy.reload();
    proxy.wait_for_generation(2).await;
    assert!(
        proxy.wait_for_log("stopped listening", Duration::from_secs(5)),
        "the reload should have removed `other`:\n{}",
        proxy.logs()
    );
    let resp = in_flight
        .await
        .unwrap_or_else(|e| panic!("client task: {e}"))
        .unwrap_or_else(|e| panic!("the in-flight request was dropped by the reload: {e}"));
    assert_eq!(resp.status(), 200, "the in-flight request should complete");
}

/// Waits until `/status` shows a failed reload; returns it.
async fn failed_reload(proxy: &Proxy) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = proxy.status().await;
        if status["last_reload"]["ok"] == false {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed reload never showed in /status: {status:#}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reload_that_changes_workers_is_refused_naming_the_field() {
    let conf = basic_conf("", "workers: 2\n");
    let proxy = Proxy::start(&conf);
    conf.write(
        "portcullis.yaml",
        "admin: { address: 127.0.0.1:0 }
listeners:
  - { name: web, address: 127.0.0.1:0 }
routes:
  - { name: all, upstream: echo@internal }
  - { name: new, match: { path_prefix: /new }, upstream: echo@internal }
workers: 3
",
    );
    proxy.reload();
    let status = failed_reload(&proxy).await;
    assert_eq!(status["generation"], 1, "{status:#}");
    let errors = status["last_reload"]["errors"].to_string();
    assert!(
        errors.contains(
            "portcullis.yaml:7: workers: the process runs 2 worker(s), the configuration asks for 3"
        ) && errors.contains("--upgrade-from"),
        "the error names file, line and field, and what applies it: {errors}"
    );
    // The last good configuration serves on: the new route is not there.
    let resp = client()
        .get(proxy.url("web", "/new"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET after the refused reload: {e}"));
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(body["route"], "all", "{body}");
}

#[tokio::test]
async fn a_reload_moves_the_admin_listener() {
    let conf = basic_conf("", "");
    let proxy = Proxy::start(&conf);
    let old = proxy.addr("admin");
    conf.write(
        "portcullis.yaml",
        "admin: { address: 127.0.0.2:0 }
listeners:
  - { name: web, address: 127.0.0.1:0 }
routes:
  - { name: all, upstream: echo@internal }
",
    );
    proxy.reload();
    // (`Proxy::addr` would read the `stopped listening` line of the old address.)
    let line = "listening listener=admin address=127.0.0.2:";
    assert!(
        proxy.wait_for_log(line, Duration::from_secs(10)),
        "the admin listener was not rebound:\n{}",
        proxy.logs()
    );
    let logs = proxy.logs();
    let port = logs
        .split(line)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    let new = format!("127.0.0.2:{port}");
    let status: serde_json::Value = client()
        .get(format!("http://{new}/status"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/status on {new}: {e}\n{logs}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(status["generation"], 2, "{status:#}");
    let ready = client().get(format!("http://{new}/ready")).send().await;
    assert_eq!(ready.map(|r| r.status().as_u16()).ok(), Some(200));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The old address no longer answers.
    while tokio::net::TcpStream::connect(old).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old admin address {old} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
