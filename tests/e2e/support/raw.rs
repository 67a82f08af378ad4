//! [`Raw`]: a plain TCP connection, for what an HTTP client will not send.

use std::net::SocketAddr;
use std::time::Duration;

/// A raw TCP connection, for what an HTTP client will not send (malformed framing,
/// slow heads).
pub struct Raw {
    stream: tokio::net::TcpStream,
    /// Bytes read past the last response [`Raw::read_response`] returned: pipelined
    /// responses may arrive in one segment.
    pending: Vec<u8>,
}

impl Raw {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        Raw {
            stream,
            pending: Vec::new(),
        }
    }

    /// Writes `bytes` (errors ignored: the peer may have closed).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Reads until the peer closes or `timeout` passes; returns what came and whether
    /// the peer closed (`false` on timeout).
    pub async fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        use tokio::io::AsyncReadExt;
        let mut out = std::mem::take(&mut self.pending);
        let mut buf = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return (out, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads one HTTP/1 response head and a `content-length` body; `None` if the peer
    /// closed first or `timeout` passed.
    pub async fn read_response(&mut self, timeout: Duration) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut out = std::mem::take(&mut self.pending);
        let mut buf = [0u8; 8192];
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    self.pending = out.split_off(end + 4 + len);
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) | Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        }
    }
}
