//! [`Backend`]: a real HTTP server for the proxy to forward to.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// A request a [`Backend`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP version, e.g. `HTTP/1.1`.
    pub version: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The trailers after the body, if any came.
    pub trailers: Option<http::HeaderMap>,
}

/// What a [`Backend`] answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A plain-text reply.
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answers after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A real HTTP server on 127.0.0.1:0, on its own thread and runtime.
pub struct Backend {
    addr: SocketAddr,
    count: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Backend {
    /// Serves every request with `handler`.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Backend {
        let handler: Arc<Handler> = Arc::new(handler);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("backend cannot bind: {e}"));
        let addr = std_listener
            .local_addr()
            .unwrap_or_else(|e| panic!("backend has no address: {e}"));
        let _ = std_listener.set_nonblocking(true);
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (c, s) = (Arc::clone(&count), Arc::clone(&seen));
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => panic!("backend runtime: {e}"),
            };
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => panic!("backend listener: {e}"),
                };
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (handler, c, s) =
                            (Arc::clone(&handler), Arc::clone(&c), Arc::clone(&s));
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let (handler, c, s) =
                                    (Arc::clone(&handler), Arc::clone(&c), Arc::clone(&s));
                                async move { backend_handle(req, &*handler, &c, &s).await }
                            });
                            let _ = hyper_util::server::conn::auto::Builder::new(
                                hyper_util::rt::TokioExecutor::new(),
                            )
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
        });
        Backend {
            addr,
            count,
            seen,
            stop: Some(stop_tx),
        }
    }

    /// Answers 200 with a JSON echo of the request plus `"backend": id`, and the
    /// header `x-backend: id`.
    pub fn echo(id: &str) -> Backend {
        let id = id.to_owned();
        Backend::start(move |req| echo_reply(&id, req))
    }

    /// Like [`Backend::echo`], after `delay`.
    pub fn slow(id: &str, delay: Duration) -> Backend {
        let id = id.to_owned();
        Backend::start(move |req| echo_reply(&id, req).delayed(delay))
    }

    /// Answers every request with `code` and a short text body.
    pub fn status(code: u16) -> Backend {
        Backend::start(move |_| Reply::text(code, &format!("status {code}\n")))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until `n` requests have been received (an answer may still be on its
    /// way); panics after `limit`.
    pub async fn wait_for_requests(&self, n: usize, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.requests() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "the backend got {} of {n} requests in {limit:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn echo_reply(id: &str, req: &Seen) -> Reply {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "backend": id,
        "method": req.method,
        "path": req.path,
        "version": req.version,
        "headers": headers,
        "body": String::from_utf8_lossy(&req.body),
    });
    Reply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-backend".into(), id.into()),
        ],
        body: body.to_string().into_bytes(),
        delay: Duration::ZERO,
    }
}

async fn backend_handle(
    req: http::Request<hyper::body::Incoming>,
    handler: &Handler,
    count: &AtomicUsize,
    seen: &Mutex<Vec<Seen>>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(_) => (Bytes::new(), None),
    };
    let req = Seen {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into()),
        version: format!("{:?}", parts.version),
        headers: parts.headers,
        body,
        trailers,
    };
    count.fetch_add(1, Ordering::SeqCst);
    let reply = handler(&req);
    if let Ok(mut s) = seen.lock() {
        s.push(req);
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = http::Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    Ok(resp)
}
