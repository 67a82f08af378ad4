//! SNI routing with TLS passthrough: the proxy reads the ClientHello's server name
//! without terminating TLS, and each client ends its handshake with the TLS server
//! its name routes to, as the certificate it sees shows.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use super::{TcpEcho, connect, echo, read_to_close, round_trip};
use crate::support::{ConfDir, Proxy};
use crate::tls::client::{ClientOptions, connect as tls_connect, served_chain};
use crate::tls::pki::{Alg, Ca, Leaf};

/// A TLS server on 127.0.0.1:0 serving `leaf`, echoing with `TAG:`.
struct TlsEcho {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsEcho {
    async fn start(tag: &str, leaf: &Leaf) -> TlsEcho {
        let (chain, key) = leaf.rustls_parts();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap_or_else(|e| panic!("{e}"));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let socket = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let tag = tag.to_string();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = socket.accept().await {
                let (acceptor, tag) = (acceptor.clone(), tag.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        echo(tls, &tag, &Mutex::new(Vec::new())).await;
                    }
                });
            }
        });
        TlsEcho { addr, task }
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn each_client_reaches_the_tls_server_its_name_routes_to() {
    let ca = Ca::new("Passthrough Root");
    let leaf_a = ca.server(&["a.example.test"], Alg::Ecdsa);
    let leaf_b = ca.server(&["*.b.example.test"], Alg::Ed25519);
    let (a, b) = (
        TlsEcho::start("A", &leaf_a).await,
        TlsEcho::start("B", &leaf_b).await,
    );
    let plain = TcpEcho::start("P").await;
    let conf = ConfDir::with(&format!(
        r#"
workers: 1
listeners:
  - {{ name: edge, address: "127.0.0.1:0", protocol: tcp }}
  - {{ name: strict, address: "127.0.0.1:0", protocol: tcp, limits: {{ header_timeout: 2s }} }}
tcp_routes:
  - {{ name: a, match: {{ sni: [a.example.test] }}, upstream: a }}
  - {{ name: b, match: {{ sni: ["*.b.example.test"] }}, upstream: b }}
  - {{ name: rest, listeners: [edge], upstream: plain }}
upstreams:
  - {{ name: a, targets: [{{ address: "{}" }}] }}
  - {{ name: b, targets: [{{ address: "{}" }}] }}
  - {{ name: plain, targets: [{{ address: "{}" }}] }}
"#,
        a.addr,
        b.addr,
        plain.addr()
    ));
    let proxy = Proxy::start(&conf);
    let trusting = ClientOptions {
        ca: Some(ca.cert_pem.clone()),
        ..ClientOptions::default()
    };
    for listener in ["edge", "strict"] {
        let addr = proxy.addr(listener);
        for (name, leaf, tag) in [
            ("a.example.test", &leaf_a, "A"),
            ("www.b.example.test", &leaf_b, "B"),
            ("A.Example.Test", &leaf_a, "A"),
        ] {
            let mut tls = tls_connect(addr, name, &trusting)
                .await
                .unwrap_or_else(|e| panic!("{listener}, {name}: {e}"));
            let chain = served_chain(&tls);
            assert_eq!(
                chain.first(),
                Some(&leaf.leaf_der),
                "{listener}: {name} must see its server's certificate"
            );
            let echoed = round_trip(&mut tls, "ping\n").await;
            assert!(
                echoed.contains(&format!("{tag}:ping")),
                "{name}: {echoed:?}"
            );
        }
    }

    // Not TLS at all: the route without `sni` takes it on `edge`, bytes untouched.
    let mut c = connect(proxy.addr("edge")).await;
    assert!(
        round_trip(&mut c, "SSH-2.0-test\r\n")
            .await
            .contains("P:SSH-2.0-test")
    );
    assert_eq!(plain.received(), vec![b"SSH-2.0-test\r\n".to_vec()]);

    // Garbage shaped like a TLS record on `strict` (no route without `sni`): that
    // connection is closed; the next client is served as before.
    for junk in [
        &b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\x00\x17\x03\x03\x00\x01\x00"[..],
        &b"\x16\x03\x01\xff\xff"[..],
        &b"\x16\x03\x01\x00\x2a\x01\x00\x00\x26\x03\x03"[..],
    ] {
        let mut c = connect(proxy.addr("strict")).await;
        c.write_all(junk).await.unwrap_or_else(|e| panic!("{e}"));
        // The truncated one never completes: the client gives up its half.
        c.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        let (got, closed) = read_to_close(&mut c).await;
        assert!(closed && got.is_empty(), "{junk:?}: closed unanswered");
    }
    let mut tls = tls_connect(proxy.addr("strict"), "a.example.test", &trusting)
        .await
        .unwrap_or_else(|e| panic!("after the garbage: {e}"));
    assert!(round_trip(&mut tls, "still\n").await.contains("A:still"));

    // A name no route takes on `strict`: closed, no handshake.
    let unknown = tls_connect(proxy.addr("strict"), "c.example.test", &trusting).await;
    assert!(unknown.is_err(), "no route takes c.example.test");
}
