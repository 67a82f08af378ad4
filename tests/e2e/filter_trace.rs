//! What a filter does on live traffic, through the real binary: its log lines carry
//! the request's `x-request-id`, and `POST /filters/trace` logs every ABI call of one
//! route's next N requests, then switches itself off.

use std::time::Duration;

use crate::examples::LOGGING_WAT;
use crate::support::*;

const TOKEN: &str = "operator-5d1c7e0a9b3f2468";
const VIEWER: &str = "viewer-2b9e4f7a1c6d3058";

fn conf() -> ConfDir {
    let conf = ConfDir::with(
        "admin:
  address: 127.0.0.1:0
  tokens:
    - { name: ops, role: operator, token_file: secrets/op.token }
    - { name: eyes, role: viewer, token_file: secrets/viewer.token }
listeners: [{ name: web, address: 127.0.0.1:0 }]
routes:
  - { name: traced, match: { path_prefix: /t }, filters: [wat], upstream: echo@internal }
  - { name: other, match: { path_prefix: /o }, filters: [wat], upstream: echo@internal }
filters:
  - { name: wat, wasm: filter.wat }
",
    );
    conf.write("filter.wat", LOGGING_WAT);
    conf.write("secrets/op.token", format!("{TOKEN}\n"));
    conf.write("secrets/viewer.token", format!("{VIEWER}\n"));
    conf
}

async fn send(proxy: &Proxy, path: &str, id: &str) {
    let resp = get_with(&proxy.url("web", path), &[("x-request-id", id)]).await;
    assert_eq!(resp.status(), 200, "{path} ({id})");
}

async fn post_trace(proxy: &Proxy, query: &str, token: &str) -> (u16, String) {
    let resp = client()
        .post(proxy.admin_url(&format!("/filters/trace?{query}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /filters/trace: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The trace lines of the request with id `id`.
fn traced(proxy: &Proxy, id: &str) -> Vec<String> {
    let needle = format!("request_id=\"{id}\"");
    proxy
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("portcullis::trace") && l.contains(&needle))
        .collect()
}

#[tokio::test]
async fn a_filters_log_lines_carry_the_request_id() {
    let conf = conf();
    let proxy = Proxy::start(&conf);
    send(&proxy, "/t/a", "log-id-1").await;
    let line = "a request for the wat";
    assert!(
        proxy.wait_for_log("request_id=\"log-id-1\"", Duration::from_secs(5)),
        "no log line with the request id:\n{}",
        proxy.logs()
    );
    let ours = proxy
        .log_lines()
        .into_iter()
        .find(|l| l.contains("request_id=\"log-id-1\""))
        .unwrap_or_default();
    assert!(
        ours.contains(line) && ours.contains("filter=\"wat\""),
        "the request id is not on the filter's own line: {ours}"
    );
}

#[tokio::test]
async fn a_trace_logs_the_abi_calls_of_the_next_n_requests_on_its_route_only() {
    let conf = conf();
    let proxy = Proxy::start(&conf);
    send(&proxy, "/t/before", "before-1").await;

    // A viewer may not switch a trace on; a route or filter that does not exist is
    // refused, naming it.
    let (status, _) = post_trace(&proxy, "route=traced", VIEWER).await;
    assert_eq!(status, 403, "a viewer armed a trace");
    let (status, body) = post_trace(&proxy, "route=nope", TOKEN).await;
    assert_eq!((status, body.trim()), (404, "no route named \"nope\""));
    let (status, body) = post_trace(&proxy, "route=traced&filter=nope", TOKEN).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post_trace(&proxy, "route=traced&requests=0", TOKEN).await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = post_trace(&proxy, "route=traced&filter=wat&requests=2", TOKEN).await;
    assert_eq!(status, 200, "{body}");
    let armed: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(armed["requests"], 2, "{armed}");

    send(&proxy, "/o/x", "other-1").await;
    for id in ["trace-1", "trace-2", "trace-3"] {
        send(&proxy, "/t/x", id).await;
    }
    assert!(
        proxy.wait_for_log("ABI trace finished", Duration::from_secs(5)),
        "{}",
        proxy.logs()
    );
    for (id, seq) in [("trace-1", 1), ("trace-2", 2)] {
        let lines = traced(&proxy, id);
        // The WAT filter's calls, in order: add a header, log, define a metric, count.
        let calls = [
            "proxy_add_header_map_value(0, 16, 5, 32, 5) -> 0",
            "proxy_log(2, 96, 21) -> 0",
            "proxy_define_metric(0, 48, 12, 80) -> 0",
            "proxy_increment_metric(",
        ];
        for call in calls {
            let line = lines.iter().find(|l| l.contains(call));
            let line =
                line.unwrap_or_else(|| panic!("no trace of {call} for {id}:\n{}", proxy.logs()));
            for field in [
                "route=\"traced\"",
                "filter=\"wat\"",
                &format!("request={seq}"),
                "ns=",
            ] {
                assert!(line.contains(field), "{field} missing: {line}");
            }
        }
    }
    for id in ["before-1", "other-1", "trace-3"] {
        assert_eq!(traced(&proxy, id), Vec::<String>::new(), "{id} was traced");
    }
}
