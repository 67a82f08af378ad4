//! A reload that fails after building leaves everything live exactly as it was,
//! including what the filters it would have kept reach with `http_call`.

use std::time::{Duration, Instant};

use crate::support::*;

/// The config: filter `caller` (the probe, `call:auth`) on every request, its
/// `http_call` going to upstream `auth` at `auth`; `extra` is appended as a document
/// of its own, so that no line above it moves.
fn conf_text(wasm: &std::path::Path, auth: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0 }}
routes:
  - {{ name: r, listeners: [web], filters: [caller], upstream: echo@internal }}
filters:
  - {{ name: caller, wasm: {}, config: \"call:auth\" }}
upstreams:
  - {{ name: auth, targets: [{{ address: {auth} }}] }}
{extra}",
        wasm.display()
    )
}

/// Which backend the filter's `http_call` reached (the echo backend's id).
async fn called(proxy: &Proxy) -> String {
    let url = proxy.url("web", "/x");
    let resp = client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    let echo: serde_json::Value = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url} not JSON: {e}"));
    let call_body = echo["headers"]["x-call-body"].as_str().unwrap_or_default();
    let call: serde_json::Value = serde_json::from_str(call_body).unwrap_or_default();
    call["backend"].as_str().unwrap_or("<none>").to_string()
}

#[tokio::test]
async fn a_reload_failing_to_bind_leaves_http_call_on_the_old_upstreams() {
    let a = Backend::echo("a");
    let b = Backend::echo("b");
    let wasm = crate::wasm_build::filter("probe");
    let conf = ConfDir::with(&conf_text(&wasm, a.addr(), ""));
    let proxy = Proxy::start(&conf);
    assert_eq!(called(&proxy).await, "a");

    // The new config moves `auth` to b (the filter itself is unchanged, so the new
    // snapshot keeps its VMs) and adds a listener on an address that is taken: the
    // build succeeds, binding fails.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
    conf.write(
        "portcullis.yaml",
        conf_text(
            &wasm,
            b.addr(),
            &format!("---\nlisteners: [{{ name: extra, address: {addr} }}]\n"),
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = proxy.status().await;
        if status["last_reload"]["ok"] == false {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "expected the reload to fail: {status:#}\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status["generation"], 1, "{status:#}");
    assert!(
        status["last_reload"]["errors"]
            .to_string()
            .contains("cannot listen"),
        "the reload should fail binding {addr}: {status:#}"
    );
    for _ in 0..5 {
        assert_eq!(
            called(&proxy).await,
            "a",
            "after the failed reload, the live filter must still call the live upstream"
        );
    }
    assert_eq!(
        b.requests(),
        0,
        "nothing may reach the upstream of a failed reload"
    );

    // Once the address is free the same config loads, and the calls move.
    drop(taken);
    proxy.reload();
    proxy.wait_for_generation(2).await;
    assert_eq!(called(&proxy).await, "b");
}
