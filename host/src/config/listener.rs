//! `listeners:`: addresses to bind, TLS termination and client limits.

use super::walk::{Cx, Field, Fields};
use super::{
    CertificatePair, ClientAuth, Http2Settings, ListenerConfig, ListenerLimits, ListenerProtocol,
    TlsConfig, TlsVersion,
};

/// Decodes one `listeners[]` item.
pub(crate) fn listener(cx: &mut Cx, item: &Field) -> Option<ListenerConfig> {
    let (mut f, name) = Fields::named(cx, item, "listeners")?;
    let address = f.require(cx, "address").and_then(|v| v.socket_addr(cx));
    let protocol = f
        .take("protocol")
        .map(|v| (super::l4::listener_protocol(cx, &v), v));
    let tls = f.take("tls").map(|v| tls(cx, &v));
    let proxy_protocol = f
        .take("proxy_protocol")
        .map(|v| (super::l4::proxy_protocol_in(cx, &v), v));
    let limits = f.take("limits").map(|v| limits(cx, &v));
    let http3 = f.take("http3").map(|v| (v.bool(cx), v));
    let http2 = f.take("http2").map(|v| (http2(cx, &v), v));
    f.finish(cx);
    let protocol = match protocol {
        Some((p, v)) => {
            let p = p?;
            if p == ListenerProtocol::Udp && tls.is_some() {
                v.error(
                    cx,
                    "a udp listener cannot terminate TLS (no DTLS); leave tls out",
                );
                return None;
            }
            p
        }
        None => ListenerProtocol::Http,
    };
    let proxy_protocol = match proxy_protocol {
        Some((pp, v)) => {
            if protocol == ListenerProtocol::Udp {
                v.error(
                    cx,
                    "PROXY protocol headers come on TCP connections; not on a udp listener",
                );
                return None;
            }
            Some(pp?)
        }
        None => None,
    };
    let http3 = match http3 {
        Some((on, v)) => {
            let on = on?;
            if on && (protocol != ListenerProtocol::Http || tls.is_none()) {
                v.error(
                    cx,
                    "HTTP/3 is QUIC, which is always TLS: http3 needs an http listener with tls",
                );
                return None;
            }
            on
        }
        None => false,
    };
    let http2 = match http2 {
        Some((settings, v)) => {
            let settings = settings?;
            if protocol != ListenerProtocol::Http {
                v.error(
                    cx,
                    "HTTP/2 settings are for http listeners; leave http2 out",
                );
                return None;
            }
            settings
        }
        None => Http2Settings::default(),
    };
    Some(ListenerConfig {
        name: name?,
        address: address?,
        protocol,
        proxy_protocol,
        http3,
        tls: match tls {
            Some(t) => Some(t?),
            None => None,
        },
        limits: match limits {
            Some(l) => l?,
            None => ListenerLimits::default(),
        },
        http2,
        origin: cx.origin(item.line),
    })
}

fn limits(cx: &mut Cx, field: &Field) -> Option<ListenerLimits> {
    let mut f = Fields::new(cx, field)?;
    let d = ListenerLimits::default();
    let max_header_bytes = f
        .take("max_header_bytes")
        .map(|v| v.size(cx).and_then(|n| usize::try_from(n).ok()));
    let max_headers = f
        .take("max_headers")
        .map(|v| v.int(cx, 1, 100_000).map(|n| n as usize));
    let header_timeout = f.take("header_timeout").map(|v| v.duration(cx));
    let idle_timeout = f.take("idle_timeout").map(|v| v.duration(cx));
    let min_body_rate = f.take("min_body_rate").map(|v| v.size(cx));
    let body_rate_grace = f.take("body_rate_grace").map(|v| v.duration(cx));
    let body_timeout = f.take("body_timeout").map(|v| v.duration(cx));
    let max_concurrent_streams = f
        .take("max_concurrent_streams")
        .map(|v| v.int(cx, 1, i64::from(u32::MAX)).map(|n| n as u32));
    let max_requests_per_connection = f
        .take("max_requests_per_connection")
        .map(|v| v.int(cx, 1, i64::MAX).map(|n| n as u64));
    let max_connections_per_ip = f
        .take("max_connections_per_ip")
        .map(|v| v.int(cx, 1, 1_000_000).map(|n| n as usize));
    f.finish(cx);
    Some(ListenerLimits {
        max_header_bytes: max_header_bytes.unwrap_or(Some(d.max_header_bytes))?,
        max_headers: max_headers.unwrap_or(Some(d.max_headers))?,
        header_timeout: header_timeout.unwrap_or(Some(d.header_timeout))?,
        idle_timeout: idle_timeout.unwrap_or(Some(d.idle_timeout))?,
        min_body_rate: min_body_rate.unwrap_or(Some(d.min_body_rate))?,
        body_rate_grace: body_rate_grace.unwrap_or(Some(d.body_rate_grace))?,
        body_timeout: body_timeout.unwrap_or(Some(d.body_timeout))?,
        max_concurrent_streams: max_concurrent_streams.unwrap_or(Some(d.max_concurrent_streams))?,
        max_requests_per_connection: match max_requests_per_connection {
            Some(n) => Some(n?),
            None => None,
        },
        max_connections_per_ip: match max_connections_per_ip {
            Some(n) => Some(n?),
            None => None,
        },
    })
}

