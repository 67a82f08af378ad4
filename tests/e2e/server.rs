//! Serving: protocols, logs, workers; limits and timeouts in [`limits`], slow bodies
//! in [`slow_clients`], start and shutdown in [`lifecycle`], the drain under load in
//! [`drain`], abusive clients in [`abuse`], binary upgrades in [`handover`], the
//! HTTP/2 settings a listener announces in [`http2`].

mod abuse;
mod drain;
mod handover;
mod http2;
mod lifecycle;
mod limits;
mod slow_clients;

use std::time::Duration;

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

/// The size of [`big_response_proxy`]'s response.
pub const BIG_BODY: usize = 64 * 1024 * 1024;

/// A backend answering every request with [`BIG_BODY`] bytes, behind a proxy whose
/// listener `web` has `idle_timeout: 1s` and routes `/big` to it.
pub fn big_response_proxy() -> (Backend, Proxy) {
    let backend = Backend::start(|_| Reply {
        status: 200,
        headers: Vec::new(),
        body: vec![b'x'; BIG_BODY],
        delay: Duration::ZERO,
    });
    let proxy = Proxy::start(&basic_conf(
        "idle_timeout: 1s",
        &format!(
            "  - {{ name: big, match: {{ path_prefix: /big }}, upstream: big }}
upstreams:
  - {{ name: big, targets: [{{ address: {} }}] }}
",
            backend.addr()
        ),
    ));
    (backend, proxy)
}

/// The value of `portcullis_client_limits_total` for `limit` on listener `web`.
pub async fn limit_count(proxy: &Proxy, limit: &str) -> u64 {
    let text = client()
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    let series = format!("portcullis_client_limits_total{{listener=\"web\",limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
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

/// The responses in `bytes` (as read to the close), split at their status lines.
fn responses(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let mut starts: Vec<usize> = text.match_indices("HTTP/1.").map(|(i, _)| i).collect();
    starts.push(text.len());
    starts
        .windows(2)
        .map(|w| text[w[0]..w[1]].to_owned())
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let mut raw = Raw::connect(proxy.addr("web")).await;
    // One write: bodies by length and chunked (with a trailer), a HEAD (whose answer
    // has a length but no body), and a last request that asks to close.
    raw.send(
        b"GET /p/1 HTTP/1.1\r\nhost: x\r\n\r\n\
POST /p/2 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
POST /p/3 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nwor\r\n4;x=y\r\nld!!\r\n0\r\nx-t: 1\r\n\r\n\
HEAD /p/4 HTTP/1.1\r\nhost: x\r\n\r\n\
GET /p/5 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap_or_else(|e| panic!("send: {e}"));
    let (bytes, closed) = raw.read_to_close(Duration::from_secs(10)).await;
    assert!(closed, "the connection closes after the request that asked");
    let got = responses(&bytes);
    assert_eq!(got.len(), 5, "five answers, in order: {got:#?}");
    for (i, (resp, body_bytes)) in got.iter().zip([0, 5, 7, 0, 0]).enumerate() {
        let lower = resp.to_lowercase();
        assert!(
            resp.starts_with("HTTP/1.1 200 OK\r\n"),
            "answer {i}: {resp}"
        );
        assert!(
            lower.contains("\r\ndate: "),
            "answer {i} has a Date: {resp}"
        );
        if i == 3 {
            // HEAD: the head only, whose length is that of the GET's body.
            assert!(
                resp.ends_with("\r\n\r\n"),
                "no body after a HEAD's head: {resp:?}"
            );
            assert!(lower.contains("content-length: "), "{resp}");
            continue;
        }
        assert!(
            resp.contains(&format!("\"path\":\"/p/{}\"", i + 1)),
            "answer {i} is request {}'s: {resp}",
            i + 1
        );
        assert!(
            resp.contains(&format!("\"body_bytes\":{body_bytes}")),
            "answer {i} counted the body: {resp}"
        );
    }
    assert!(
        got[4].to_lowercase().contains("connection: close"),
        "the last answer says it closes: {}",
        got[4]
    );
}

#[tokio::test]
async fn http_1_0_closes_unless_asked_to_keep_alive() {
    let proxy = Proxy::start(&basic_conf("", ""));
    let mut raw = Raw::connect(proxy.addr("web")).await;
    raw.send(b"GET /old HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let first = raw
        .read_response(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer\n{}", proxy.logs()));
    assert!(first.starts_with("HTTP/1.0 200 OK\r\n"), "{first}");
    assert!(
        first.to_lowercase().contains("connection: keep-alive"),
        "a kept-alive HTTP/1.0 answer says so: {first}"
    );
    // The same connection serves on; without keep-alive it closes after the answer.
    raw.send(b"GET /old2 HTTP/1.0\r\nhost: x\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let (bytes, closed) = raw.read_to_close(Duration::from_secs(10)).await;
    let second = String::from_utf8_lossy(&bytes);
    assert!(closed, "HTTP/1.0 without keep-alive closes: {second}");
    assert!(second.starts_with("HTTP/1.0 200 OK\r\n"), "{second}");
    assert!(second.contains("\"path\":\"/old2\""), "{second}");
    assert!(
        second.to_lowercase().contains("connection: close"),
        "{second}"
    );
}
