//! Serving: protocols, limits a client meets, timeouts, workers, graceful shutdown.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// A config with an admin listener and listener `web` (both on port 0) routing every
/// request to `echo@internal`; `limits` is the listener's `limits:` block (or empty),
/// `extra` is appended at the top level.
pub fn basic_conf(limits: &str, extra: &str) -> ConfDir {
    let limits = if limits.is_empty() {
        String::new()
    } else {
        format!(", limits: {{ {limits} }}")
    };
    ConfDir::with(&format!(
        "admin: {{ address: 127.0.0.1:0 }}
listeners:
  - {{ name: web, address: 127.0.0.1:0{limits} }}
routes:
  - {{ name: all, upstream: echo@internal }}
{extra}"
    ))
}

async fn get_json(c: &reqwest::Client, url: &str, proxy: &Proxy) -> (reqwest::Version, Value) {
    let resp = c
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e}\nproxy stderr:\n{}", proxy.logs()));
    assert_eq!(resp.status(), 200, "GET {url}: expected 200");
    let version = resp.version();
    let body = resp
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body is not JSON: {e}"));
    (version, body)
}

#[tokio::test]
async fn logs_one_listening_line_per_bound_address() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let logs = proxy.logs();
    for name in ["web", "admin"] {
        let n = logs
            .lines()
            .filter(|l| l.contains(&format!("listening listener={name} address=127.0.0.1:")))
            .count();
        assert_eq!(
            n, 1,
            "expected one `listening listener={name}` line in:\n{logs}"
        );
    }
    assert_ne!(
        proxy.addr("web").port(),
        0,
        "the logged port must be the bound one"
    );
}

#[tokio::test]
async fn http1_keep_alive_reuses_one_connection() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let c = client();
    let mut peers = Vec::new();
    for i in 0..3 {
        let (version, body) = get_json(&c, &proxy.url("web", &format!("/k/{i}")), &proxy).await;
        assert_eq!(version, reqwest::Version::HTTP_11);
        assert_eq!(body["path"], format!("/k/{i}"), "echo body: {body}");
        peers.push(body["client_address"].clone());
    }
    assert!(
        peers.windows(2).all(|w| w[0] == w[1]),
        "keep-alive should reuse one connection (one client port), saw {peers:?}"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_on_the_same_port() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let c = h2_client();
    let (version, body) = get_json(&c, &proxy.url("web", "/over-h2?x=1"), &proxy).await;
    assert_eq!(
        version,
        reqwest::Version::HTTP_2,
        "expected an HTTP/2 response"
    );
    assert_eq!(body["path"], "/over-h2");
    assert_eq!(body["query"], "x=1");
    // Concurrent streams on one connection.
    let urls: Vec<String> = (0..5)
        .map(|i| proxy.url("web", &format!("/s/{i}")))
        .collect();
    let results = futures_util::future::join_all(urls.iter().map(|u| c.get(u).send())).await;
    for (u, r) in urls.iter().zip(results) {
        let r = r.unwrap_or_else(|e| panic!("h2 GET {u} failed: {e}"));
        assert_eq!(r.status(), 200, "h2 GET {u}");
    }
}

