//! A retry on HTTP/2's `REFUSED_STREAM`, through the real binary: an h2c upstream (a
//! small server on the `h2` crate, which can refuse a stream as a loaded HTTP/2
//! server does) refuses the first stream; with `on: [refused-stream]` the request is
//! sent again and the client gets the second attempt's 200, and without it the
//! client gets the proxy's 502.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::net::TcpListener;

use super::balance::conf;
use super::outlier::get;
use crate::support::{ConfDir, Proxy};

/// An h2c server on 127.0.0.1 that answers `RST_STREAM(REFUSED_STREAM)` to its first
/// `refuse` streams, then `200 ok <attempt header>`; counts every stream it saw.
struct RefusingServer {
    addr: std::net::SocketAddr,
    streams: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl RefusingServer {
    async fn start(refuse: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let streams = Arc::new(AtomicUsize::new(0));
        let seen = streams.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        if seen.fetch_add(1, Ordering::SeqCst) < refuse {
                            respond.send_reset(h2::Reason::REFUSED_STREAM);
                            continue;
                        }
                        let attempt = req
                            .headers()
                            .get("x-portcullis-attempt")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("1")
                            .to_string();
                        let head = http::Response::new(());
                        if let Ok(mut body) = respond.send_response(head, false) {
                            let text = format!("ok {attempt}");
                            let _ = body.send_data(Bytes::from(text), true);
                        }
                    }
                });
            }
        });
        Self {
            addr,
            streams,
            task,
        }
    }
}

impl Drop for RefusingServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_for(server: &RefusingServer, on: &str) -> (ConfDir, Proxy) {
    let dir = ConfDir::with(&conf(&format!(
        "routes: [{{ name: r, upstream: app }}]
upstreams:
  - name: app
    protocol: h2c
    targets: [{{ address: \"{}\" }}]
    retries: {{ attempts: 2, on: [{on}], backoff: 0 }}
",
        server.addr
    )));
    let proxy = Proxy::start(&dir);
    (dir, proxy)
}

#[tokio::test]
async fn binary_a_refused_stream_is_retried_and_the_client_gets_200() {
    let server = RefusingServer::start(1).await;
    let (_dir, proxy) = proxy_for(&server, "refused-stream").await;
    assert_eq!(
        get(&proxy).await,
        (200, "ok 2".into()),
        "the retry answered"
    );
    assert_eq!(
        server.streams.load(Ordering::SeqCst),
        2,
        "refused, then served"
    );
    let m = proxy.metrics().await;
    let counted = r#"portcullis_upstream_retries_total{upstream="app",reason="refused-stream"} 1"#;
    assert!(m.contains(counted), "expected {counted} in:\n{m}");
}

#[tokio::test]
async fn binary_a_refused_stream_is_not_retried_unless_asked() {
    let server = RefusingServer::start(1).await;
    let (_dir, proxy) = proxy_for(&server, "connect-failure").await;
    assert_eq!(get(&proxy).await.0, 502, "the refusal is the answer");
    assert_eq!(server.streams.load(Ordering::SeqCst), 1, "sent once");
}
