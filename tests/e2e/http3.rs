//! HTTP/3 through the real binary: GET and POST through a route to a real backend and
//! through a wasm filter, `Alt-Svc` on HTTPS/1.1 responses, garbage (stray datagrams,
//! a client speaking nonsense) that leaves the other clients alone, and the drain on
//! SIGTERM.

mod bench;
mod client;
mod concurrent;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use client::H3;

use crate::support::{Backend, ConfDir, Proxy};
use crate::tls::client::PATIENCE;
use crate::tls::pki::{Alg, Ca};

/// A proxy with an `http3` TLS listener `web` (two workers, so two QUIC sockets
/// share the port), a plain route to `backend` and one through the `probe` filter.
fn start(backend: &Backend, extra: &str) -> (Proxy, Ca, ConfDir) {
    let ca = Ca::new("H3 Root");
    let leaf = ca.server(&["localhost"], Alg::Ecdsa);
    let wasm = crate::wasm_build::filter("probe");
    let conf = ConfDir::with(&format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
workers: 2
listeners:
  - name: web
    address: "127.0.0.1:0"
    http3: true
    tls:
      certificates: [{{ cert: certs/web.crt, key: certs/web.key }}]
filters:
  - {{ name: tag, wasm: {wasm}, config: "headers:h3" }}
routes:
  - {{ name: filtered, match: {{ path_prefix: /filtered }}, filters: [tag], upstream: backend }}
  - {{ name: plain, upstream: backend }}
upstreams:
  - {{ name: backend, targets: [{{ address: {addr} }}] }}
{extra}"#,
        wasm = wasm.display(),
        addr = backend.addr(),
    ));
    conf.write("certs/web.crt", &leaf.chain_pem);
    conf.write("certs/web.key", &leaf.key_pem);
    let proxy = Proxy::start(&conf);
    (proxy, ca, conf)
}

async fn connect(proxy: &Proxy, ca: &Ca) -> H3 {
    H3::connect(proxy.addr("web"), "localhost", &ca.cert_pem)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.logs()))
}

#[tokio::test]
async fn get_and_post_reach_the_backend_and_the_filter_runs() {
    let backend = Backend::echo("b1");
    let (proxy, ca, _conf) = start(&backend, "");
    let mut h3 = connect(&proxy, &ca).await;

    let got = h3
        .get("localhost", "/plain?q=1")
        .await
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(got.status, 200);
    let echo = got.json();
    assert_eq!(echo["backend"], "b1");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/plain?q=1");
    assert_eq!(echo["headers"]["host"], "localhost");
    assert!(
        echo["headers"]["x-forwarded-for"]
            .as_str()
            .is_some_and(|v| v.contains("127.0.0.1")),
        "X-Forwarded-For as for any request: {echo}"
    );

    // A body of several packets, streamed in both directions.
    let payload = "p".repeat(100_000);
    let req = http::Request::post("https://localhost/plain/upload")
        .header("content-type", "text/plain")
        .body(())
        .unwrap_or_else(|e| panic!("{e}"));
    let posted = h3
        .request(req, Some(Bytes::from(payload.clone())))
        .await
        .unwrap_or_else(|e| panic!("POST: {e}"));
    assert_eq!(posted.status, 200);
    let echo = posted.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body"].as_str().map(str::len), Some(payload.len()));

    // Through the wasm filter: its request header reaches the backend, its response
    // header the client.
    let filtered = h3
        .get("localhost", "/filtered")
        .await
        .unwrap_or_else(|e| panic!("GET /filtered: {e}"));
    assert_eq!(filtered.status, 200);
    assert_eq!(filtered.json()["headers"]["x-chain"], "h3");
    assert_eq!(
        filtered
            .headers
            .get("x-resp-chain")
            .and_then(|v| v.to_str().ok()),
        Some("h3")
    );
    let req = http::Request::post("https://localhost/filtered")
        .body(())
        .unwrap_or_else(|e| panic!("{e}"));
    let posted = h3
        .request(req, Some(Bytes::from_static(b"through the filter")))
        .await
        .unwrap_or_else(|e| panic!("POST /filtered: {e}"));
    assert_eq!(posted.json()["body"], "through the filter");
    h3.close();

    // The same metrics as any request: counted under the listener and route.
    let metrics = proxy.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("portcullis_requests_total")
            && l.contains("route=\"filtered\"")),
        "{metrics}"
    );
}

#[tokio::test]
async fn https_responses_advertise_http3_with_alt_svc() {
    let backend = Backend::echo("b1");
    let (proxy, ca, _conf) = start(&backend, "");
    let addr = proxy.addr("web");
    let client = https_client(reqwest::Client::builder().http1_only(), &ca, addr);
    let resp = client
        .get(format!("https://localhost:{}/plain", addr.port()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("HTTPS/1.1 GET: {e}"));
    assert_eq!(resp.status(), 200);
    let alt_svc = resp.headers().get("alt-svc").and_then(|v| v.to_str().ok());
    assert_eq!(
        alt_svc,
        Some(format!("h3=\":{}\"; ma=86400", addr.port()).as_str())
    );
}

/// A reqwest client made by `builder`, trusting only `ca` and reaching `localhost` at
/// `addr`.
fn https_client(builder: reqwest::ClientBuilder, ca: &Ca, addr: SocketAddr) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())
        .unwrap_or_else(|e| panic!("test CA: {e}"));
    builder
        .no_proxy()
        .add_root_certificate(root)
        .resolve("localhost", addr)
        .timeout(PATIENCE)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Datagrams a broken or hostile peer might send to a QUIC port.
