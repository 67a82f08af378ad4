//! What the proxy changes in a message it relays: hop-by-hop headers out, forwarding
//! headers in, `Host` kept as the client sent it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request, response};

use super::ConnInfo;

/// Headers meaningful for one connection only (RFC 9110 §7.6.1), never relayed.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Prepares a request head to go upstream: hop-by-hop headers removed, `Host` set to
/// the authority the client addressed, `X-Forwarded-*` added, HTTP/1.1 on the wire.
pub fn prepare_request(head: &mut request::Parts, conn: &ConnInfo) {
    remove_hop_by_hop(&mut head.headers);
    // The server answers `100-continue` itself once the body is read; passing it on
    // would make the upstream answer it a second time.
    head.headers.remove(header::EXPECT);

    // HTTP/2 clients send `:authority` and no `Host`; an absolute-form URI overrides
    // `Host` too (RFC 9112 §3.2.2). Either way the upstream sees one `Host`.
    let host = match head.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => head.headers.get(header::HOST).cloned(),
    };
    if let Some(host) = host {
        head.headers.insert(header::HOST, host.clone());
        head.headers.insert(X_FORWARDED_HOST.clone(), host);
    }

    let ip = conn.client.ip().to_string();
    let xff = match joined(&head.headers, &X_FORWARDED_FOR) {
        Some(prior) => format!("{prior}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        head.headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let proto = if conn.tls_version.is_some() {
        "https"
    } else {
        "http"
    };
    head.headers
        .insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));

    head.version = Version::HTTP_11;
    if let Some(pq) = head.uri.path_and_query().cloned() {
        head.uri = http::Uri::from(pq);
    }
}

/// Prepares an upstream's response head to go downstream.
pub fn prepare_response(head: &mut response::Parts) {
    remove_hop_by_hop(&mut head.headers);
    // The server speaks its own protocol version downstream.
    head.version = Version::default();
}

/// Removes the fixed hop-by-hop headers, every `Proxy-*` header, and those that
/// `Connection` names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-kept"], "only end-to-end headers survive");
    }
}
