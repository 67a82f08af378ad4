//! HTTPS upstreams: a backend with a certificate from a private CA is reached when the
//! upstream trusts that CA, and is a 502 when it trusts another.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use super::*;

/// A TLS backend on a loopback port answering `backend over HTTP/x.y` (the version the
/// proxy spoke to it), with `leaf` as its certificate.
async fn backend(leaf: &Leaf) -> SocketAddr {
    let (chain, key) = leaf.rustls_parts();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap_or_else(|e| panic!("{e}"));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("backend over {:?}", req.version());
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_https_upstream_with_a_private_ca_works_and_a_wrong_ca_is_a_502() {
    let private = Ca::new("Private CA");
    let other = Ca::new("Other CA");
    let backend_addr = backend(&private.server(&["backend.internal"], Alg::Ecdsa)).await;
    let conf = ConfDir::new();
    write_cert_file(&conf, "private-ca.crt", &private.cert_pem);
    write_cert_file(&conf, "other-ca.crt", &other.cert_pem);
    conf.write(
        "portcullis.yaml",
        format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
workers: 1
listeners:
  - name: web
    address: "127.0.0.1:0"
routes:
  - name: good
    match: {{ path_prefix: /good }}
    upstream: good
  - name: bad
    match: {{ path_prefix: /bad }}
    upstream: bad
upstreams:
  - name: good
    targets: [ {{ address: "{backend_addr}" }} ]
    tls: {{ ca: certs/private-ca.crt, sni: backend.internal }}
  - name: bad
    targets: [ {{ address: "{backend_addr}" }} ]
    tls: {{ ca: certs/other-ca.crt, sni: backend.internal }}
"#
        ),
    );
    let proxy = Proxy::start(&conf);
    let web = proxy.addr("web");
    let client = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("http://{web}{path}");
        let req = client.get(url.clone()).timeout(client::PATIENCE);
        async move {
            let resp = req
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };

    let (status, body) = get("/good").await;
    assert_eq!(
        status,
        200,
        "expected the private CA to verify the backend; body: {body}\nlog:\n{}",
        proxy.logs()
    );
    assert_eq!(
        body, "backend over HTTP/2.0",
        "expected HTTP/2 to the backend, chosen by ALPN"
    );

    let (status, body) = get("/bad").await;
    assert_eq!(
        status, 502,
        "expected a backend the CA does not vouch for to be a 502; body: {body}"
    );
}
