//! What a connection's first bytes say, read before anything is served: a PROXY
//! protocol header from a trusted peer (consumed), and the server name of a TLS
//! ClientHello for SNI routing (only peeked: those bytes go on to the upstream as
//! they came).
//!
//! Both are read with `MSG_PEEK` and a short wait between looks until enough has
//! arrived, bounded by the listener's `header_timeout` and a size limit; a header or
//! hello that never completes, or is malformed, fails its own connection only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::l4::client_hello::{self, Hello};
use crate::l4::proxy_protocol::{self, Header};

/// Why a connection's first bytes were refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum PeekError {
    /// Not all of it arrived within the listener's `header_timeout`.
    #[error("no complete {0} within {1:?}")]
    Timeout(&'static str, Duration),
    /// The client closed (or reset) the connection first.
    #[error("the client closed before sending a complete {0}")]
    Closed(&'static str),
    /// Malformed.
    #[error("{0}")]
    Malformed(String),
}

/// Reads the PROXY header (v1 or v2) a trusted peer must send first; returns the
/// client it names (`None`: the peer itself, for `UNKNOWN` and `LOCAL`).
pub(super) async fn proxy_header(
    tcp: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, PeekError> {
    const WHAT: &str = "PROXY protocol header";
    let mut buf = vec![0u8; proxy_protocol::V2_MAX];
    let (length, source) =
        peek_until(
            tcp,
            &mut buf,
            timeout,
            WHAT,
            |bytes| match proxy_protocol::parse(bytes) {
                Ok(Header::Incomplete) => Ok(None),
                Ok(Header::Done { length, source, .. }) => Ok(Some((length, source))),
                Err(e) => Err(PeekError::Malformed(e)),
            },
        )
        .await?;
    // Consume exactly the header: what follows is the client's own.
    let header = buf.get_mut(..length).ok_or(PeekError::Closed(WHAT))?;
    tcp.read_exact(header)
        .await
        .map_err(|_| PeekError::Closed(WHAT))?;
    Ok(source)
}

/// The server name of the ClientHello the client is sending, without consuming it:
/// `None` when it sends no name, or is not speaking TLS at all.
pub(super) async fn server_name(
    tcp: &TcpStream,
    timeout: Duration,
) -> Result<Option<String>, PeekError> {
    let mut buf = vec![0u8; client_hello::MAX_HELLO];
    peek_until(tcp, &mut buf, timeout, "TLS ClientHello", |bytes| {
        Ok(match client_hello::parse(bytes) {
            Hello::Incomplete => None,
            Hello::NotTls => Some(None),
            Hello::Tls(name) => Some(name),
        })
    })
    .await
}

/// Peeks into `buf` until `decide` has an answer (`Ok(None)`: more bytes needed).
/// A full buffer with no answer yet is decided on as it is.
async fn peek_until<T>(
    tcp: &TcpStream,
    buf: &mut [u8],
    timeout: Duration,
    what: &'static str,
    mut decide: impl FnMut(&[u8]) -> Result<Option<T>, PeekError>,
) -> Result<T, PeekError> {
    let look = async {
        let mut wait = Duration::from_millis(1);
        let mut seen = 0;
        loop {
            let n = tcp.peek(buf).await.map_err(|_| PeekError::Closed(what))?;
            if n == 0 {
                return Err(PeekError::Closed(what));
            }
            let bytes = buf.get(..n).unwrap_or_default();
            if let Some(answer) = decide(bytes)? {
                return Ok(answer);
            }
            if n == buf.len() {
                return Err(PeekError::Malformed(format!("a {what} over {n} bytes")));
            }
            // The peek returns at once while the bytes it saw are unread: wait a
            // little for the rest (the wait grows while nothing new comes).
            wait = if n > seen {
                Duration::from_millis(1)
            } else {
                (wait * 2).min(Duration::from_millis(50))
            };
            seen = n;
            tokio::time::sleep(wait).await;
        }
    };
    tokio::time::timeout(timeout, look)
        .await
        .unwrap_or(Err(PeekError::Timeout(what, timeout)))
}
