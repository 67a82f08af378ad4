//! What the proxy changes in a message it relays: hop-by-hop headers out (except the
//! `Connection: upgrade` and `Upgrade` of a protocol switch), forwarding headers in,
//! `Host` kept as the client sent it.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version, request, response};
use std::net::IpAddr;

use super::ConnInfo;

/// Headers meaningful for one connection only (RFC 9110 §7.6.1), never relayed;
/// `Connection` first. A `static`: a `const` array would be built at every use.
static HOP_BY_HOP: [HeaderName; 8] = [
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
    let upgrade = requested_upgrade(head.version, &head.headers).cloned();
    let te_trailers = remove_hop_by_hop(&mut head.headers) & TE_TRAILERS != 0;
    if te_trailers && head.version == Version::HTTP_2 {
        // gRPC (HTTP/2 only) servers want it, to know the client takes trailers; it is
        // the one `TE` HTTP/2 allows. An HTTP/1.1 client's speaks for its hop only.
        head.headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(protocols) = upgrade {
        keep_upgrade(&mut head.headers, protocols);
    }
    // The server answers `100-continue` itself once the body is read; passing it on
    // would make the upstream answer it a second time.
    head.headers.remove(header::EXPECT);

    // HTTP/2 clients send `:authority` and no `Host`; an absolute-form URI overrides
    // `Host` too (RFC 9112 §3.2.2). Either way the upstream sees one `Host`.
    let host = match head.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok().inspect(|host| {
            head.headers.insert(header::HOST, host.clone());
        }),
        None => head.headers.get(header::HOST).cloned(),
    };
    if let Some(host) = host {
        head.headers.insert(X_FORWARDED_HOST.clone(), host);
    }

    let ip = ip_value(conn.client.ip());
    let xff = match joined(&head.headers, &X_FORWARDED_FOR) {
        Some(prior) => ip
            .to_str()
            .ok()
            .and_then(|ip| HeaderValue::from_str(&format!("{prior}, {ip}")).ok()),
        None => Some(ip),
    };
    if let Some(v) = xff {
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
    if (head.uri.scheme().is_some() || head.uri.authority().is_some())
        && let Some(pq) = head.uri.path_and_query().cloned()
    {
        head.uri = http::Uri::from(pq);
    }
}

/// The client's address as a header value. IPv4 (every request on the common path)
/// is formatted by hand: `Display` for `Ipv4Addr` pads through the formatter and
/// showed in the profile.
fn ip_value(ip: IpAddr) -> HeaderValue {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            HeaderValue::from_bytes(&buf[..n]).unwrap_or_else(|_| HeaderValue::from_static(""))
        }
        IpAddr::V6(_) => {
            HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
        }
    }
}

/// Prepares an upstream's response head to go downstream: a `101 Switching Protocols`
/// keeps the `Upgrade` it switched to.
pub fn prepare_response(head: &mut response::Parts) {
    let switched = if head.status == StatusCode::SWITCHING_PROTOCOLS {
        head.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    remove_hop_by_hop(&mut head.headers);
    if let Some(protocol) = switched {
        keep_upgrade(&mut head.headers, protocol);
    }
    // The server speaks its own protocol version downstream.
    head.version = Version::default();
}

/// The protocols an HTTP/1.1 request asks to switch to (its `Upgrade`), when it asks
/// as RFC 9110 §7.8 says (with `Connection: upgrade`). Never `h2c`: HTTP/2 set up on a
/// connection the proxy then only copies would let the client send requests no route
/// or filter sees (h2c smuggling), so such a request goes on as a plain one.
pub fn requested_upgrade(version: Version, headers: &HeaderMap) -> Option<&HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let protocols = headers.get(header::UPGRADE)?;
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let switchable = protocols
        .to_str()
        .is_ok_and(|v| !v.split(',').any(|p| p.trim().eq_ignore_ascii_case("h2c")));
    (listed && switchable).then_some(protocols)
}

/// Puts back the two headers of a protocol switch, which are hop-by-hop but must reach
/// the next hop for the switch to happen there too.
fn keep_upgrade(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols);
}

/// Set in what [`remove_hop_by_hop`] returns when the `TE` it removed accepted
/// trailers.
const TE_TRAILERS: u8 = 1;