/// The largest flow-control window HTTP/2 allows (RFC 9113 6.9.1).
const MAX_WINDOW: u64 = (1 << 31) - 1;
/// HTTP/2's own initial connection window: the connection starts with it whatever the
/// settings say, and a window is only ever raised (RFC 9113 6.9.2).
const MIN_CONNECTION_WINDOW: u64 = 65_535;

/// Decodes `http2: { initial_stream_window, initial_connection_window }`.
fn http2(cx: &mut Cx, field: &Field) -> Option<Http2Settings> {
    let mut f = Fields::new(cx, field)?;
    let d = Http2Settings::default();
    let stream = bytes_in(cx, &mut f, "initial_stream_window", 1024..=MAX_WINDOW);
    let connection = bytes_in(
        cx,
        &mut f,
        "initial_connection_window",
        MIN_CONNECTION_WINDOW..=MAX_WINDOW,
    );
    f.finish(cx);
    Some(Http2Settings {
        initial_stream_window: stream.unwrap_or(Some(d.initial_stream_window))?,
        initial_connection_window: connection.unwrap_or(Some(d.initial_connection_window))?,
    })
}

/// Takes `key`, a size within `range` (`None` inside: a bad value, recorded).
fn bytes_in(
    cx: &mut Cx,
    f: &mut Fields,
    key: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Option<Option<u32>> {
    let v = f.take(key)?;
    Some(v.size(cx).and_then(|n| {
        if range.contains(&n) {
            u32::try_from(n).ok()
        } else {
            let (min, max) = (range.start(), range.end());
            v.error(cx, format!("must be between {min} and {max} bytes"));
            None
        }
    }))
}

fn tls(cx: &mut Cx, field: &Field) -> Option<TlsConfig> {
    let mut f = Fields::new(cx, field)?;
    let acme = f.take("acme").map(|v| super::acme::acme(cx, &v));
    // With ACME the files are optional: the first one, if any, is the default served
    // to names that have no ACME certificate yet.
    let certificates = match (f.take("certificates"), &acme) {
        (Some(v), _) => v.list(cx).and_then(|items| {
            if items.is_empty() && acme.is_none() {
                v.error(cx, "needs at least one { cert, key } pair");
                return None;
            }
            let pairs: Vec<_> = items
                .iter()
                .map(|item| certificate_pair(cx, item))
                .collect();
            pairs.into_iter().collect::<Option<Vec<_>>>()
        }),
        (None, Some(_)) => Some(Vec::new()),
        (None, None) => {
            let path = super::walk::join(&field.path, "certificates");
            cx.error(
                field.line,
                &path,
                "missing required field (or `acme` for certificates from an ACME CA)",
            );
            None
        }
    };
    let min_version = f.take("min_version").map(|v| {
        v.choice(
            cx,
            &[("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)],
        )
    });
    let client_ca = f.take("client_ca").map(|v| v.existing_file(cx));
    let auth_field = f.take("client_auth");
    let client_auth = auth_field.as_ref().map(|v| {
        v.choice(
            cx,
            &[
                ("off", ClientAuth::Off),
                ("optional", ClientAuth::Optional),
                ("required", ClientAuth::Required),
            ],
        )
    });
    f.finish(cx);
    if let (Some(v), Some(Some(auth)), None) = (&auth_field, client_auth, &client_ca)
        && auth != ClientAuth::Off
    {
        v.error(
            cx,
            "client_auth needs client_ca (the CA bundle client certificates are verified against)",
        );
        return None;
    }
    Some(TlsConfig {
        certificates: certificates?,
        min_version: min_version.unwrap_or(Some(TlsVersion::Tls12))?,
        client_ca: match client_ca {
            Some(ca) => Some(ca?),
            None => None,
        },
        client_auth: client_auth.unwrap_or(Some(ClientAuth::Off))?,
        acme: match acme {
            Some(a) => Some(a?),
            None => None,
        },
        origin: cx.origin(field.line),
    })
}

/// Decodes `{ cert, key }`, both files that must exist.
pub(crate) fn certificate_pair(cx: &mut Cx, field: &Field) -> Option<CertificatePair> {
    let mut f = Fields::new(cx, field)?;
    let cert = f.require(cx, "cert").and_then(|v| v.existing_file(cx));
    let key = f.require(cx, "key").and_then(|v| v.existing_file(cx));
    f.finish(cx);
    Some(CertificatePair {
        cert: cert?,
        key: key?,
        origin: cx.origin(field.line),
    })
}
