//! Slow request bodies: a minimum data rate after a grace period and a timeout
//! between two bytes, each answered with 408, the connection closed, and counted.

use std::time::{Duration, Instant};

use super::{basic_conf, limit_count};
use crate::support::*;

/// Small limits keep the tests short: 240 B/s after 600 ms, 800 ms between bytes.
const LIMITS: &str = "min_body_rate: 240, body_rate_grace: 600ms, body_timeout: 800ms";

/// Sends a POST head declaring `len` bytes, then `chunks` of the body every `every`
/// (stopping early if the proxy answers), and returns the response and when it came.
async fn trickle(
    proxy: &Proxy,
    path: &str,
    len: usize,
    chunks: &[&[u8]],
    every: Duration,
) -> (Option<String>, Duration, Raw) {
    let mut raw = Raw::connect(proxy.addr("web")).await;
    let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\n\r\n");
    raw.send(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("send head: {e}"));
    let started = Instant::now();
    for chunk in chunks {
        tokio::time::sleep(every).await;
        if raw.send(chunk).await.is_err() {
            break;
        }
    }
    let resp = raw.read_response(Duration::from_secs(10)).await;
    (resp, started.elapsed(), raw)
}

#[tokio::test]
async fn a_body_trickled_below_the_minimum_rate_gets_408_and_close() {
    // Through a real upstream: the body streams to it as it comes.
    let backend = Backend::echo("b");
    let proxy = Proxy::start(&basic_conf(
        LIMITS,
        &format!(
            "  - {{ name: up, match: {{ path_prefix: /up }}, upstream: b }}
upstreams:
  - {{ name: b, targets: [{{ address: {} }}] }}
",
            backend.addr()
        ),
    ));
    // 100 bytes declared, one byte every 200 ms (5 B/s): never idle for 800 ms, but
    // far under 240 B/s once the 600 ms grace is over.
    let chunks = vec![&b"x"[..]; 100];
    let (resp, took, mut raw) =
        trickle(&proxy, "/up/slow", 100, &chunks, Duration::from_millis(200)).await;
    let resp = resp.unwrap_or_else(|| panic!("expected a 408, got nothing\n{}", proxy.logs()));
    assert!(
        resp.starts_with("HTTP/1.1 408"),
        "expected 408, got {resp:?}"
    );
    assert!(
        resp.to_lowercase().contains("connection: close"),
        "the 408 should close: {resp:?}"
    );
    assert!(
        resp.contains("request body too slow"),
        "body says why: {resp:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the rate limit should strike soon after the grace period, took {took:?}"
    );
    let (_, closed) = raw.read_to_close(Duration::from_secs(5)).await;
    assert!(closed, "the connection should be closed after the 408");
    assert_eq!(limit_count(&proxy, "min_body_rate").await, 1);
}

#[tokio::test]
async fn a_body_that_stops_gets_408_after_the_body_timeout() {
    let proxy = Proxy::start(&basic_conf(LIMITS, ""));
    // 200 bytes at once (well over the rate), then nothing.
    let (resp, took, _raw) =
        trickle(&proxy, "/stalls", 1000, &[&[b'x'; 200]], Duration::ZERO).await;
    let resp = resp.unwrap_or_else(|| panic!("expected a 408, got nothing\n{}", proxy.logs()));
    assert!(
        resp.starts_with("HTTP/1.1 408"),
        "expected 408, got {resp:?}"
    );
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "body_timeout is 800 ms, the 408 came after {took:?}"
    );
    assert_eq!(limit_count(&proxy, "body_timeout").await, 1);
    assert_eq!(limit_count(&proxy, "min_body_rate").await, 0);
}

#[tokio::test]
async fn a_body_at_pace_passes() {
    let proxy = Proxy::start(&basic_conf(LIMITS, ""));
    // 50 bytes every 100 ms = 500 B/s, over 240 B/s; 1.5 s in all, past the grace.
    let chunks = vec![&[b'y'; 50][..]; 15];
    let (resp, _, _raw) = trickle(&proxy, "/paced", 750, &chunks, Duration::from_millis(100)).await;
    let resp = resp.unwrap_or_else(|| panic!("expected a 200, got nothing\n{}", proxy.logs()));
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "expected 200, got {resp:?}"
    );
    assert!(
        resp.contains("\"body_bytes\":750"),
        "echo saw the whole body: {resp}"
    );
    assert_eq!(limit_count(&proxy, "min_body_rate").await, 0);
    assert_eq!(limit_count(&proxy, "body_timeout").await, 0);
}

#[tokio::test]
async fn a_response_read_at_a_trickle_is_cut_off_like_a_stopped_one() {
    let (_backend, proxy) = super::big_response_proxy();
    let mut stream = tokio::net::TcpStream::connect(proxy.addr("web"))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    {
        use tokio::io::AsyncWriteExt;
        stream
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }
    // Read 1 KiB every 100 ms (10 KiB/s): never stopped, but far too slow for the
    // proxy's writes to go through within the 1 s idle_timeout. (What the client
    // has buffered it would read for minutes after the close: the counter tells.)
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1024];
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let started = Instant::now();
    while super::limit_count(&proxy, "write_stalled").await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a trickling reader should be cut off (write_stalled), still not after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.abort();
}