fn garbage(i: usize) -> Vec<u8> {
    match i % 4 {
        // Random-looking bytes.
        0 => (0..1200).map(|n| (n * 31 + i * 7) as u8).collect(),
        // A long header with an unknown version (asks for version negotiation).
        1 => {
            let mut d = vec![0xc0, 0x1a, 0x2b, 0x3c, 0x4d, 8];
            d.extend_from_slice(&[0x11; 8]);
            d.push(8);
            d.extend_from_slice(&[0x22; 8]);
            d.resize(1200, 0);
            d
        }
        // A QUIC v1 Initial cut short.
        2 => vec![0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0x44],
        // A short header for a connection nobody has.
        _ => {
            let mut d = vec![0x40];
            d.extend((0..40).map(|n| n as u8 ^ i as u8));
            d
        }
    }
}

#[tokio::test]
async fn garbage_closes_only_its_sender() {
    let backend = Backend::echo("b1");
    let (proxy, ca, _conf) = start(&backend, "");
    let addr = proxy.addr("web");
    let mut h3 = connect(&proxy, &ca).await;

    // Stray datagrams from another socket, all the while.
    let flood = tokio::spawn(async move {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for i in 0.. {
            let _ = socket.send_to(&garbage(i), addr).await;
            if i % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    // A client that completes the handshake, then sends nonsense as a request.
    let (_bad_endpoint, bad) = nonsense_client(addr, &ca).await;
    for i in 0..20 {
        let got = h3
            .get("localhost", &format!("/plain/{i}"))
            .await
            .unwrap_or_else(|e| panic!("request {i} beside the garbage: {e}"));
        assert_eq!(got.status, 200);
    }
    let closed = tokio::time::timeout(PATIENCE, bad.closed()).await;
    flood.abort();
    match closed {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            // H3_FRAME_UNEXPECTED (0x105) or another HTTP/3 error, not "no error".
            assert_ne!(close.error_code, 0x100u32.into(), "{close:?}");
        }
        other => panic!("the nonsense client should be closed by the proxy: {other:?}"),
    }
    // A new client is served as before.
    let mut fresh = connect(&proxy, &ca).await;
    let got = fresh
        .get("localhost", "/plain/after")
        .await
        .unwrap_or_else(|e| panic!("after the garbage: {e}"));
    assert_eq!(got.status, 200);
}

/// Connects with ALPN `h3`, then opens a request stream whose first frame is not
/// HEADERS: an HTTP/3 connection error.
async fn nonsense_client(addr: SocketAddr, ca: &Ca) -> (quinn::Endpoint, quinn::Connection) {
    let mut tls = crate::tls::client::client_config(&crate::tls::client::ClientOptions {
        ca: Some(ca.cert_pem.clone()),
        alpn: vec![b"h3"],
        ..Default::default()
    });
    tls.enable_early_data = false;
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap_or_else(|e| panic!("{e}"));
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
        .unwrap_or_else(|e| panic!("{e}"));
    let conn = endpoint
        .connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(crypto)),
            addr,
            "localhost",
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}"));
    let (mut send, _recv) = conn.open_bi().await.unwrap_or_else(|e| panic!("{e}"));
    // A DATA frame (type 0) of 5 bytes where HEADERS must come first.
    send.write_all(&[0x00, 0x05, b'h', b'e', b'l', b'l', b'o'])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = send.finish();
    (endpoint, conn)
}

#[tokio::test]
async fn sigterm_lets_an_http3_request_in_flight_finish() {
    let backend = Backend::slow("slow", Duration::from_millis(1500));
    let (mut proxy, ca, _conf) = start(&backend, "shutdown: { drain_timeout: 10s }\n");
    let mut h3 = connect(&proxy, &ca).await;
    let request = tokio::spawn(async move { h3.get("localhost", "/plain/slow").await });
    // Sent once the backend has the request.
    backend.wait_for_requests(1, PATIENCE).await;
    proxy.signal(libc::SIGTERM);
    let got = request
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("the request in flight at SIGTERM: {e}"));
    assert_eq!(got.status, 200);
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", proxy.logs());
}

#[test]
fn check_refuses_http3_without_tls_or_on_tcp() {
    let conf = ConfDir::with(
        r#"
listeners:
  - { name: plain, address: "127.0.0.1:0", http3: true }
  - { name: db, address: "127.0.0.1:0", protocol: tcp, http3: true, tls: { certificates: [] } }
  - { name: off, address: "127.0.0.1:0", http3: false }
routes:
  - { name: r, listeners: [off], upstream: echo@internal }
"#,
    );
    let (code, _, stderr) =
        crate::support::run_to_end(["check", "--conf", &conf.path().display().to_string()]);
    assert_eq!(code, Some(1), "{stderr}");
    for line in [3, 4] {
        let expected = format!(
            "portcullis.yaml:{line}: listeners.{}.http3: HTTP/3 is QUIC, which is always TLS",
            if line == 3 { "plain" } else { "db" }
        );
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("listeners.off"), "{stderr}");
}
