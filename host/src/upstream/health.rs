//! Active health checks: one background task per upstream probing every target with
//! `GET path` (2xx/3xx is healthy), gRPC's `grpc.health.v1.Health/Check` over HTTP/2
//! (`SERVING` is healthy), or a TCP connect. The tasks run on one process-wide runtime thread
//! of their own, so they neither depend on which thread built the snapshot nor steal
//! time from the workers. A task stops when its upstream is dropped (a reload that
//! removed or changed it).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::target::{Target, TargetSet};
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::tls::connector::UpstreamConnector;

/// A running health-check task; dropping it stops the task.
pub struct Task {
    _stop: oneshot::Sender<()>,
}

/// Starts probing `targets`. `None` if the background runtime could not be started
/// (logged; the targets then stay as passive marking leaves them).
pub fn start(
    upstream: &str,
    targets: Arc<TargetSet>,
    config: HealthCheckConfig,
    connector: UpstreamConnector,
) -> Option<Task> {
    let handle = runtime()?;
    let (stop, stopped) = oneshot::channel();
    let name = upstream.to_string();
    handle.spawn(async move {
        tokio::select! {
            _ = stopped => {}
            _ = probe_forever(&name, &targets, &config, connector) => {}
        }
        tracing::debug!(upstream = %name, "health check stopped");
    });
    Some(Task { _stop: stop })
}

async fn probe_forever(
    upstream: &str,
    set: &TargetSet,
    config: &HealthCheckConfig,
    connector: UpstreamConnector,
) {
    let prober = Prober::new(config, connector);
    loop {
        let probes = set.list.iter().map(|t| prober.probe(t, config));
        let results = futures_util::future::join_all(probes).await;
        for (target, healthy) in set.list.iter().zip(results) {
            let was = target.healthy.swap(healthy, Ordering::Relaxed);
            let backed_off = healthy && target.down_until_ms.swap(0, Ordering::Relaxed) != 0;
            if was != healthy || backed_off {
                set.health_changed();
            }
            if was != healthy {
                tracing::info!(upstream, target = %target.address, healthy, "target health changed");
            }
        }
        tokio::time::sleep(config.interval).await;
    }
}

/// How one upstream's targets are probed.
enum Prober {
    Http {
        client: Client<UpstreamConnector, Empty<Bytes>>,
        scheme: http::uri::Scheme,
    },
    Grpc {
        client: Client<UpstreamConnector, Full<Bytes>>,
        scheme: http::uri::Scheme,
        /// The request message, framed: `HealthCheckRequest { service }`.
        request: Bytes,
    },
    Tcp(UpstreamConnector),
}

impl Prober {
    fn new(config: &HealthCheckConfig, connector: UpstreamConnector) -> Prober {
        let scheme = connector.scheme();
        match &config.kind {
            HealthCheckKind::Http => Prober::Http {
                client: Client::builder(TokioExecutor::new()).build(connector),
                scheme,
            },
            HealthCheckKind::Grpc { service } => Prober::Grpc {
                client: Client::builder(TokioExecutor::new())
                    .http2_only(true)
                    .build(connector),
                scheme,
                request: grpc_health_request(service),
            },
            HealthCheckKind::Tcp => Prober::Tcp(connector),
        }
    }

    /// Whether `target` answers well within the check's timeout.
    async fn probe(&self, target: &Target, config: &HealthCheckConfig) -> bool {
        let probe = async {
            match self {
                Prober::Http { client, scheme } => {
                    let mut req = http::Request::new(Empty::new());
                    *req.uri_mut() = uri(scheme, target, &config.path)?;
                    let s = client.request(req).await.ok()?.status();
                    Some(s.is_success() || s.is_redirection())
                }
                Prober::Grpc {
                    client,
                    scheme,
                    request,
                } => {
                    let mut req = http::Request::new(Full::new(request.clone()));
                    *req.method_mut() = http::Method::POST;
                    *req.uri_mut() = uri(scheme, target, &config.path)?;
                    let headers = req.headers_mut();
                    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
                    headers.insert("te", HeaderValue::from_static("trailers"));
                    let resp = client.request(req).await.ok()?;
                    let head_status = resp.headers().get("grpc-status").cloned();
                    let body = resp.into_body().collect().await.ok()?;
                    let status = body
                        .trailers()
                        .and_then(|t| t.get("grpc-status").cloned())
                        .or(head_status);
                    let ok = status.is_some_and(|s| s.as_bytes() == b"0");
                    Some(ok && grpc_serving(&body.to_bytes()))
                }
                Prober::Tcp(connector) => {
                    let mut connector = connector.clone();
                    let uri = uri(&http::uri::Scheme::HTTP, target, "/")?;
                    Some(
                        tower_service::Service::call(&mut connector, uri)
                            .await
                            .is_ok(),
                    )
                }
            }
        };
        matches!(
            tokio::time::timeout(config.timeout, probe).await,
            Ok(Some(true))
        )
    }
}

fn uri(scheme: &http::uri::Scheme, target: &Target, path: &str) -> Option<http::Uri> {
    format!("{scheme}://{}{path}", target.address).parse().ok()
}

/// A framed `grpc.health.v1.HealthCheckRequest { service }`: the gRPC message prefix
/// (not compressed, length), then field 1 as a length-delimited string.
fn grpc_health_request(service: &str) -> Bytes {
    let mut message = Vec::with_capacity(service.len() + 3);
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Whether a framed `HealthCheckResponse` says `SERVING` (field 1 = 1). Anything
/// else, malformed included, is not.
fn grpc_serving(body: &[u8]) -> bool {
    let Some(message) = body.get(5..) else {
        return false;
    };
    let Some(&[_, a, b, c, d]) = body.get(..5) else {
        return false;
    };
    if u32::from_be_bytes([a, b, c, d]) as usize != message.len() {
        return false;
    }
    // The status is the only field a server sends: `08 01` for SERVING.
    message == [0x08, 0x01]
}

/// The process-wide runtime health checks run on, started on first use.
fn runtime() -> Option<Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start the health-check runtime: {e}");
                    return None;
                }
            };
            let handle = rt.handle().clone();
            let spawned = std::thread::Builder::new()
                .name("portcullis-health".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()));
            match spawned {
                Ok(_) => Some(handle),
                Err(e) => {
                    tracing::error!("cannot start the health-check thread: {e}");
                    None
                }
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grpc_health_messages_are_framed_protobuf() {
        assert_eq!(&grpc_health_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(
            &grpc_health_request("db")[..],
            [0, 0, 0, 0, 4, 0x0a, 2, b'd', b'b']
        );
        let long = "s".repeat(200);
        assert_eq!(&grpc_health_request(&long)[5..8], [0x0a, 0xc8, 0x01]);
        assert!(grpc_serving(&[0, 0, 0, 0, 2, 0x08, 0x01]));
        for other in [
            &[0, 0, 0, 0, 2, 0x08, 0x02][..], // NOT_SERVING
            &[0, 0, 0, 0, 0][..],             // UNKNOWN (the default, left out)
            &[0, 0, 0, 0, 9, 0x08, 0x01][..], // a length that lies
            &[0, 0, 0][..],
        ] {
            assert!(!grpc_serving(other), "{other:?}");
        }
    }
}
