//! An HTTP/3 client for the tests (quinn + h3, trusting the test CA), and what it
//! takes to send one request on it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};

use crate::tls::client::{ClientOptions, PATIENCE, client_config};

/// One HTTP/3 connection to the proxy; a clone sends on the same connection.
#[derive(Clone)]
pub struct H3 {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// Kept so the connection outlives the handshake.
    _endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

/// How a request's body goes out: its pieces, each after `pause`, and the end of
/// the stream (the FIN) after one more `pause`. A pause puts the FIN in a packet of
/// its own, after the proxy has read the head (and the pieces before it).
#[derive(Clone, Default)]
pub struct Sending {
    pub parts: Vec<Bytes>,
    pub pause: Duration,
}

impl Sending {
    async fn wait(&self) {
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
    }
}

/// A response: status, headers and the whole body.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as the echo JSON it is expected to be.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "expected JSON, got {:?}: {e}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

impl H3 {
    /// Connects to `addr` as `name`, trusting only `ca_pem`.
    pub async fn connect(addr: SocketAddr, name: &str, ca_pem: &str) -> Result<Self, String> {
        let mut tls = client_config(&ClientOptions {
            ca: Some(ca_pem.to_owned()),
            alpn: vec![b"h3"],
            ..ClientOptions::default()
        });
        tls.enable_early_data = false;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| format!("QUIC client config: {e}"))?;
        let config = quinn::ClientConfig::new(Arc::new(crypto));
        let run = async {
            let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))
                .map_err(|e| format!("client endpoint: {e}"))?;
            let conn = endpoint
                .connect_with(config, addr, name)
                .map_err(|e| format!("connect {addr}: {e}"))?
                .await
                .map_err(|e| format!("QUIC handshake with {addr}: {e}"))?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
                .await
                .map_err(|e| format!("HTTP/3 with {addr}: {e}"))?;
            tokio::spawn(async move {
                let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            });
            Ok(Self {
                send,
                _endpoint: endpoint,
                conn,
            })
        };
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap_or_else(|_| Err(format!("HTTP/3 connect to {addr} timed out")))
    }

    /// Sends `req` with `body` (none for an empty one) and reads the whole answer.
    pub async fn request(
        &mut self,
        req: http::Request<()>,
        body: Option<Bytes>,
    ) -> Result<Answer, String> {
        let sending = Sending {
            parts: body.into_iter().collect(),
            pause: Duration::ZERO,
        };
        self.send(req, &sending).await
    }

    /// Sends `req` with its body as `sending` says and reads the whole answer.
    pub async fn send(
        &mut self,
        req: http::Request<()>,
        sending: &Sending,
    ) -> Result<Answer, String> {
        let run = async {
            let mut stream = self
                .send
                .send_request(req)
                .await
                .map_err(|e| format!("send request: {e}"))?;
            for part in &sending.parts {
                sending.wait().await;
                stream
                    .send_data(part.clone())
                    .await
                    .map_err(|e| format!("send body: {e}"))?;
            }
            sending.wait().await;
            stream.finish().await.map_err(|e| format!("finish: {e}"))?;
            let resp = stream
                .recv_response()
                .await
                .map_err(|e| format!("response: {e}"))?;
            let mut body = Vec::new();
            while let Some(mut chunk) = stream
                .recv_data()
                .await
                .map_err(|e| format!("response body: {e}"))?
            {
                while chunk.has_remaining() {
                    let part = chunk.chunk();
                    body.extend_from_slice(part);
                    let n = part.len();
                    chunk.advance(n);
                }
            }
            Ok(Answer {
                status: resp.status().as_u16(),
                headers: resp.headers().clone(),
                body: Bytes::from(body),
            })
        };
        tokio::time::timeout(PATIENCE, run)
            .await
            .unwrap_or_else(|_| Err("HTTP/3 request timed out".into()))
    }

    /// `GET https://host/path`.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer, String> {
        let req = http::Request::get(format!("https://{host}{path}"))
            .body(())
            .map_err(|e| e.to_string())?;
        self.request(req, None).await
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }
}
