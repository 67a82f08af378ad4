//! The configured access log (`access_log:`) through the real binary: JSON lines with
//! the documented fields (trace id, filter outcomes, upstream address, bytes, timing),
//! text lines after a reload, and a rotation: the file renamed, SIGUSR1, new lines in
//! a new file and none lost across the two.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{self, Backend, ConfDir, Proxy};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn conf(backend: &Backend, format: &str) -> String {
    format!(
        r#"
admin: {{ address: 127.0.0.1:0 }}
listeners: [{{ name: web, address: 127.0.0.1:0 }}]
routes:
  - {{ name: r, upstream: app, filters: [stamp] }}
  - {{ name: denied, match: {{ path_prefix: /deny }}, upstream: app, filters: [stamp, nobody] }}
filters:
  - name: stamp
    builtin: headers
    limits: {{ callback_timeout: 5s }}
    config: {{ response: {{ set: {{ x-seen: "1" }} }} }}
  - name: nobody
    builtin: ip-allowlist
    limits: {{ callback_timeout: 5s }}
    config: {{ deny: [127.0.0.0/8] }}
upstreams:
  - name: app
    targets: [{{ address: "{}" }}]
# Spans go nowhere (a closed port): the trace id is what the log needs.
tracing: {{ otlp: {{ endpoint: "http://127.0.0.1:9/v1/traces", timeout: 100ms }}, sample_ratio: 0 }}
access_log: {{ format: {format}, path: logs/access.log }}
"#,
        backend.addr()
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits (10 s) until `paths` hold `n` lines between them.
fn wait_for_lines(paths: &[&Path], n: usize) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<Vec<String>> = paths.iter().map(|p| lines(p)).collect();
        let total: usize = got.iter().map(Vec::len).sum();
        if total >= n || Instant::now() > deadline {
            assert_eq!(total, n, "expected {n} lines in {paths:?}, got {got:#?}");
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn setup(format: &str) -> (Backend, ConfDir, Proxy) {
    let backend = Backend::echo("b");
    let dir = ConfDir::new();
    std::fs::create_dir_all(dir.path().join("logs"))
        .unwrap_or_else(|e| panic!("cannot make logs/: {e}"));
    dir.write("portcullis.yaml", conf(&backend, format));
    let proxy = Proxy::start(&dir);
    (backend, dir, proxy)
}

#[tokio::test]
async fn binary_json_lines_carry_the_documented_fields() {
    let (backend, dir, proxy) = setup("json");
    let log = dir.path().join("logs/access.log");
    let tp = format!("00-{TRACE_ID}-b7ad6b7169203331-01");
    let resp = support::get_with(&proxy.url("web", "/json?q=1"), &[("traceparent", &tp)]).await;
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap_or_default();
    let denied = support::get_with(&proxy.url("web", "/deny"), &[]).await;
    assert_eq!(denied.status(), 403);

    let got = wait_for_lines(&[&log], 2);
    let parse = |l: &String| -> Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    };
    let ok = parse(&got[0][0]);
    let keys: Vec<&str> = ok
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut documented = vec![
        "time",
        "listener",
        "client",
        "method",
        "host",
        "path",
        "status",
        "route",
        "upstream",
        "trace_id",
        "filters",
        "request_bytes",
        "bytes_sent",
        "duration_ms",
        "filters_ms",
        "upstream_ms",
        "total_ms",
    ];
    let mut keys_sorted = keys.clone();
    keys_sorted.sort_unstable();
    documented.sort_unstable();
    assert_eq!(keys_sorted, documented, "the fields of {ok:#}");
    assert_eq!(ok["listener"], "web");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/json?q=1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "r");
    assert_eq!(ok["upstream"], backend.addr().to_string());
    assert_eq!(ok["trace_id"], TRACE_ID, "the caller's trace");
    assert_eq!(ok["filters"], "stamp:continue");
    assert_eq!(
        ok["bytes_sent"],
        body.len() as u64,
        "the body the client got"
    );
    let ms = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v:#}"));
    assert!(ms(&ok, "upstream_ms") > 0.0);
    assert!(ms(&ok, "filters_ms") > 0.0);
    assert!(ms(&ok, "upstream_ms") + ms(&ok, "filters_ms") <= ms(&ok, "duration_ms") + 0.01);
    assert!(ms(&ok, "duration_ms") <= ms(&ok, "total_ms"), "{ok:#}");
    assert!(
        ok["client"]
            .as_str()
            .is_some_and(|c| c.starts_with("127.0.0.1:")),
        "{ok:#}"
    );

    let deny = parse(&got[0][1]);
    assert_eq!(deny["status"], 403);
    assert_eq!(deny["route"], "denied");
    assert_eq!(deny["filters"], "stamp:continue,nobody:local");
    assert!(
        deny["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "a new trace even unsampled: {deny:#}"
    );
    assert_eq!(deny["upstream_ms"], 0.0, "never sent upstream: {deny:#}");
    assert_eq!(backend.requests(), 1);

    // A reload switches to text: `key=value`, `-` for what is missing.
    dir.write("portcullis.yaml", conf(&backend, "text"));
    proxy.wait_for_generation(2).await;
    let resp = support::get_with(&proxy.url("web", "/text"), &[]).await;
    assert_eq!(resp.status(), 200);
    let got = wait_for_lines(&[&log], 3);
    let text = &got[0][2];
    assert!(text.starts_with("time="), "{text}");
    assert!(text.contains(" method=GET host=127.0.0.1:"), "{text}");
    assert!(
        text.contains(" path=/text status=200 route=r upstream="),
        "{text}"
    );
    assert!(
        text.contains(" filters=stamp:continue request_bytes=- bytes_sent="),
        "{text}"
    );
}

#[tokio::test]
async fn binary_a_rotated_log_is_reopened_on_sigusr1_and_no_line_is_lost() {
    let (_backend, dir, proxy) = setup("json");
    let log = dir.path().join("logs/access.log");
    let rotated = dir.path().join("logs/access.log.1");
    let url = proxy.url("web", "/rotate");
    let client = support::client();
    // Requests go on all along: some before the rename, some between the rename and
    // the signal (still into the renamed file), some after.
    let load = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..150 {
                if client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
                {
                    ok += 1;
                }
            }
            ok
        })
    };
    wait_until("20 lines", || lines(&log).len() >= 20).await;
    std::fs::rename(&log, &rotated).unwrap_or_else(|e| panic!("cannot rename: {e}"));
    wait_until("40 lines", || lines(&rotated).len() >= 40).await;
    proxy.signal(libc::SIGUSR1);
    assert!(
        proxy.wait_for_log("access log reopened", Duration::from_secs(10)),
        "{}",
        proxy.logs()
    );
    let ok: usize = load.await.unwrap_or_else(|e| panic!("load task: {e}"));
    assert_eq!(ok, 150, "every request answered");
    let got = wait_for_lines(&[&rotated, &log], 150);
    assert!(
        got[0].len() >= 40,
        "lines before the signal stay in the renamed file"
    );
    assert!(
        !got[1].is_empty(),
        "lines after the signal go to the new file"
    );
    for line in got.iter().flatten() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["path"], "/rotate", "{line}");
    }
    let text = proxy.metrics().await;
    assert_eq!(
        support::sample(&text, "portcullis_access_log_dropped_total"),
        0
    );
}

/// Waits (20 s) for `cond`, letting the test's other tasks run meanwhile.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
