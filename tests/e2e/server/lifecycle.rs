//! Start and stop: a config that cannot serve, graceful drain on SIGTERM.

use std::time::{Duration, Instant};

use super::basic_conf;
use crate::support::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let backend = Backend::slow("slow", Duration::from_secs(2));
    let mut proxy = Proxy::start(&basic_conf(
        "",
        &format!(
            "  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: slow }}
upstreams:
  - {{ name: slow, targets: [{{ address: {} }}] }}
",
            backend.addr()
        ),
    ));
    let url = proxy.url("web", "/slow");
    let in_flight = tokio::spawn(async move { client().get(url).send().await });
    backend.wait_for_requests(1, Duration::from_secs(10)).await;
    proxy.signal(libc::SIGTERM);
    // While draining, the proxy tells load balancers it is going away.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ready = client().get(proxy.admin_url("/ready")).send().await;
        if ready.as_ref().is_ok_and(|r| r.status() == 503) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready should answer 503 while draining, got {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let resp = in_flight
        .await
        .unwrap_or_else(|e| panic!("client task: {e}"))
        .unwrap_or_else(|e| {
            panic!(
                "the in-flight request failed during drain: {e}\n{}",
                proxy.logs()
            )
        });
    assert_eq!(resp.status(), 200, "the in-flight request should complete");
    let body = resp.text().await.unwrap_or_default();
    assert!(
        body.contains("\"backend\":\"slow\""),
        "body from the slow backend: {body}"
    );
    let status = proxy.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "expected exit code 0 after draining, got {status:?}\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn run_with_a_broken_config_prints_the_errors_and_exits_1() {
    let conf = ConfDir::with(
        "listeners: [{ name: web, address: 127.0.0.1:0 }]
routes: [{ name: r, upstream: nowhere }]
",
    );
    let err = match Proxy::try_start(&conf) {
        Ok(_) => panic!("a config routing to an unknown upstream must not serve"),
        Err(e) => e,
    };
    assert!(
        err.contains("exit status: 1"),
        "expected exit code 1: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.starts_with("portcullis.yaml:2: ") && l.contains("nowhere")),
        "expected a `portcullis.yaml:2: ...` error line naming `nowhere`: {err}"
    );

    // An address that cannot be bound is a config error too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("addr: {e}"));
    let conf = ConfDir::with(&format!(
        "listeners: [{{ name: web, address: {addr} }}]\nroutes: [{{ name: r, upstream: echo@internal }}]\n"
    ));
    let err = match Proxy::try_start(&conf) {
        Ok(_) => panic!("{addr} is taken: the proxy must not start"),
        Err(e) => e,
    };
    assert!(
        err.contains("listeners.web.address: cannot listen on"),
        "expected a bind error naming the listener: {err}"
    );
}

#[tokio::test]
async fn a_second_sigterm_exits_without_waiting_for_the_drain() {
    let backend = Backend::slow("slow", Duration::from_secs(60));
    let mut proxy = Proxy::start(&basic_conf(
        "",
        &format!(
            "  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: slow }}
upstreams:
  - {{ name: slow, targets: [{{ address: {} }}], timeouts: {{ request: 120s }} }}
",
            backend.addr()
        ),
    ));
    let url = proxy.url("web", "/slow");
    let _in_flight = tokio::spawn(async move { client().get(url).send().await });
    backend.wait_for_requests(1, Duration::from_secs(10)).await;
    proxy.signal(libc::SIGTERM);
    assert!(
        proxy.wait_for_log("shutting down", Duration::from_secs(5)),
        "no shutdown log line:\n{}",
        proxy.logs()
    );
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some(),
        "a second SIGTERM should exit at once, not wait out the 60s request\n{}",
        proxy.logs()
    );
}
