//! `max_request_body` through the real binary: a declared length over the limit gets
//! 413 before anything is forwarded; a streamed body that goes past it is cut (413,
//! or the stream reset); a body within it goes through.

use bytes::Bytes;

use super::balance::conf;
use crate::support::{self, Backend, ConfDir, Proxy, Reply};

fn limited(backend: &Backend) -> (ConfDir, Proxy) {
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: app, max_request_body: 1KiB }}]
upstreams:
  - name: app
    targets: [{{ address: \"{}\" }}]
",
        backend.addr()
    )));
    let proxy = Proxy::start(&dir);
    (dir, proxy)
}

fn sink() -> Backend {
    Backend::start(|req| Reply::text(200, &format!("got {}", req.body.len())))
}

#[tokio::test]
async fn binary_a_declared_length_over_the_limit_is_413_before_forwarding() {
    let backend = sink();
    let (_dir, proxy) = limited(&backend);
    let resp = support::client()
        .post(proxy.url("web", "/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST failed: {e}"));
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.text().await.unwrap_or_default(),
        "request body too large\n"
    );
    assert_eq!(backend.requests(), 0, "nothing was forwarded");

    let resp = support::client()
        .post(proxy.url("web", "/upload"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST failed: {e}"));
    assert_eq!(resp.status(), 200, "exactly the limit is accepted");
    assert_eq!(resp.text().await.unwrap_or_default(), "got 1024");
}

#[tokio::test]
async fn binary_a_streamed_body_past_the_limit_is_cut() {
    let backend = sink();
    let (_dir, proxy) = limited(&backend);
    // No Content-Length: the proxy counts as the body streams.
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..4).map(|_| Ok(Bytes::from(vec![b'y'; 512]))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let result = support::client()
        .post(proxy.url("web", "/upload"))
        .body(body)
        .send()
        .await;
    match result {
        Ok(resp) => assert_eq!(resp.status(), 413, "cut past 1 KiB"),
        // The proxy may reset the stream while the client still sends.
        Err(e) => assert!(!e.is_builder(), "a reset, not a client error: {e}"),
    }
    assert!(
        backend.seen().iter().all(|s| s.body.len() <= 1024),
        "the upstream never got more than the limit"
    );

    let chunks: Vec<Result<Bytes, std::io::Error>> =
        (0..2).map(|_| Ok(Bytes::from(vec![b'z'; 300]))).collect();
    let resp = support::client()
        .post(proxy.url("web", "/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST failed: {e}"));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap_or_default(), "got 600");
}
