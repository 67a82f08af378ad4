//! The upstream connector under hyper-util's pooled client, against a real TLS server
//! speaking HTTP/1.1 and HTTP/2: the version ALPN picks is the one spoken, and a
//! certificate that does not verify is a connect error.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::*;
use crate::tls::connector::UpstreamConnector;

/// Serves TLS on a loopback port with `config`, answering each request with the HTTP
/// version it arrived in.
async fn version_server(config: Arc<ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?}", req.version());
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::from(body),
                        )))
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

async fn get(connector: UpstreamConnector, addr: std::net::SocketAddr) -> Result<String, String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let uri: http::Uri = format!("https://{addr}/")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let resp = client.get(uri).await.map_err(|e| format!("{e:?}"))?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn connector(files: &Files, ca: &Ca, sni: Option<&str>) -> UpstreamConnector {
    let tls = UpstreamTlsConfig {
        ca: Some(files.write("upstream-ca.pem", &ca.cert_pem)),
        sni: sni.map(str::to_owned),
        verify: true,
        client_cert: None,
    };
    let mut upstream = super::upstream::upstream(tls);
    upstream.name = "backend".into();
    let tls = upstream_tls(&upstream)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .unwrap_or_else(|| panic!("expected a client config"));
    UpstreamConnector::new(HttpConnector::new(), Some(&tls), PATIENCE)
}

#[tokio::test]
async fn the_pool_speaks_h2_when_alpn_picks_it_and_http11_otherwise() {
    let ca = Ca::new("Private");
    let files = Files::new();
    let (c, k) = files.pair("backend", &ca.server(&["backend.internal"], Alg::Ecdsa));
    let both = build_ok(&tls_config(vec![pair(c, k)])).config;
    let mut http1_only = (*both).clone();
    http1_only.alpn_protocols = vec![b"http/1.1".to_vec()];

    let addr = version_server(both).await;
    let got = get(connector(&files, &ca, Some("backend.internal")), addr).await;
    assert_eq!(got.as_deref(), Ok("HTTP/2.0"), "an upstream offering h2");

    let addr = version_server(Arc::new(http1_only)).await;
    let got = get(connector(&files, &ca, Some("backend.internal")), addr).await;
    assert_eq!(
        got.as_deref(),
        Ok("HTTP/1.1"),
        "an upstream offering only http/1.1"
    );
}

#[tokio::test]
async fn an_unverifiable_upstream_is_a_connect_error() {
    let ca = Ca::new("Private");
    let files = Files::new();
    let (c, k) = files.pair("backend", &ca.server(&["backend.internal"], Alg::Ecdsa));
    let addr = version_server(build_ok(&tls_config(vec![pair(c, k)])).config).await;
    // Without `sni`, the name verified is the target's IP, which the certificate lacks.
    let got = get(connector(&files, &ca, None), addr).await;
    let err = got
        .err()
        .unwrap_or_else(|| panic!("expected the handshake to fail"));
    assert!(
        err.contains("Connect") && err.contains("Handshake"),
        "error: {err}"
    );
}
