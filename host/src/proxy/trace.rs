//! The request's own span, for a sampled request: what it was, and what came of it.

use std::sync::Arc;

use http::{Request, Response};

use super::{ConnInfo, Outcome};
use crate::otel::{RequestTrace, Value};

/// What the request span says of the request, copied before the driver takes it.
pub(super) struct RequestAttrs {
    method: http::Method,
    path: Arc<str>,
    client: Arc<str>,
    listener: Arc<str>,
}

impl RequestAttrs {
    pub(super) fn of<B>(req: &Request<B>, conn: &ConnInfo) -> Self {
        Self {
            method: req.method().clone(),
            path: req.uri().path().into(),
            client: conn.client.ip().to_string().into(),
            listener: conn.listener.clone(),
        }
    }
}

/// Queues the request's span, ended with its response head.
pub(super) fn finish<B>(
    span: &RequestTrace,
    attrs: RequestAttrs,
    resp: &Response<B>,
    outcome: &Outcome,
) {
    let status = resp.status().as_u16();
    let name = match &outcome.route {
        Some(route) => format!("{} {route}", attrs.method),
        None => attrs.method.to_string(),
    };
    let mut list = vec![
        ("http.request.method", Value::from(attrs.method.as_str())),
        ("url.path", Value::Str(attrs.path)),
        ("client.address", Value::Str(attrs.client)),
        ("portcullis.listener", Value::Str(attrs.listener)),
        ("http.response.status_code", Value::Int(i64::from(status))),
    ];
    if let Some(route) = &outcome.route {
        list.push(("http.route", route.into()));
    }
    if let Some(upstream) = &outcome.upstream {
        list.push(("portcullis.upstream", upstream.into()));
    }
    if outcome.local {
        list.push(("portcullis.local_response", Value::Int(1)));
    }
    span.finish(name, list, status >= 500);
}
