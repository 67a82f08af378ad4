//! Abusive clients, each shown bounded: too many HTTP/2 streams, rapid resets,
//! oversized and endless header blocks, too many connections from one IP, too many
//! requests on one connection.

use std::time::Duration;

use super::basic_conf;
use crate::support::h2raw::{self, H2Raw};
use crate::support::*;

/// `limits` on listener `web`, and a `/slow` route to `backend`.
fn conf(limits: &str, backend: &Backend) -> ConfDir {
    basic_conf(
        limits,
        &format!(
            "  - {{ name: slow, match: {{ path_prefix: /slow }}, upstream: b }}
upstreams:
  - {{ name: b, targets: [{{ address: {} }}] }}
",
            backend.addr()
        ),
    )
}

/// A fresh HTTP/2 connection gets a 200 for `GET /after`: the proxy is still fine.
async fn still_serves(proxy: &Proxy) {
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    h2.send(&h2raw::get(1, "/after"))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let (frames, _) = h2
        .read_frames(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.stream == 1 && f.kind == h2raw::HEADERS)
        })
        .await;
    assert!(
        frames.iter().any(|f| f.stream == 1 && f.has_status(200)),
        "a well-behaved client should still get 200, got {frames:?}"
    );
}

#[tokio::test]
async fn streams_past_max_concurrent_streams_are_refused() {
    let backend = Backend::slow("b", Duration::from_secs(1));
    let dir = conf("max_concurrent_streams: 5", &backend);
    let proxy = Proxy::start(&dir);
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    let mut burst = Vec::new();
    for i in 0..20u32 {
        burst.extend(h2raw::get(2 * i + 1, "/slow"));
    }
    h2.send(&burst)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let (frames, _) = h2
        .read_frames(Duration::from_secs(10), |f| {
            f.iter().filter(|f| f.kind == h2raw::HEADERS).count()
                + f.iter().filter(|f| f.kind == h2raw::RST_STREAM).count()
                >= 20
        })
        .await;
    let refused = frames
        .iter()
        .filter(|f| f.error_code() == Some(h2raw::REFUSED_STREAM) && f.kind == h2raw::RST_STREAM)
        .count();
    let answered = frames.iter().filter(|f| f.has_status(200)).count();
    assert_eq!(
        (answered, refused),
        (5, 15),
        "5 streams served, 15 refused; frames: {frames:?}"
    );
    assert_eq!(backend.requests(), 5, "only 5 reached the upstream");
}

#[tokio::test]
async fn rapid_reset_closes_the_connection() {
    let backend = Backend::echo("b");
    let dir = conf("", &backend);
    let proxy = Proxy::start(&dir);
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    // CVE-2023-44487: open and cancel streams as fast as possible, in one write.
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        burst.extend(h2raw::get(2 * i + 1, "/slow/reset"));
        burst.extend(h2raw::rst_stream(2 * i + 1, h2raw::CANCEL));
    }
    let _ = h2.send(&burst).await;
    let (frames, closed) = h2
        .read_frames(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.kind == h2raw::GOAWAY)
        })
        .await;
    let goaway = frames.iter().find(|f| f.kind == h2raw::GOAWAY);
    assert!(
        goaway.is_some_and(|g| g.error_code() == Some(h2raw::ENHANCE_YOUR_CALM)) || closed,
        "2000 streams reset at once should close the connection (GOAWAY ENHANCE_YOUR_CALM); \
         got {} frames, closed: {closed}",
        frames.len()
    );
    assert!(
        backend.requests() < 200,
        "the resets should not reach the upstream: {} of 2000 did",
        backend.requests()
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn oversized_and_endless_header_blocks_are_bounded() {
    let backend = Backend::echo("b");
    let dir = conf("max_header_bytes: 4KiB", &backend);
    let proxy = Proxy::start(&dir);

    // One header block of 10 KiB over a 4 KiB limit: that stream is refused, the
    // connection carries on.
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    let big = "a".repeat(10 * 1024);
    let block = h2raw::request_block("/big", &[("x-big", &big)]);
    let mut out = h2raw::frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        1,
        &block,
    );
    out.extend(h2raw::get(3, "/next"));
    h2.send(&out).await.unwrap_or_else(|e| panic!("send: {e}"));
    let (frames, _) = h2
        .read_frames(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.stream == 3 && f.kind == h2raw::HEADERS)
        })
        .await;
    let first: Vec<_> = frames.iter().filter(|f| f.stream == 1).collect();
    assert!(
        first
            .iter()
            .any(|f| f.has_status(431) || f.kind == h2raw::RST_STREAM),
        "the oversized header block should get 431 or a reset, got {first:?}"
    );
    assert!(
        frames.iter().any(|f| f.stream == 3 && f.has_status(200)),
        "the next stream on the same connection should be served: {frames:?}"
    );

    // CVE-2024-27316: a header block that never ends (CONTINUATION after
    // CONTINUATION, 16 MiB in all). The proxy must not buffer it: it closes first.
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    let start = h2raw::frame(h2raw::HEADERS, 0, 1, &h2raw::request_block("/endless", &[]));
    h2.send(&start)
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let filler = {
        let mut b = Vec::new();
        for i in 0..1000 {
            b.push(0x00);
            let name = format!("x-{i}");
            b.push(name.len() as u8);
            b.extend(name.as_bytes());
            b.push(10);
            b.extend(b"0123456789");
        }
        b.truncate(16 * 1024 - 1);
        b
    };
    let rss_before = proxy.rss_kib();
    let mut sent = 0usize;
    for _ in 0..1024 {
        if h2
            .send(&h2raw::frame(h2raw::CONTINUATION, 0, 1, &filler))
            .await
            .is_err()
        {
            break;
        }
        sent += filler.len();
    }
    let (_, closed) = h2.read_frames(Duration::from_secs(10), |_| false).await;
    assert!(
        closed,
        "an endless header block should close the connection (sent {sent} bytes)"
    );
    let grown = proxy.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 8 * 1024,
        "the proxy should not buffer the endless block: RSS grew {grown} KiB"
    );
    still_serves(&proxy).await;
}