/// Removes the fixed hop-by-hop headers, every `Proxy-*` header, and those that
/// `Connection` names. Returns [`TE_TRAILERS`] when the removed `TE` listed
/// `trailers`, else 0.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> u8 {
    // One pass over the names finds what there is to remove, so that only those pay a
    // removal (a hash lookup each): the usual request has none of these headers and
    // the usual response only `Connection: keep-alive`.
    let mut present = 0u8; // bit i: HOP_BY_HOP[i] is in the map
    let mut proxy = false;
    for name in headers.keys() {
        match hop_by_hop_index(name.as_str()) {
            Some(i) => present |= 1 << i,
            None => proxy |= name.as_str().starts_with("proxy-"),
        }
    }
    if present == 0 && !proxy {
        return 0;
    }
    const TE: u8 = 1 << 4;
    let te_trailers = if present & TE != 0
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            }) {
        TE_TRAILERS
    } else {
        0
    };
    // Names `Connection` lists beyond the fixed ones, when such a header is there
    // (looked up by `&str`, which allocates nothing).
    let mut listed: Vec<HeaderName> = Vec::new();
    if present & 1 != 0 {
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            let fixed = HOP_BY_HOP
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(token));
            if !fixed
                && headers.contains_key(token)
                && let Ok(name) = HeaderName::from_bytes(token.as_bytes())
            {
                listed.push(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for name in &listed {
        headers.remove(name);
    }
    if proxy {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
    te_trailers
}

/// The index in [`HOP_BY_HOP`] of the (lower-case) name `name`. A `match` on the
/// string (length first) rather than a scan comparing `HeaderName`s: this runs for
/// every header of every request and response.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "te" => 4,
        "trailer" => 5,
        "transfer-encoding" => 6,
        "upgrade" => 7,
        _ => return None,
    })
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
    fn hop_by_hop_index_matches_the_table() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "index of {name}");
        }
        assert_eq!(hop_by_hop_index("x-kept"), None);
    }

    #[test]
    fn client_ip_is_formatted_as_display_does() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.99.100.9",
            "::1",
            "2001:db8::7",
        ] {
            let parsed: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert_eq!(ip_value(parsed).to_str().ok(), Some(ip), "formatting {ip}");
        }
    }

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

    fn upgrade_head(connection: &str, upgrade: &str) -> request::Parts {
        let (mut head, ()) = http::Request::get("/chat")
            .header("connection", connection)
            .header("upgrade", upgrade)
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap_or_else(|e| panic!("{e}"))
            .into_parts();
        head.version = Version::HTTP_11;
        head
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            client: ([127, 0, 0, 1], 5000).into(),
            local: ([127, 0, 0, 1], 8080).into(),
            listener: "web".into(),
            tls_version: None,
            client_subject: None,
        }
    }

    #[test]
    fn an_upgrade_request_keeps_its_switch_headers() {
        let mut head = upgrade_head("keep-alive, Upgrade", "websocket");
        prepare_request(&mut head, &conn());
        let h = &head.headers;
        assert_eq!(
            h.get("connection").map(HeaderValue::as_bytes),
            Some(&b"upgrade"[..])
        );
        assert_eq!(
            h.get("upgrade").map(HeaderValue::as_bytes),
            Some(&b"websocket"[..])
        );
        assert!(
            h.contains_key("sec-websocket-key"),
            "end-to-end headers stay"
        );
    }

    #[test]
    fn upgrade_without_connection_upgrade_or_to_h2c_is_a_plain_request() {
        for (connection, upgrade) in [
            ("keep-alive", "websocket"),
            ("upgrade", "h2c"),
            ("Upgrade", "websocket, H2C"),
        ] {
            let mut head = upgrade_head(connection, upgrade);
            assert!(
                requested_upgrade(head.version, &head.headers).is_none(),
                "{connection} / {upgrade}"
            );
            prepare_request(&mut head, &conn());
            assert!(
                !head.headers.contains_key("upgrade"),
                "{connection} / {upgrade}"
            );
            assert!(
                !head.headers.contains_key("connection"),
                "{connection} / {upgrade}"
            );
        }
        let mut head = upgrade_head("upgrade", "websocket");
        head.version = Version::HTTP_10;
        assert!(
            requested_upgrade(head.version, &head.headers).is_none(),
            "HTTP/1.0 cannot switch"
        );
    }

    #[test]
    fn a_switching_response_keeps_its_upgrade_and_others_do_not() {
        for (status, kept) in [(101, true), (200, false)] {
            let (mut head, ()) = http::Response::builder()
                .status(status)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(())
                .unwrap_or_else(|e| panic!("{e}"))
                .into_parts();
            prepare_response(&mut head);
            assert_eq!(head.headers.contains_key("upgrade"), kept, "{status}");
            assert_eq!(head.headers.contains_key("connection"), kept, "{status}");
        }
    }

    #[test]
    fn te_trailers_goes_upstream_and_other_codings_do_not() {
        for (version, te, kept) in [
            (Version::HTTP_2, "trailers", true),
            (Version::HTTP_2, "gzip, trailers;q=1", true),
            (Version::HTTP_2, "gzip", false),
            (Version::HTTP_11, "trailers", false),
        ] {
            let (mut head, ()) = http::Request::post("/svc/Call")
                .version(version)
                .header("te", te)
                .body(())
                .unwrap_or_else(|e| panic!("{e}"))
                .into_parts();
            prepare_request(&mut head, &conn());
            let got = head.headers.get("te").map(HeaderValue::as_bytes);
            assert_eq!(
                got,
                kept.then_some(&b"trailers"[..]),
                "{version:?} TE: {te}"
            );
        }
        assert_eq!(
            hop_by_hop_index("te"),
            Some(4),
            "the TE bit remove_hop_by_hop reads"
        );
    }
}
