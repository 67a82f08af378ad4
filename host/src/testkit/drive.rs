//! One request through the filter chain, phase by phase, as `proxy::handle` drives it
//! (docs/phases.md) — with the upstream replaced by the test's answer.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use tracing::instrument::WithSubscriber as _;

use super::capture::Capture;
use super::outcome::{ClientResponse, Forwarded, MetricChange, Outcome};
use super::request::{Request, UpstreamResponse};
use super::{Harness, TestkitError};
use crate::metrics::global;
use crate::wasm::{BodyDecision, Decision, HttpFilters, StreamInfo};

/// What the phases produced, before the logs and metrics are added.
struct Walked {
    upstream_request: Option<Forwarded>,
    response: http::Response<Bytes>,
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
    let info = StreamInfo {
        client: request.client,
        local: SocketAddr::from(([127, 0, 0, 1], 8080)),
        listener: "test".into(),
        route: request.route.as_str().into(),
        tls_version: request.tls.then_some("TLSv1_3"),
    };
    let capture = Capture::default();
    let walked = walk(h, info, head, request.body.clone(), answer)
        .with_subscriber(capture.dispatch())
        .await;
    let captured = capture.take();
    let metrics = changes(&before, &metric_values(&names));
    let (head, body) = walked.response.into_parts();
    Ok(Outcome {
        upstream_request: walked.upstream_request,
        response: ClientResponse {
            status: head.status.as_u16(),
            headers: head.headers,
            body,
        },
        local: walked.local,
        logs: captured.logs,
        metrics,
        failure: captured.failures.into_iter().next(),
        http_calls: h.caller.take(),
        host_warnings: captured.warnings,
    })
}

async fn walk(
    h: &Harness,
    info: StreamInfo,
    mut head: http::request::Parts,
    body: Bytes,
    (mut answer, answer_body): (http::response::Parts, Bytes),
) -> Walked {
    let mut chain = HttpFilters::new(&h.plugins, info);
    let local = |response| Walked {
        upstream_request: None,
        response,
        local: true,
    };
    let walked = 'walk: {
        if let Decision::Respond(r) = chain.request_headers(&mut head, body.is_empty()).await {
            break 'walk local(r);
        }
        let mut sent = Bytes::new();
        if !body.is_empty() {
            match chain.request_body(body, true).await {
                BodyDecision::Forward(b) => sent = b,
                BodyDecision::Respond(r) => break 'walk local(r),
            }
        }
        let upstream_request = Some(Forwarded {
            method: head.method.to_string(),
            path: head
                .uri
                .path_and_query()
                .map_or_else(|| head.uri.to_string(), |p| p.as_str().to_string()),
            headers: head.headers,
            body: sent,
        });
        let answered = |response, local| Walked {
            upstream_request: upstream_request.clone(),
            response,
            local,
        };
        let eos = answer_body.is_empty();
        if let Decision::Respond(r) = chain.response_headers(&mut answer, eos).await {
            break 'walk answered(r, true);
        }
        let mut out = Bytes::new();
        if !eos {
            match chain.response_body(answer_body, true).await {
                BodyDecision::Forward(b) => out = b,
                BodyDecision::Respond(r) => break 'walk answered(r, true),
            }
        }
        answered(http::Response::from_parts(answer, out), false)
    };
    chain.finish().await;
    walked
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
