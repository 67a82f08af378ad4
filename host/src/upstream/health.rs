//! Active health checks: one background task per upstream probing every target with
//! `GET path`; 2xx/3xx is healthy. The tasks run on one process-wide runtime thread
//! of their own, so they neither depend on which thread built the snapshot nor steal
//! time from the workers. A task stops when its upstream is dropped (a reload that
//! removed or changed it).

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::target::{Target, TargetSet};
use crate::config::HealthCheckConfig;
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
    let scheme = connector.scheme();
    let client: Client<UpstreamConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let probes = set.list.iter().map(|t| probe(&client, &scheme, t, config));
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

async fn probe(
    client: &Client<UpstreamConnector, Empty<Bytes>>,
    scheme: &http::uri::Scheme,
    target: &Target,
    config: &HealthCheckConfig,
) -> bool {
    let uri = format!("{scheme}://{}{}", target.address, config.path);
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return false;
    };
    let mut req = http::Request::new(Empty::new());
    *req.uri_mut() = uri;
    match tokio::time::timeout(config.timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let s = resp.status();
            s.is_success() || s.is_redirection()
        }
        _ => false,
    }
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
