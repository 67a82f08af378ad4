//! Layer 4 through the real binary: `tcp` listeners relaying to real TCP peers (plain,
//! with TLS terminated, and TLS passed through by SNI to two real TLS servers), the
//! PROXY protocol both ways, and `udp` listeners.

mod proxy_protocol;
mod sni;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every network step of these tests; generous for a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A TCP server on 127.0.0.1:0 that answers every read with `TAG:` and the bytes it
/// read, and records every byte each connection sent it.
pub struct TcpEcho {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpEcho {
    /// Starts one on the test's runtime.
    pub async fn start(tag: &str) -> TcpEcho {
        let socket = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let tag = tag.to_string();
        let seen = Arc::clone(&received);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = socket.accept().await {
                let (tag, seen) = (tag.clone(), Arc::clone(&seen));
                tokio::spawn(async move { echo(tcp, &tag, &seen).await });
            }
        });
        TcpEcho {
            addr,
            received,
            task,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every byte each connection sent so far, by connection.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Echoes `io` with `TAG:` before each read's bytes, recording what it read in a
/// new entry of `received`.
pub async fn echo<I: AsyncRead + AsyncWrite + Unpin>(
    mut io: I,
    tag: &str,
    received: &Mutex<Vec<Vec<u8>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let index = match received.lock() {
        Ok(mut r) => {
            r.push(Vec::new());
            r.len() - 1
        }
        Err(_) => return,
    };
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Ok(mut r) = received.lock()
            && let Some(entry) = r.get_mut(index)
        {
            entry.extend_from_slice(&buf[..n]);
        }
        let mut out = format!("{tag}:").into_bytes();
        out.extend_from_slice(&buf[..n]);
        if io.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Sends `line` on `io` and reads until the answer holds `line` (the echo's
/// `TAG:line`); returns the answer.
pub async fn round_trip<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, line: &str) -> String {
    io.write_all(line.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("send {line:?}: {e}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !String::from_utf8_lossy(&got).contains(line) {
            match io.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the echo of {line:?}: {e}"),
            }
        }
    };
    if tokio::time::timeout(PATIENCE, read).await.is_err() {
        panic!("no echo of {line:?} within {PATIENCE:?}");
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Connects to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connect {addr}: timed out"))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

/// Reads until the peer closes (or `PATIENCE` passes): what it sent, and whether it
/// closed.
pub async fn read_to_close<I: AsyncRead + Unpin>(io: &mut I) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(PATIENCE, read).await.unwrap_or(false);
    (got, closed)
}
