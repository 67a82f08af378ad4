//! TLS clients for the end-to-end tests: a raw tokio-rustls connection (to see the
//! served chain and the negotiated ALPN) carrying HTTP/1.1 or HTTP/2 through hyper.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use portcullis::tls::client::NoVerification;

use super::pki::Leaf;

/// Bounds every network step; generous for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a test client authenticates the proxy, and itself.
pub struct ClientOptions {
    /// Trust only this CA (PEM); `None` accepts any certificate (to see what is served).
    pub ca: Option<String>,
    /// Present this client certificate.
    pub identity: Option<Leaf>,
    /// ALPN protocols to offer.
    pub alpn: Vec<&'static [u8]>,
    /// Send SNI (the name is still used for verification).
    pub sni: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            ca: None,
            identity: None,
            alpn: vec![b"http/1.1"],
            sni: true,
        }
    }
}

/// Builds the rustls client config for `opts`.
pub fn client_config(opts: &ClientOptions) -> ClientConfig {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"));
    let builder = match &opts.ca {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.unwrap_or_else(|e| panic!("test CA: {e}"));
                roots.add(cert).unwrap_or_else(|e| panic!("test CA: {e}"));
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification)),
    };
    let mut config = match &opts.identity {
        Some(leaf) => {
            let (chain, key) = leaf.rustls_parts();
            builder
                .with_client_auth_cert(chain, key)
                .unwrap_or_else(|e| panic!("{e}"))
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = opts.alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = opts.sni;
    config
}

/// Connects to `addr` over TLS as `name`.
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    opts: &ClientOptions,
) -> Result<TlsStream<TcpStream>, String> {
    let run = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(opts)));
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("TLS handshake as {name}: {e}"))
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .unwrap_or_else(|_| Err(format!("TLS handshake with {addr} timed out")))
}

/// The chain the server presented, DER, leaf first.
pub fn served_chain(stream: &TlsStream<TcpStream>) -> Vec<Vec<u8>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.to_vec()).collect())
        .unwrap_or_default()
}

/// The negotiated ALPN protocol.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// An HTTP/1.1 connection kept open across requests.
pub struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Http1 {
    /// Starts HTTP/1.1 on `stream`.
    pub async fn new(stream: TlsStream<TcpStream>) -> Result<Self, String> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    /// `GET path` with `host` and extra headers; the status and body.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let mut req = http::Request::get(path).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
        let run = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection not ready: {e}"))?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap_or_else(|_| Err("request timed out".into()))
    }
}

/// `GET path` over HTTP/2 on `stream`; the status, the version and the body.
pub async fn h2_get(
    stream: TlsStream<TcpStream>,
    authority: &str,
    path: &str,
) -> Result<(u16, http::Version, String), String> {
    let run = async {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let uri = format!("https://{authority}{path}");
        let req = http::Request::get(uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let (status, version) = (resp.status().as_u16(), resp.version());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, version, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(PATIENCE, run)
        .await
        .unwrap_or_else(|_| Err("HTTP/2 request timed out".into()))
}
