//! [`Load`]: many real clients sending requests until the proxy stops accepting, with
//! every outcome counted. Built for the drain: a request is a failure when its
//! connection was established and it got no complete 200 response (a reset, a close
//! mid-response, an error status); a connection the proxy refused is counted apart,
//! since that client never got a connection and knows nothing was sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// What the clients saw so far.
#[derive(Default, Debug)]
pub struct Tally {
    /// Complete 200 responses.
    pub ok: AtomicU64,
    /// HTTP/1 responses that carried `Connection: close`.
    pub told_to_close: AtomicU64,
    /// Connection attempts refused (the listener was closed).
    pub refused: AtomicU64,
    /// HTTP/2 requests hyper reports it never sent (`is_canceled`): a GOAWAY came
    /// between the connection saying it was ready and the request going out; or that
    /// a GOAWAY says the server never processed.
    pub unsent: AtomicU64,
    /// Every failed request, described.
    pub failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }

    /// The failures so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Clients of three kinds: HTTP/1.1 keep-alive, a new HTTP/1.1 connection per
/// request, and HTTP/2 prior knowledge, each sending requests one after the other.
pub struct Load {
    /// What they saw.
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `keep_alive`, `fresh` and `h2` clients sending `GET path` to `addr`.
    pub fn start(addr: SocketAddr, path: &str, keep_alive: usize, fresh: usize, h2: usize) -> Load {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for (kind, n) in [
            (Kind::KeepAlive, keep_alive),
            (Kind::Fresh, fresh),
            (Kind::H2, h2),
        ] {
            for i in 0..n {
                let client = Client {
                    addr,
                    path: format!("{path}/{kind:?}/{i}"),
                    tally: Arc::clone(&tally),
                    stop: Arc::clone(&stop),
                };
                tasks.push(tokio::spawn(client.run(kind)));
            }
        }
        Load { tally, stop, tasks }
    }

    /// Waits (up to `timeout`) until `n` requests have succeeded.
    pub async fn wait_for_ok(&self, n: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.tally.ok.load(Ordering::Relaxed) < n {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops every client once its request in flight is answered; false if one did
    /// not stop within `timeout`.
    pub async fn stop(self, timeout: Duration) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        self.finish(timeout).await
    }

    /// Waits (up to `timeout`) for every client to end by itself (its connection
    /// refused); then stops any left. Returns whether they all ended by themselves.
    pub async fn finish(self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut all = true;
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(deadline, t).await.is_err() {
                all = false;
                self.stop.store(true, Ordering::Relaxed);
                abort.abort();
            }
        }
        all
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    KeepAlive,
    Fresh,
    H2,
}

struct Client {
    addr: SocketAddr,
    path: String,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
}

impl Client {
    async fn run(self, kind: Kind) {
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let tcp = match TcpStream::connect(self.addr).await {
                Ok(tcp) => tcp,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    self.tally.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => return self.tally.fail(format!("{kind:?}: connect: {e}")),
            };
            let _ = tcp.set_nodelay(true);
            let done = match kind {
                Kind::KeepAlive => self.http1(tcp, &mut n, false).await,
                Kind::Fresh => self.http1(tcp, &mut n, true).await,
                Kind::H2 => self.http2(tcp, &mut n).await,
            };
            if done {
                return;
            }
        }
    }

    fn request(&self, n: u64, close: bool) -> http::Request<Empty<Bytes>> {
        let mut req = http::Request::get(format!("{}/{n}", self.path))
            .header(http::header::HOST, "load.test");
        if close {
            req = req.header(http::header::CONNECTION, "close");
        }
        req.body(Empty::new())
            .unwrap_or_else(|e| panic!("a valid request: {e}"))
    }

    /// Requests on one HTTP/1.1 connection until the proxy asks to close it (or,
    /// `fresh`, one request). Returns true when the client should stop.
    async fn http1(&self, tcp: TcpStream, n: &mut u64, fresh: bool) -> bool {
        let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        {
            Ok(pair) => pair,
            Err(e) => {
                self.tally.fail(format!("http1 handshake: {e}"));
                return true;
            }
        };
        tokio::spawn(conn);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            if send.ready().await.is_err() {
                // Closed while idle, before anything was sent: nothing was lost, but
                // the proxy should have said so in its last response.
                self.tally.fail(format!(
                    "{}: the proxy closed a keep-alive connection without `Connection: close`",
                    self.path
                ));
                return true;
            }
            *n += 1;
            let resp = match send.send_request(self.request(*n, fresh)).await {
                Ok(resp) => resp,
                Err(e) => {
                    self.tally.fail(format!("{}/{n}: {e:?}", self.path));
                    return true;
                }
            };
            let close = resp
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            if !self.body_ok(resp, *n).await {
                return true;
            }
            if close && !fresh {
                self.tally.told_to_close.fetch_add(1, Ordering::Relaxed);
            }
            if close || fresh {
                return false;
            }
        }
    }

    /// Requests on one HTTP/2 connection until the proxy says GOAWAY. Returns true
    /// when the client should stop.
    async fn http2(&self, tcp: TcpStream, n: &mut u64) -> bool {
        let handshake =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await;
        let (mut send, conn) = match handshake {
            Ok(pair) => pair,
            Err(e) => {
                self.tally.fail(format!("h2 handshake: {e}"));
                return true;
            }
        };
        tokio::spawn(conn);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            // After a GOAWAY the connection takes no new stream: a new one is opened.
            if send.ready().await.is_err() {
                return false;
            }
            *n += 1;
            let resp = match send.send_request(self.request(*n, false)).await {
                Ok(resp) => resp,
                // The GOAWAY arrived between `ready` and the send: hyper never sent
                // the request (it says so), and a client retries it elsewhere.
                Err(e) if e.is_canceled() || unprocessed(&e) => {
                    self.tally.unsent.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                Err(e) => {
                    self.tally.fail(format!("{}/{n} (h2): {e:?}", self.path));
                    return true;
                }
            };
            if !self.body_ok(resp, *n).await {
                return true;
            }
        }
    }

    async fn body_ok(&self, resp: http::Response<hyper::body::Incoming>, n: u64) -> bool {
        let status = resp.status();
        match resp.into_body().collect().await {
            Ok(_) if status == 200 => {
                self.tally.ok.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(body) => {
                let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                self.tally
                    .fail(format!("{}/{n}: {status} {text}", self.path));
                false
            }
            Err(e) => {
                self.tally.fail(format!("{}/{n}: body: {e:?}", self.path));
                false
            }
        }
    }
}

/// Whether `e` is a GOAWAY (NO_ERROR) that failed this stream: one numbered above the
/// GOAWAY's last stream, which the server says it never processed (RFC 9113 §6.8), so
/// a client retries it as it would an unsent one.
fn unprocessed(e: &hyper::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h2| {
            h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR)
        })
}
