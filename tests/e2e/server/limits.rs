//! Limits a client meets: header size and count, request framing, header-read and
//! idle timeouts, clients that stop reading.

use std::time::{Duration, Instant};

use super::basic_conf;
use crate::support::*;

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
async fn a_client_that_stops_reading_is_disconnected() {
    let (_backend, proxy) = super::big_response_proxy();
    let rss_before = proxy.rss_kib();
    let mut raw = Raw::connect(proxy.addr("web")).await;
    let _ = raw.send(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await;
    // Read nothing for a while: socket buffers fill, the proxy's writes stall.
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Stalled, the proxy holds a bounded part of the response, not the 64 MiB: it
    // reads from the upstream only as fast as the client takes.
    let grown = proxy.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "a stalled client made the proxy grow by {grown} KiB (the response is 64 MiB)"
    );
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let (bytes, closed) = raw.read_to_close(Duration::from_secs(30)).await;
    assert!(closed, "the connection should have been closed");
    assert!(
        bytes.len() < super::BIG_BODY,
        "a stalled client should be cut off before the whole {}-byte body, got {} bytes",
        super::BIG_BODY,
        bytes.len()
    );
}

#[tokio::test]
async fn a_keep_alive_connection_idle_long_enough_to_park_serves_on() {
    // Idle for more than a second, an HTTP/1 connection parks (hyper and its buffers
    // are dropped): what the client sends next must be served as if nothing happened,
    // a head split over two writes, a pipelined one, and a refused one included.
    let proxy = Proxy::start(&basic_conf("max_header_bytes: 4KiB", ""));
    let mut raw = Raw::connect(proxy.addr("web")).await;
    let wait = Duration::from_secs(10);
    let _ = raw.send(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let resp = raw.read_response(wait).await;
    assert!(
        resp.as_deref()
            .is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "expected a 200 first, got {resp:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let _ = raw.send(b"GET /second HTTP/1.1\r\nho").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = raw
        .send(b"st: x\r\n\r\nGET /third HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    for path in ["/second", "/third"] {
        let resp = raw.read_response(wait).await.unwrap_or_default();
        assert!(
            resp.starts_with("HTTP/1.1 200") && resp.contains(&format!("\"path\":\"{path}\"")),
            "expected the echo of {path} after the connection rested, got {resp:?}\n{}",
            proxy.logs()
        );
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;

    // The guard still counts heads as the handler does: the refusal is answered.
    let big = format!(
        "GET /big HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(8192)
    );
    let _ = raw.send(big.as_bytes()).await;
    let (bytes, closed) = raw.read_to_close(wait).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.starts_with("HTTP/1.1 431") && text.contains("too large") && closed,
        "expected a 431 with a body and a close after the rest, got {text:?} (closed: {closed})"
    );
}
