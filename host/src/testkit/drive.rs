//! One request through the filter chain: the proxy's own phase driver
//! ([`proxy::drive`]) on a route of the harness's filters, whose [`Exchange`] records
//! what went upstream and answers with the test's described response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tracing::instrument::WithSubscriber as _;

use super::capture::Capture;
use super::outcome::{ClientResponse, Forwarded, MetricChange, Outcome};
use super::request::{Request, UpstreamResponse};
use super::{Harness, TestkitError};
use crate::body::{self, ProxyBody};
use crate::metrics::global;
use crate::proxy::{self, ConnInfo, Exchange, ProxyError};
use crate::snapshot::Route;
use crate::wasm::HttpFilters;

/// The address the test's requests arrive on.
const LOCAL: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// What the phases produced, before the logs and metrics are added.
struct Walked {
    upstream_request: Option<Forwarded>,
    response: ClientResponse,
    local: bool,
}

pub(super) async fn run(
    h: &Harness,
    request: &Request,
    upstream: &UpstreamResponse,
) -> Result<Outcome, TestkitError> {
    let head = request.head()?;
    let answer = upstream.parts()?;
    let names: Vec<String> = h.plugins.iter().map(|p| p.config.name.clone()).collect();
    let before = metric_values(&names);
    let conn = ConnInfo {
        client: request.client,
        local: LOCAL,
        listener: "test".into(),
        tls_version: request
            .tls
            .then(|| crate::tls::version_name(rustls::ProtocolVersion::TLSv1_3))
            .flatten(),
        client_subject: None,
    };
    let route = Route {
        name: request.route.as_str().into(),
        filters: h.plugins.clone(),
        shadow: HttpFilters::shadow_counters(&h.plugins, &h.shadow, &request.route),
        canaries: Vec::new(),
        upstream_name: "test".into(),
        upstream: Described {
            answer,
            forwarded: Mutex::new(None),
        },
        max_request_body: None,
        upgrade_idle_timeout: crate::config::UPGRADE_IDLE_TIMEOUT,
        mirror: None,
    };
    let req = http::Request::from_parts(head, body::full(request.body.clone()));
    let capture = Capture::default();
    let walked = walk(&route, &conn, req)
        .with_subscriber(capture.dispatch())
        .await;
    let captured = capture.take();
    let metrics = changes(&before, &metric_values(&names));
    Ok(Outcome {
        upstream_request: walked.upstream_request,
        response: walked.response,
        local: walked.local,
        logs: captured.logs,
        metrics,
        failure: captured.failures.into_iter().next(),
        http_calls: h.caller.take(),
        host_warnings: captured.warnings,
        shadow: captured.shadow,
    })
}

async fn walk(route: &Route<Described>, conn: &ConnInfo, req: http::Request<ProxyBody>) -> Walked {
    let driven = proxy::drive(|_| Some(route), conn, req).await;
    let (head, mut stream) = driven.response.into_parts();
    // The client reads the body to its end, through the response body phase; a
    // filter failing there breaks the body off (the failure is in the report).
    let mut body = BytesMut::new();
    while let Some(Ok(frame)) = stream.frame().await {
        if let Some(data) = frame.data_ref() {
            body.extend_from_slice(data);
        }
    }
    drop(stream);
    // Every body is done: the chain finishes here, under the capture, rather than in
    // the background.
    if let Some(chain) = driven.chain.and_then(|c| Arc::try_unwrap(c).ok()) {
        chain.into_inner().finish().await;
    }
    Walked {
        upstream_request: lock(&route.upstream.forwarded).take(),
        response: ClientResponse {
            status: head.status.as_u16(),
            headers: head.headers,
            body: body.freeze(),
        },
        local: driven.outcome.local,
    }
}

/// The upstream of a test: records the request it gets and answers with the response
/// the test describes.
struct Described {
    answer: (http::response::Parts, Bytes),
    forwarded: Mutex<Option<Forwarded>>,
}

impl Exchange for Described {
    fn name(&self) -> &str {
        "test"
    }

    async fn send(
        &self,
        req: http::Request<ProxyBody>,
        _conn: &ConnInfo,
        _route: &str,
    ) -> (
        Option<Arc<str>>,
        Result<http::Response<ProxyBody>, ProxyError>,
    ) {
        let (head, body) = req.into_parts();
        // Reading the body runs the request body phase; a filter that answers there
        // ends it early, and nothing went upstream.
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return (None, Err(ProxyError::DownstreamBody(e))),
        };
        *lock(&self.forwarded) = Some(Forwarded {
            method: head.method.to_string(),
            path: head
                .uri
                .path_and_query()
                .map_or_else(|| head.uri.to_string(), |p| p.as_str().to_string()),
            headers: head.headers,
            body,
        });
        let (head, body) = self.answer.clone();
        (None, Ok(http::Response::from_parts(head, body::full(body))))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Values = HashMap<(String, String), (crate::metrics::CustomKind, i64)>;

fn metric_values(filters: &[String]) -> Values {
    let mut out = HashMap::new();
    for f in filters {
        for (name, kind, value) in global().custom_values(f) {
            out.insert((f.clone(), name), (kind, value));
        }
    }
    out
}

/// The metrics that moved or appeared, sorted by name.
fn changes(before: &Values, after: &Values) -> Vec<MetricChange> {
    let mut out: Vec<MetricChange> = after
        .iter()
        .filter_map(|(key, &(kind, value))| {
            let old = before.get(key).map(|(_, v)| *v);
            let delta = value - old.unwrap_or(0);
            (old.is_none() || delta != 0).then(|| MetricChange {
                name: key.1.clone(),
                kind,
                value,
                delta,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
