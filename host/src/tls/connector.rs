//! The connector of the pooled upstream client: plain TCP (hyper-util's
//! `HttpConnector`), then a TLS handshake when the upstream has a `tls:` block.
//!
//! The handshake shares the connect timeout, and its failure (an unverifiable
//! certificate, say) is a connect error, so the request gets 502. When the upstream
//! picks `h2` by ALPN the connection says so, and the pool speaks HTTP/2 on it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{ALPN_H2, UpstreamTls};

/// Why a connection to an upstream target could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable, timed out).
    #[error(transparent)]
    Tcp(Box<dyn std::error::Error + Send + Sync>),
    /// The name to verify the target against is not a DNS name or IP address.
    #[error("{0:?} is not a valid TLS server name")]
    BadName(String),
    /// The TLS handshake failed (the certificate did not verify, no common version, …).
    #[error("TLS handshake with {name} failed: {source}")]
    Handshake {
        /// The name verified.
        name: String,
        /// What rustls said.
        source: io::Error,
    },
    /// The TLS handshake did not finish within the connect timeout.
    #[error("TLS handshake with {0} timed out")]
    HandshakeTimeout(String),
}

/// Connects to upstream targets, over TLS when configured.
#[derive(Clone)]
pub struct UpstreamConnector {
    http: HttpConnector,
    tls: Option<Arc<TlsSide>>,
}

struct TlsSide {
    connector: tokio_rustls::TlsConnector,
    sni: Option<String>,
    timeout: Duration,
}

impl UpstreamConnector {
    /// Plain TCP with `http`'s settings, then TLS with `tls` when given; `timeout`
    /// bounds the handshake.
    pub fn new(mut http: HttpConnector, tls: Option<&UpstreamTls>, timeout: Duration) -> Self {
        // The pool asks for `https://` URIs when it speaks TLS; TCP is the same.
        http.enforce_http(false);
        let tls = tls.map(|tls| {
            Arc::new(TlsSide {
                connector: tokio_rustls::TlsConnector::from(Arc::clone(&tls.config)),
                sni: tls.sni.clone(),
                timeout,
            })
        });
        Self { http, tls }
    }

    /// Whether connections are TLS (requests should then use the `https` scheme).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The scheme of URIs sent through this connector.
    pub fn scheme(&self) -> http::uri::Scheme {
        if self.is_tls() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = MaybeTls;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<MaybeTls, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx)
            .map_err(|e| ConnectError::Tcp(Box::new(e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let tcp = tower_service::Service::<Uri>::call(&mut self.http, uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = tcp.await.map_err(|e| ConnectError::Tcp(Box::new(e)))?;
            let Some(tls) = tls else {
                return Ok(MaybeTls::Plain(tcp));
            };
            let name = tls.sni.clone().unwrap_or(host);
            let server_name = ServerName::try_from(name.clone())
                .map_err(|_| ConnectError::BadName(name.clone()))?;
            let handshake = tls.connector.connect(server_name, tcp.into_inner());
            match tokio::time::timeout(tls.timeout, handshake).await {
                Ok(Ok(stream)) => Ok(MaybeTls::Tls(Box::new(TokioIo::new(stream)))),
                Ok(Err(source)) => Err(ConnectError::Handshake { name, source }),
                Err(_) => Err(ConnectError::HandshakeTimeout(name)),
            }
        })
    }
}

/// A connection to a target: plain TCP, or TLS over it.
pub enum MaybeTls {
    /// Plain text.
    Plain(TokioIo<TcpStream>),
    /// TLS (boxed: the session state is large).
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for MaybeTls {
    fn connected(&self) -> Connected {
        match self {
            MaybeTls::Plain(tcp) => tcp.connected(),
            MaybeTls::Tls(tls) => {
                let (tcp, conn) = tls.inner().get_ref();
                let connected = tcp.connected();
                if conn.alpn_protocol() == Some(ALPN_H2) {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl Read for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl Write for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}