#[tokio::test]
async fn connections_past_max_connections_per_ip_are_closed() {
    let backend = Backend::echo("b");
    let dir = conf("max_connections_per_ip: 3", &backend);
    let proxy = Proxy::start(&dir);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut raw = Raw::connect(proxy.addr("web")).await;
        raw.send(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        let resp = raw.read_response(Duration::from_secs(5)).await;
        assert!(
            resp.as_deref()
                .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
            "the first 3 connections are served: {resp:?}"
        );
        held.push(raw);
    }
    let mut fourth = Raw::connect(proxy.addr("web")).await;
    let _ = fourth
        .send(b"GET /fourth HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (bytes, closed) = fourth.read_to_close(Duration::from_secs(5)).await;
    assert!(
        closed && bytes.is_empty(),
        "a 4th connection from the same IP should be closed unanswered, got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    // One closes: a slot is free again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = client()
        .get(proxy.url("web", "/again"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("a connection after one closed: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(
        super::limit_count(&proxy, "max_connections_per_ip").await,
        1,
        "the refused connection is counted"
    );
}

#[tokio::test]
async fn max_requests_per_connection_closes_after_the_last() {
    let backend = Backend::echo("b");
    let dir = conf("max_requests_per_connection: 3", &backend);
    let proxy = Proxy::start(&dir);
    let mut raw = Raw::connect(proxy.addr("web")).await;
    for i in 1..=3 {
        raw.send(format!("GET /r/{i} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        let resp = raw
            .read_response(Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no response to request {i}"));
        assert!(resp.starts_with("HTTP/1.1 200"), "request {i}: {resp}");
        assert_eq!(
            resp.to_lowercase().contains("connection: close"),
            i == 3,
            "only the 3rd response closes: {resp}"
        );
    }
    let (_, closed) = raw.read_to_close(Duration::from_secs(5)).await;
    assert!(closed, "the connection closes after its 3rd request");

    // HTTP/2: a GOAWAY after the 3rd stream.
    let mut h2 = H2Raw::connect(proxy.addr("web")).await;
    let mut out = Vec::new();
    for i in 0..3u32 {
        out.extend(h2raw::get(2 * i + 1, "/h2"));
    }
    h2.send(&out).await.unwrap_or_else(|e| panic!("send: {e}"));
    let (frames, _) = h2
        .read_frames(Duration::from_secs(10), |f| {
            f.iter().any(|f| f.kind == h2raw::GOAWAY)
                && f.iter().filter(|f| f.has_status(200)).count() == 3
        })
        .await;
    assert_eq!(
        frames.iter().filter(|f| f.has_status(200)).count(),
        3,
        "{frames:?}"
    );
    assert!(
        frames.iter().any(|f| f.kind == h2raw::GOAWAY),
        "a GOAWAY after the 3rd request: {frames:?}"
    );
}

#[tokio::test]
async fn every_refused_head_and_timeout_is_counted() {
    let proxy = Proxy::start(&basic_conf(
        "max_header_bytes: 4KiB, max_headers: 20, header_timeout: 500ms",
        "",
    ));
    let heads: [(&str, String); 3] = [
        (
            "max_header_bytes",
            format!(
                "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(8192)
            ),
        ),
        (
            "max_headers",
            format!(
                "GET / HTTP/1.1\r\nhost: x\r\n{}\r\n",
                (0..25)
                    .map(|i| format!("x-h{i}: 1\r\n"))
                    .collect::<String>()
            ),
        ),
        (
            "framing",
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"
                .to_string(),
        ),
    ];
    for (limit, head) in &heads {
        let mut raw = Raw::connect(proxy.addr("web")).await;
        let _ = raw.send(head.as_bytes()).await;
        let resp = raw.read_response(Duration::from_secs(5)).await;
        assert!(
            resp.as_deref()
                .is_some_and(|r| r.starts_with("HTTP/1.1 431") || r.starts_with("HTTP/1.1 400")),
            "{limit}: expected 431 or 400, got {resp:?}"
        );
    }
    let mut slow = Raw::connect(proxy.addr("web")).await;
    let _ = slow.send(b"GET / HTTP/1.1\r\n").await;
    let (_, closed) = slow.read_to_close(Duration::from_secs(5)).await;
    assert!(closed, "the slow head is cut off");
    for limit in [
        "max_header_bytes",
        "max_headers",
        "framing",
        "header_timeout",
    ] {
        assert_eq!(
            super::limit_count(&proxy, limit).await,
            1,
            "portcullis_client_limits_total{{limit=\"{limit}\"}}"
        );
    }
}