#[tokio::test]
async fn oversized_headers_get_431_with_a_body() {
    let proxy = Proxy::start(&basic_conf("max_header_bytes: 4KiB, max_headers: 20", ""));
    let c = client();

    let resp = c
        .get(proxy.url("web", "/big"))
        .header("x-big", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap_or_else(|e| panic!("expected a 431 response, got an error: {e}"));
    assert_eq!(resp.status(), 431, "8 KiB of headers over a 4 KiB limit");
    let text = resp.text().await.unwrap_or_default();
    assert!(
        text.contains("too large"),
        "431 body should say why, got {text:?}"
    );

    let mut req = c.get(proxy.url("web", "/many"));
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("expected a 431 response, got an error: {e}"));
    assert_eq!(resp.status(), 431, "25 header fields over a limit of 20");
    let text = resp.text().await.unwrap_or_default();
    assert!(
        text.contains("too many"),
        "431 body should say why, got {text:?}"
    );

    // Much larger than the socket buffers: the client must still see the 431, not a reset.
    let resp = c
        .get(proxy.url("web", "/huge"))
        .header("x-huge", "a".repeat(1024 * 1024))
        .send()
        .await
        .unwrap_or_else(|e| panic!("expected a 431 for 1 MiB of headers, got an error: {e}"));
    assert_eq!(resp.status(), 431);

    // HTTP/2 heads meet the same limits.
    let h2 = h2_client();
    let mut req = h2.get(proxy.url("web", "/many-h2"));
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "1");
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("expected a 431 over h2, got an error: {e}"));
    assert_eq!(resp.status(), 431, "25 header fields over h2");
    let resp = h2
        .get(proxy.url("web", "/big-h2"))
        .header("x-big", "a".repeat(8 * 1024))
        .send()
        .await
        .unwrap_or_else(|e| panic!("expected a 431 over h2, got an error: {e}"));
    assert_eq!(resp.status(), 431, "8 KiB of headers over h2");

    // Under the limits all is well.
    let resp = c
        .get(proxy.url("web", "/fine"))
        .header("x-ok", "a".repeat(1024))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /fine: {e}"));
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_400_and_close() {
    let proxy = Proxy::start(&basic_conf("", ""));
    for (what, request) in [
        (
            "CL + TE",
            &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        ),
        (
            "TE + CL",
            b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing CLs",
            b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde",
        ),
    ] {
        let mut raw = Raw::connect(proxy.addr("web")).await;
        let _ = raw.send(request).await;
        let (bytes, closed) = raw.read_to_close(Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 400"),
            "{what}: expected a 400, got {text:?}"
        );
        assert!(text.contains("Content-Length"), "{what}: the body should say why: {text:?}");
        assert!(closed, "{what}: the connection should be closed after the 400");
    }
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off() {
    let proxy = Proxy::start(&basic_conf("header_timeout: 1s", ""));
    let mut raw = Raw::connect(proxy.addr("web")).await;
    let _ = raw.send(b"GET / HTTP/1.1\r\nhost: x\r\n").await;
    let started = Instant::now();
    let (bytes, closed) = raw.read_to_close(Duration::from_secs(15)).await;
    assert!(
        closed,
        "a head not finished within header_timeout should close the connection"
    );
    assert!(
        bytes.is_empty(),
        "nothing should be answered, got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed after {:?}, before the 1s header timeout",
        started.elapsed()
    );

    // A connection that never sends anything is closed too.
    let mut silent = Raw::connect(proxy.addr("web")).await;
    let (_, closed) = silent.read_to_close(Duration::from_secs(15)).await;
    assert!(
        closed,
        "a silent connection should be closed by the header timeout"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_but_slow_responses_are_not() {
    let backend = Backend::slow("slow", Duration::from_millis(2500));
    let proxy = Proxy::start(&basic_conf(
        "idle_timeout: 1s",
        &format!(
            "  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: slow }}
upstreams:
  - {{ name: slow, targets: [{{ address: {} }}] }}
",
            backend.addr()
        ),
    ));

    let mut raw = Raw::connect(proxy.addr("web")).await;
    let _ = raw.send(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let resp = raw.read_response(Duration::from_secs(10)).await;
    assert!(
        resp.as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "expected a 200 first, got {resp:?}"
    );
    let (_, closed) = raw.read_to_close(Duration::from_secs(15)).await;
    assert!(
        closed,
        "an idle keep-alive connection should be closed after idle_timeout"
    );

    // A response that takes longer than the idle timeout is in flight, not idle.
    let resp = client()
        .get(proxy.url("web", "/slow"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("a slow upstream response was cut: {e}\n{}", proxy.logs()));
    assert_eq!(resp.status(), 200);
}

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
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.requests() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
async fn two_workers_both_serve() {
    let proxy = Proxy::start(&basic_conf("", "workers: 2\n"));
    assert_eq!(proxy.status().await["workers"], 2);
    // SO_REUSEPORT spreads connections by hash: with 40 fresh connections, the odds
    // that one worker gets them all are 2^-39.
    for i in 0..40 {
        let c = client();
        let resp = c
            .get(proxy.url("web", &format!("/w/{i}")))
            .header("connection", "close")
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status(), 200);
    }
    for worker in ["worker{index=0}", "worker{index=1}"] {
        assert!(
            proxy.wait_for_log(&format!("{worker}: access"), Duration::from_secs(5)),
            "expected access log lines from {worker}:\n{}",
            proxy.logs()
        );
    }
}

#[tokio::test]
async fn access_log_lines_and_json_format() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let resp = client()
        .get(proxy.url("web", "/logged?q=1"))
        .header("host", "example.test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /logged: {e}"));
    assert_eq!(resp.status(), 200);
    assert!(
        proxy.wait_for_log("path=\"/logged?q=1\"", Duration::from_secs(5)),
        "expected an access line for /logged:\n{}",
        proxy.logs()
    );
    let line = proxy
        .log_lines()
        .into_iter()
        .find(|l| l.contains("/logged"))
        .unwrap_or_default();
    for want in [
        " access: ",
        "method=\"GET\"",
        "host=\"example.test\"",
        "status=200",
        "route=\"all\"",
        "upstream=\"echo@internal\"",
        "duration_ms=",
    ] {
        assert!(line.contains(want), "access line lacks {want:?}: {line}");
    }

    // --log-format json: every line is a JSON object.
    let conf = basic_conf("", "");
    let proxy = Proxy::try_start_with(&conf, &["--log-format", "json"], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    for line in proxy.log_lines() {
        let v: Result<Value, _> = serde_json::from_str(&line);
        assert!(v.is_ok(), "not a JSON line: {line}");
    }

    // RUST_LOG=warn silences the access log.
    let proxy = Proxy::try_start_with(&conf, &[], &[("RUST_LOG", "warn,portcullis::app=info")])
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = client().get(proxy.url("web", "/quiet")).send().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !proxy.logs().contains("/quiet"),
        "RUST_LOG=warn should silence the access log:\n{}",
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
