//! An in-process harness for the proxy's driver: the real `proxy::handle`, real
//! `Snapshot::build`, real upstream pools, served by hyper over real sockets on
//! 127.0.0.1:0, with real backends. The tests using it build their configuration in
//! code and reach into the snapshot (upstream health, pools, plugins), which the
//! binary (`support`) does not let them do; its server (workers, guard, TLS, limits)
//! is left out.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::config::{
    Config, HealthCheckConfig, HostMatch, ListenerConfig, PathMatch, RouteConfig, RouteMatch,
    TargetConfig, UpstreamConfig,
};
use portcullis::extensions;
use portcullis::proxy::ConnInfo;
use portcullis::snapshot::Snapshot;
use tokio::net::TcpListener;

/// The listener name every in-process config uses.
pub const LISTENER: &str = "web";

/// A config with one listener and these routes and upstreams.
pub fn config(routes: Vec<RouteConfig>, upstreams: Vec<UpstreamConfig>) -> Config {
    Config {
        admin: None,
        workers: 1,
        workers_origin: None,
        module_cache: None,
        shutdown: Default::default(),
        node: Default::default(),
        listeners: vec![ListenerConfig {
            name: LISTENER.into(),
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            protocol: Default::default(),
            tls: None,
            limits: Default::default(),
            http2: Default::default(),
            proxy_protocol: None,
            http3: false,
            origin: Default::default(),
        }],
        routes,
        l4_routes: Vec::new(),
        filters: vec![],
        services: vec![],
        upstreams,
        redis: None,
        tracing: None,
        access_log: None,
        providers: Default::default(),
        external_files: vec![],
    }
}

/// A route to `upstream` matching `matcher`.
pub fn route(name: &str, matcher: RouteMatch, upstream: &str) -> RouteConfig {
    RouteConfig {
        name: name.into(),
        listeners: None,
        matcher,
        priority: None,
        filters: vec![],
        shadow: vec![],
        canaries: vec![],
        upstream: upstream.into(),
        max_request_body: None,
        upgrade_idle_timeout: portcullis::config::UPGRADE_IDLE_TIMEOUT,
        mirror: None,
        origin: Default::default(),
    }
}

/// A match block from an optional host (`*.x` for a wildcard) and path prefix.
pub fn matching(host: Option<&str>, prefix: Option<&str>) -> RouteMatch {
    RouteMatch {
        host: host.map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Wildcard(suffix.into()),
            None => HostMatch::Exact(h.into()),
        }),
        path: prefix.map(|p| PathMatch::Prefix(p.into())),
        methods: None,
        headers: vec![],
        ..RouteMatch::default()
    }
}

/// An upstream over `targets` (address, weight).
pub fn upstream(name: &str, targets: &[(SocketAddr, u32)]) -> UpstreamConfig {
    UpstreamConfig {
        name: name.into(),
        targets: targets
            .iter()
            .map(|(a, w)| TargetConfig {
                address: a.to_string(),
                weight: *w,
                ..TargetConfig::default()
            })
            .collect(),
        ..UpstreamConfig::default()
    }
}

/// A health check probing `/healthz` every `interval`.
pub fn health_check(interval: Duration) -> HealthCheckConfig {
    HealthCheckConfig {
        kind: Default::default(),
        path: "/healthz".into(),
        interval,
        timeout: Duration::from_secs(1),
    }
}

/// The proxy's driver served on a real socket.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The snapshot it serves.
    pub snapshot: Arc<Snapshot>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Builds a snapshot of `config` and serves it.
    pub async fn start(config: Config) -> Proxy {
        let snapshot = Snapshot::build(
            Arc::new(config),
            &extensions::runtime().unwrap_or_else(|e| panic!("runtime: {e}")),
            1,
            None,
        )
        .unwrap_or_else(|e| panic!("snapshot should build, got: {e}"));
        Self::serve(Arc::new(snapshot)).await
    }

    /// Serves an already built snapshot.
    pub async fn serve(snapshot: Arc<Snapshot>) -> Proxy {
        let listener = bind().await;
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let snap = snapshot.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, client)) = listener.accept().await else {
                    continue;
                };
                let conn = ConnInfo {
                    client,
                    local: addr,
                    listener: LISTENER.into(),
                    tls_version: None,
                    client_subject: None,
                };
                let snap = snap.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let snap = snap.clone();
                        let conn = conn.clone();
                        async move {
                            Ok::<_, Infallible>(portcullis::proxy::handle(snap, &conn, req).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy {
            addr,
            snapshot,
            task,
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:0 should work: {e}"))
}

/// A real HTTP backend: answers with its name, counts requests and health probes,
/// records the last request's headers, counts body bytes as they stream.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Shared state the test inspects and steers.
    pub state: Arc<BackendState>,
    task: tokio::task::JoinHandle<()>,
}

/// What a backend saw, and how it should behave.
#[derive(Default)]
pub struct BackendState {
    /// Its name, the body of every answer.
    pub name: String,
    /// Requests other than health probes.
    pub requests: AtomicUsize,
    /// Health probes.
    pub probes: AtomicUsize,
    /// When false, `/healthz` answers 503.
    pub healthy: AtomicBool,
    /// Delay before answering, in ms.
    pub delay_ms: AtomicU64,
    /// Headers of the last request, as (name, value).
    pub last_headers: Mutex<Vec<(String, String)>>,
}

impl Backend {
    /// Starts a backend named `name`.
    pub async fn start(name: &str) -> Backend {
        let listener = bind().await;
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let state = Arc::new(BackendState {
            name: name.into(),
            healthy: AtomicBool::new(true),
            ..Default::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(st.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend { addr, state, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    st: Arc<BackendState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        st.probes.fetch_add(1, Ordering::SeqCst);
        let status = if st.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = status;
        return Ok(resp);
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut h) = st.last_headers.lock() {
        *h = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
    }
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let mut body = req.into_body();
    let mut bytes: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            bytes += d.len() as u64;
        }
    }
    let mut resp = Response::new(Full::new(Bytes::from(format!("{} {bytes}", st.name))));
    resp.headers_mut().insert(
        "connection",
        http::HeaderValue::from_static("keep-alive, x-backend-secret"),
    );
    resp.headers_mut()
        .insert("x-backend-secret", http::HeaderValue::from_static("1"));
    resp.headers_mut()
        .insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
    Ok(resp)
}

/// A local address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = bind().await;
    l.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"))
}

/// A plain HTTP client without pooling surprises.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_else(|e| panic!("reqwest client: {e}"))
}

/// Sends raw HTTP/1.1 bytes to `addr` and returns everything read until close.
pub async fn raw(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `cond` every 50 ms for up to `within`; true once it held.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

/// Loads `yaml` through the real configuration loader (written to a temporary
/// directory as `proxy.yaml`).
pub fn load_yaml(yaml: &str) -> Config {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    std::fs::write(dir.path().join("proxy.yaml"), yaml)
        .unwrap_or_else(|e| panic!("write proxy.yaml: {e}"));
    portcullis::config::load(dir.path())
        .unwrap_or_else(|e| panic!("the configuration should load, got:\n{e}"))
}
