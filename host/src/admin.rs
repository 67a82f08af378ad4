//! The admin listener: `GET /ready`, `GET /live`, `GET /status`, `GET /metrics`, the
//! dashboard (`GET /` and its data, `GET /dashboard.json`), `POST /reload` when
//! `admin.reload: true`, and `POST /filters/trace` (a log of one route's ABI calls).
//! It runs on its own thread and runtime, so a busy worker never delays a health check.
//!
//! Every request passes [`auth`] before the router: an endpoint added to [`route`] is
//! covered by the tokens' roles without a line of its own (reading needs `viewer`,
//! anything else `operator`). With `admin.tls` each connection is TLS first, with the
//! certificate of the configuration in force when it connects.

pub mod auth;
mod dashboard;
pub mod redact;
mod status;
mod trace;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::app::App;
use crate::listeners::{BoundListener, Kind};

type AdminResponse = http::Response<Full<Bytes>>;

/// How long a client has to finish the TLS handshake on the admin listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the admin thread. It serves the admin listener of the configuration in
/// force (following reloads that add, move or remove it) until the process exits.
pub fn start(app: &Arc<App>) -> std::io::Result<()> {
    let app = Arc::clone(app);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || rt.block_on(serve(app)))?;
    Ok(())
}

async fn serve(app: Arc<App>) {
    let mut table_rx = app.listeners();
    let mut running: HashSet<u64> = HashSet::new();
    loop {
        let table = Arc::clone(&table_rx.borrow_and_update());
        running.retain(|id| table.listeners.iter().any(|l| l.id == *id));
        for l in table.listeners.iter().filter(|l| l.kind == Kind::Admin) {
            if running.contains(&l.id) {
                continue;
            }
            running.insert(l.id);
            for socket in l.take_sockets(0) {
                match TcpListener::from_std(socket) {
                    Ok(socket) => {
                        tokio::spawn(accept_loop(Arc::clone(&app), Arc::clone(l), socket));
                    }
                    Err(e) => tracing::error!("cannot accept on the admin listener: {e}"),
                }
            }
        }
        if table_rx.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(app: Arc<App>, listener: Arc<BoundListener>, socket: TcpListener) {
    let mut stop = listener.stopped();
    loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            accepted = socket.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tokio::spawn(connection(Arc::clone(&app), tcp, peer));
                }
                Err(e) => {
                    tracing::warn!("admin accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves one admin connection: TLS first when `admin.tls` is configured (a client
/// without a certificate the client CA signed is refused in the handshake).
async fn connection(app: Arc<App>, tcp: tokio::net::TcpStream, peer: SocketAddr) {
    let acceptor = app.snapshot.load().tls().admin_acceptor();
    match acceptor {
        None => serve_connection(app, tcp, peer).await,
        Some(acceptor) => match crate::tls::accept(&acceptor, tcp, HANDSHAKE_TIMEOUT).await {
            Ok((tls, _)) => serve_connection(app, tls, peer).await,
            Err(e) => tracing::debug!(%peer, "admin: {e}"),
        },
    }
}

async fn serve_connection<IO>(app: Arc<App>, io: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let app = Arc::clone(&app);
        async move { Ok::<_, Infallible>(admit(&app, req, peer).await) }
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// The access check in front of every endpoint; the caller's [`auth::Access`] goes
/// into the request's extensions for the endpoint to read.
async fn admit(
    app: &Arc<App>,
    mut req: http::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> AdminResponse {
    let access = {
        let snapshot = app.snapshot.load();
        auth::check(snapshot.config.admin.as_ref(), &req, peer)
    };
    match access {
        Ok(access) => {
            req.extensions_mut().insert(access);
            route(app, req).await
        }
        Err(refused) => refused.response(),
    }
}

async fn route(app: &Arc<App>, req: http::Request<hyper::body::Incoming>) -> AdminResponse {
    use http::Method;
    match (req.method(), req.uri().path()) {
        // The process answers: for liveness probes, which must not fail while a
        // drain makes `/ready` answer 503.
        (&Method::GET | &Method::HEAD, "/live") => text(http::StatusCode::OK, "live\n".into()),
        (&Method::GET | &Method::HEAD, "/ready") => {
            if app.is_ready() {
                text(http::StatusCode::OK, "ready\n".into())
            } else {
                text(http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into())
            }
        }
        (&Method::GET | &Method::HEAD, "/status") => {
            json(http::StatusCode::OK, &status::status(app))
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut body = crate::metrics::global().render();
            app.snapshot
                .load()
                .tls()
                .render_metrics(&mut body, std::time::SystemTime::now());
            let mut resp = text(http::StatusCode::OK, body);
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        (&Method::GET | &Method::HEAD, "/") => {
            let mut resp =
                http::Response::new(Full::new(Bytes::from_static(dashboard::PAGE.as_bytes())));
            let headers = resp.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // The page runs only its own inline script and style, and loads nothing.
            headers.insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src data:",
                ),
            );
            resp
        }
        (&Method::GET | &Method::HEAD, "/dashboard.json") => {
            let mut resp = json(http::StatusCode::OK, &dashboard::data(app));
            resp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        (&Method::POST, "/reload") => reload(app).await,
        (&Method::POST, "/filters/trace") => trace::arm(app, req.uri().query().unwrap_or("")),
        (
            _,
            "/" | "/dashboard.json" | "/ready" | "/live" | "/status" | "/metrics" | "/reload"
            | "/filters/trace",
        ) => text(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        ),
        _ => text(http::StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

async fn reload(app: &Arc<App>) -> AdminResponse {
    let enabled = app
        .snapshot
        .load()
        .config
        .admin
        .as_ref()
        .is_some_and(|a| a.reload);
    if !enabled {
        return text(
            http::StatusCode::NOT_FOUND,
            "reload over the admin API is off (admin.reload: true turns it on)\n".into(),
        );
    }
    let worker = Arc::clone(app);
    match tokio::task::spawn_blocking(move || worker.reload()).await {
        Ok(Ok(generation)) => json(
            http::StatusCode::OK,
            &serde_json::json!({ "ok": true, "generation": generation }),
        ),
        Ok(Err(errors)) => json(
            http::StatusCode::UNPROCESSABLE_ENTITY,
            &serde_json::json!({
                "ok": false,
                "generation": app.snapshot.load().generation,
                "errors": errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => text(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}\n"),
        ),
    }
}

fn text(status: http::StatusCode, body: String) -> AdminResponse {
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(status: http::StatusCode, value: &serde_json::Value) -> AdminResponse {
    let mut body = value.to_string();
    body.push('\n');
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
