//! `tracing:`: where the proxy sends its OpenTelemetry spans (OTLP over HTTP), and
//! which requests it traces.

use std::time::Duration;

use super::Origin;
use super::walk::{Cx, Field, Fields};

/// How long one export may take when `tracing.otlp.timeout` does not say.
pub const OTLP_TIMEOUT: Duration = Duration::from_secs(5);

/// `tracing:` — OpenTelemetry traces of the requests (docs/operations.md#tracing).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL (`http://HOST:PORT/v1/traces`).
    pub endpoint: http::Uri,
    /// How long one export (one batch) may take before its spans are dropped.
    pub timeout: Duration,
    /// Headers sent with every export (an API key, a tenant).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// The share of new traces that are sampled, `0.0..=1.0`; a request that comes
    /// with a `traceparent` follows its sampled flag instead.
    pub sample_ratio: f64,
    /// The `service.name` resource attribute of every span.
    pub service_name: String,
    /// Where it was declared.
    pub origin: Origin,
}

/// Decodes `tracing: { otlp: { endpoint, timeout, headers }, sample_ratio, service_name }`.
pub(crate) fn tracing(cx: &mut Cx, field: &Field) -> Option<TracingConfig> {
    let mut f = Fields::new(cx, field)?;
    let otlp = f.require(cx, "otlp").and_then(|v| otlp(cx, &v));
    let sample_ratio = f.take("sample_ratio").map(|v| {
        let text = v.string(cx)?;
        match text.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Some(r),
            _ => {
                v.error(cx, format!("expected a number from 0 to 1, found `{text}`"));
                None
            }
        }
    });
    let service_name = f.take("service_name").map(|v| v.string(cx));
    f.finish(cx);
    let (endpoint, timeout, headers) = otlp?;
    Some(TracingConfig {
        endpoint,
        timeout,
        headers,
        sample_ratio: sample_ratio.unwrap_or(Some(1.0))?,
        service_name: service_name.unwrap_or_else(|| Some("portcullis".into()))?,
        origin: cx.origin(field.line),
    })
}

type Otlp = (
    http::Uri,
    Duration,
    Vec<(http::HeaderName, http::HeaderValue)>,
);

/// `otlp: { endpoint, timeout, headers: { NAME: value } }`.
fn otlp(cx: &mut Cx, field: &Field) -> Option<Otlp> {
    let mut f = Fields::new(cx, field)?;
    let endpoint = f.require(cx, "endpoint").and_then(|v| {
        let text = v.string(cx)?;
        match endpoint(&text) {
            Ok(uri) => Some(uri),
            Err(why) => {
                v.error(cx, why);
                None
            }
        }
    });
    let timeout = f.take("timeout").map(|v| v.duration(cx));
    let headers = f.take("headers").map(|v| {
        let mut headers = Vec::new();
        let mut ok = true;
        for (name, field) in v.entries(cx)? {
            let Some(text) = field.string(cx) else {
                ok = false;
                continue;
            };
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(&text),
            ) {
                (Ok(n), Ok(mut v)) => {
                    // Often a key: never shown by a logged or printed configuration.
                    v.set_sensitive(true);
                    headers.push((n, v));
                }
                (Err(_), _) => {
                    field.error(cx, "not a valid header name");
                    ok = false;
                }
                (_, Err(_)) => {
                    field.error(cx, "not a valid header value");
                    ok = false;
                }
            }
        }
        ok.then_some(headers)
    });
    f.finish(cx);
    Some((
        endpoint?,
        timeout.unwrap_or(Some(OTLP_TIMEOUT))?,
        headers.unwrap_or_else(|| Some(Vec::new()))?,
    ))
}

/// An `http://` or `https://` URL with a host; without a path, `/v1/traces` (the
/// OTLP/HTTP traces path) is added.
fn endpoint(text: &str) -> Result<http::Uri, String> {
    let expected = "expected http://HOST:PORT[/PATH] or https://…";
    let uri: http::Uri = text
        .parse()
        .map_err(|e| format!("`{text}` is not a URL ({e}): {expected}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("`{text}` is not an OTLP/HTTP URL: {expected}"));
    }
    if uri.path() == "/" && uri.query().is_none() {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/v1/traces"));
        return http::Uri::from_parts(parts).map_err(|e| format!("`{text}`: {e}"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoint_gets_the_traces_path_when_it_has_none() {
        let uri = endpoint("http://127.0.0.1:4318").map(|u| u.to_string());
        assert_eq!(uri.as_deref(), Ok("http://127.0.0.1:4318/v1/traces"));
        let uri = endpoint("https://otel.example:443/custom").map(|u| u.to_string());
        assert_eq!(uri.as_deref(), Ok("https://otel.example:443/custom"));
        assert!(endpoint("grpc://x:4317").is_err());
        assert!(endpoint("127.0.0.1:4318").is_err());
    }
}
