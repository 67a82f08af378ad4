//! The graceful drain on SIGTERM under load: nobody who got a connection loses a
//! request, `/ready` turns 503 first, idle connections do not hold the exit up.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::basic_conf;
use crate::support::*;

/// A config with `workers: 2`, a `/slow` route to `backend` and the `shutdown` block.
fn conf(backend: &Backend, shutdown: &str) -> ConfDir {
    basic_conf(
        "",
        &format!(
            "  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: slow }}
upstreams:
  - {{ name: slow, targets: [{{ address: {} }}] }}
workers: 2
shutdown: {{ {shutdown} }}
",
            backend.addr()
        ),
    )
}

async fn wait_ready_status(proxy: &Proxy, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = client().get(proxy.admin_url("/ready")).send().await;
        if ready.as_ref().is_ok_and(|r| r.status() == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/ready should answer {want}, got {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request_and_exits_0() {
    let backend = Backend::slow("slow", Duration::from_secs(2));
    let dir = conf(&backend, "drain_timeout: 20s");
    let mut proxy = Proxy::try_start_with(&dir, &[], &[("RUST_LOG", "info,access=off")])
        .unwrap_or_else(|e| panic!("{e}"));
    let load = Load::start(proxy.addr("web"), "/load", 8, 4, 2);
    assert!(
        load.wait_for_ok(3000, Duration::from_secs(60)).await,
        "the load did not get going: {:?}\n{}",
        load.tally,
        proxy.logs()
    );

    let url = proxy.url("web", "/slow");
    let slow = tokio::spawn(async move { client().get(url).send().await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.requests() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = load.tally.ok.load(Ordering::Relaxed);
    proxy.signal(libc::SIGTERM);
    wait_ready_status(&proxy, 503).await;

    let status = proxy.wait_exit(Duration::from_secs(30));
    let tally = std::sync::Arc::clone(&load.tally);
    let ended = load.finish(Duration::from_secs(10)).await;
    let failures = tally.failures();
    assert!(
        failures.is_empty(),
        "{} request(s) failed during the drain (of {} answered): {:#?}\n{}",
        failures.len(),
        tally.ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(10)],
        proxy.logs()
    );
    assert!(
        ended,
        "every client should end refused once the proxy is gone: {tally:?}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "expected exit code 0 after the drain, got {status:?}\n{}",
        proxy.logs()
    );
    let resp = slow
        .await
        .unwrap_or_else(|e| panic!("client task: {e}"))
        .unwrap_or_else(|e| panic!("the in-flight slow request failed: {e}"));
    assert_eq!(resp.status(), 200, "the in-flight slow request");
    assert_eq!(
        resp.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "a response finished during the drain asks the client to close"
    );
    assert!(
        tally.told_to_close.load(Ordering::Relaxed) > 0,
        "keep-alive clients should have been told to close: {tally:?}"
    );
    eprintln!(
        "drain under load: {} ok before SIGTERM, {} in all, {} told to close, {} h2 unsent, \
         {} refused, 0 failed",
        before,
        tally.ok.load(Ordering::Relaxed),
        tally.told_to_close.load(Ordering::Relaxed),
        tally.unsent.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
}

#[tokio::test]
async fn accept_grace_keeps_accepting_while_ready_says_503() {
    let backend = Backend::echo("unused");
    let dir = conf(&backend, "accept_grace: 1500ms, drain_timeout: 5s");
    let mut proxy = Proxy::start(&dir);
    let addr = proxy.addr("web");
    proxy.signal(libc::SIGTERM);
    wait_ready_status(&proxy, 503).await;
    // Load balancers are told first; new connections are still served meanwhile.
    let resp = client()
        .get(proxy.url("web", "/during-grace"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("a new connection during the accept grace: {e}"));
    assert_eq!(resp.status(), 200);
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.logs());
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the listener should be closed after exit");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_does_not_hold_the_exit_up() {
    let backend = Backend::echo("unused");
    let dir = conf(&backend, "drain_timeout: 30s");
    let mut proxy = Proxy::start(&dir);
    let mut idle = Raw::connect(proxy.addr("web")).await;
    idle.send(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let first = idle.read_response(Duration::from_secs(5)).await;
    assert!(
        first
            .as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "first response: {first:?}"
    );
    // A fresh connection that never sends a byte either.
    let mut silent = Raw::connect(proxy.addr("web")).await;
    let started = Instant::now();
    proxy.signal(libc::SIGTERM);
    let (_, closed) = idle.read_to_close(Duration::from_secs(10)).await;
    assert!(closed, "the idle connection should be closed by the drain");
    let (_, closed) = silent.read_to_close(Duration::from_secs(10)).await;
    assert!(
        closed,
        "the silent connection should be closed by the drain"
    );
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.logs());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connections held the exit up for {:?} (drain_timeout is 30 s)",
        started.elapsed()
    );
}
