//! The view of a request the router matches against, the precedence of a route, and
//! the checks of one route's conditions.

use http::{HeaderMap, HeaderName, Method};

use crate::config::{PathMatch, RouteMatch};

/// What the router looks at in a request, borrowed from its head.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The authority's host, port stripped (any case), if the request named one.
    pub host: Option<&'a str>,
    /// The path, without the query.
    pub path: &'a str,
    /// The method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The query (after `?`), as sent.
    pub query: Option<&'a str>,
    /// The peer's address, when known (routes matching `client_ip` need it).
    pub client: Option<std::net::IpAddr>,
}

impl<'a> Candidate<'a> {
    /// The view of a request head: host from `:authority` (HTTP/2, absolute-form) or
    /// else the `Host` header.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self {
            host: request_host(&parts.uri, &parts.headers),
            path: parts.uri.path(),
            method: &parts.method,
            headers: &parts.headers,
            query: parts.uri.query(),
            client: None,
        }
    }

    /// The same view, with the peer's address.
    pub fn with_client(self, client: std::net::IpAddr) -> Self {
        Self {
            client: Some(client),
            ..self
        }
    }
}

/// The host a request is addressed to, with the port and a trailing dot stripped:
/// the URI's authority when it has one, else the `Host` header.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(authority) => authority.as_str(),
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    // Byte searches: `@`, `:` and `]` are ASCII, so every cut falls on a character
    // boundary; `str`'s char searchers cost ~400 instructions a request here.
    let host = match last_byte(raw, b'@') {
        Some(at) => raw.get(at + 1..).unwrap_or_default(),
        None => raw,
    };
    let host = strip_port(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// The position of the last `byte` in `s`.
fn last_byte(s: &str, byte: u8) -> Option<usize> {
    s.bytes().rposition(|b| b == byte)
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets, as in the configuration.
        return match authority.bytes().position(|b| b == b']') {
            Some(end) => authority.get(..=end).unwrap_or(authority),
            None => authority,
        };
    }
    match last_byte(authority, b':') {
        Some(colon) => authority.get(..colon).unwrap_or(authority),
        None => authority,
    }
}

/// The sort key of a route: greater is tried first. Field order is the precedence;
/// file order breaks the remaining ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Precedence {
    /// `Some` beats `None`; among `Some`, higher wins.
    priority: Option<i64>,
    /// 2 exact, 1 wildcard, 0 none.
    host: u8,
    /// 3 exact, 2 regex, 1 prefix, 0 none.
    path_kind: u8,
    /// Length of the exact path, regex or prefix.
    path_len: usize,
    /// Headers (each), query parameters (each), plus one for a method list, one for
    /// `client_ip`, and one for each of `any`, `all` and `not`.
    conditions: usize,
}

impl Precedence {
    /// Where a route with match `m` and `priority` stands among others.
    pub fn new(m: &RouteMatch, priority: Option<i64>) -> Self {
        let (path_kind, path_len) = match (&m.path, &m.path_regex) {
            (Some(PathMatch::Exact(p)), _) => (3, p.len()),
            (None, Some(r)) => (2, r.source.len()),
            (Some(PathMatch::Prefix(p)), _) => (1, p.len()),
            (None, None) => (0, 0),
        };
        Precedence {
            priority,
            host: match m.host {
                Some(crate::config::HostMatch::Exact(_)) => 2,
                Some(crate::config::HostMatch::Wildcard(_)) => 1,
                None => 0,
            },
            path_kind,
            path_len,
            conditions: m.headers.len()
                + m.header_patterns.len()
                + m.query.len()
                + usize::from(m.methods.is_some())
                + usize::from(m.client_ip.is_some())
                + m.logic.as_ref().map_or(0, |l| {
                    usize::from(!l.any.is_empty())
                        + usize::from(!l.all.is_empty())
                        + usize::from(l.not.is_some())
                }),
        }
    }
}

/// Whether `path` satisfies a route's path condition (none always does).
pub(super) fn path_holds(want: Option<&PathMatch>, path: &str) -> bool {
    match want {
        Some(PathMatch::Exact(want)) => path == want,
        Some(PathMatch::Prefix(prefix)) => path.starts_with(prefix.as_str()),
        None => true,
    }
}

/// Whether the request's method and headers satisfy a route's further conditions:
/// the method is listed (when there is a list), and each header is present with
/// exactly the wanted value (any one of repeated values may match).
pub(super) fn conditions_hold(
    methods: Option<&[Method]>,
    headers: &[(HeaderName, String)],
    req: &Candidate<'_>,
) -> bool {
    if let Some(methods) = methods
        && !methods.contains(req.method)
    {
        return false;
    }
    headers.iter().all(|(name, want)| {
        req.headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == want.as_bytes())
    })
}

/// `*.example.com` (stored as `.example.com`) matches `a.example.com`, not
/// `example.com` nor `a.b.example.com`.
pub(super) fn wildcard_matches(suffix: &str, host: &str) -> bool {
    if host.len() <= suffix.len() {
        return false;
    }
    let split = host.len() - suffix.len();
    let (Some(label), Some(tail)) = (host.get(..split), host.get(split..)) else {
        return false;
    };
    tail.eq_ignore_ascii_case(suffix) && !label.contains('.')
}
