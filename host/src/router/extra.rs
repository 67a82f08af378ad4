//! The conditions the index does not narrow by, checked only on the few routes the
//! index leaves: a path regex, header values by presence or regex, query parameters,
//! the client's IP, and `any`/`all`/`not` of conditions (each of those a whole
//! `match`, checked in full here). A route with none of them has no [`Extra`], and
//! its match costs nothing more than before they existed.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use super::matcher::{Candidate, conditions_hold, path_holds, wildcard_matches};
use crate::config::{ClientIpMatch, HostMatch, Logic, Pattern, RouteMatch, ValueMatch};

/// A route's conditions beyond host, path, methods and exact headers.
#[derive(Debug)]
pub(super) struct Extra {
    path_regex: Option<Pattern>,
    headers: Box<[(HeaderName, ValueMatch)]>,
    query: Box<[(String, ValueMatch)]>,
    client_ip: Option<ClientIpMatch>,
    logic: Option<Box<Logic>>,
}

impl Extra {
    /// The extra conditions of `m`, if it has any.
    pub fn of(m: &RouteMatch) -> Option<Box<Extra>> {
        let none = m.path_regex.is_none()
            && m.header_patterns.is_empty()
            && m.query.is_empty()
            && m.client_ip.is_none()
            && m.logic.is_none();
        (!none).then(|| {
            Box::new(Extra {
                path_regex: m.path_regex.clone(),
                headers: m.header_patterns.clone().into(),
                query: m.query.clone().into(),
                client_ip: m.client_ip.clone(),
                logic: m.logic.clone(),
            })
        })
    }

    /// Whether `req` satisfies every one of them.
    pub fn holds(&self, req: &Candidate<'_>) -> bool {
        rare_hold(
            self.path_regex.as_ref(),
            &self.headers,
            &self.query,
            self.client_ip.as_ref(),
            req,
        ) && self.logic.as_ref().is_none_or(|l| logic_holds(l, req))
    }
}

/// Whether `req` satisfies the path regex, header patterns, query and client IP
/// conditions given (the ones not given hold).
fn rare_hold(
    path_regex: Option<&Pattern>,
    headers: &[(HeaderName, ValueMatch)],
    query: &[(String, ValueMatch)],
    client_ip: Option<&ClientIpMatch>,
    req: &Candidate<'_>,
) -> bool {
    if let Some(p) = path_regex
        && !p.is_match(req.path)
    {
        return false;
    }
    let headers_hold = headers.iter().all(|(name, want)| match want {
        ValueMatch::Present => req.headers.contains_key(name),
        want => req
            .headers
            .get_all(name)
            .iter()
            .any(|v| want.holds(v.as_bytes())),
    });
    if !headers_hold {
        return false;
    }
    if !query
        .iter()
        .all(|(name, want)| query_holds(req.query, name, want))
    {
        return false;
    }
    match client_ip {
        Some(m) => req
            .client
            .is_some_and(|peer| client_holds(m, peer, req.headers)),
        None => true,
    }
}

/// `any` (one of them, when given), `all` (each) and `not` (not it).
fn logic_holds(l: &Logic, req: &Candidate<'_>) -> bool {
    (l.any.is_empty() || l.any.iter().any(|m| whole_holds(m, req)))
        && l.all.iter().all(|m| whole_holds(m, req))
        && l.not.as_ref().is_none_or(|m| !whole_holds(m, req))
}

/// Whether every condition of a `match` under `any`/`all`/`not` holds: the index did
/// not look at it, so its host and path are checked here too.
fn whole_holds(m: &RouteMatch, req: &Candidate<'_>) -> bool {
    let host_holds = match &m.host {
        None => true,
        Some(HostMatch::Exact(h)) => req.host.is_some_and(|r| r.eq_ignore_ascii_case(h)),
        Some(HostMatch::Wildcard(suffix)) => req.host.is_some_and(|r| wildcard_matches(suffix, r)),
    };
    host_holds
        && path_holds(m.path.as_ref(), req.path)
        && conditions_hold(m.methods.as_deref(), &m.headers, req)
        && rare_hold(
            m.path_regex.as_ref(),
            &m.header_patterns,
            &m.query,
            m.client_ip.as_ref(),
            req,
        )
        && m.logic.as_ref().is_none_or(|l| logic_holds(l, req))
}

/// Whether parameter `name` of the raw query (as sent, not percent-decoded) satisfies
/// `want`: present at all, or one of its occurrences' values does.
fn query_holds(query: Option<&str>, name: &str, want: &ValueMatch) -> bool {
    let Some(query) = query else {
        return false;
    };
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(n, _)| *n == name)
        .any(|(_, value)| want.holds(value.as_bytes()))
}

/// Whether the client — `peer`, or from a trusted peer the `X-Forwarded-For` entry
/// `depth` places from the right — is in one of the blocks.
fn client_holds(m: &ClientIpMatch, peer: IpAddr, headers: &HeaderMap) -> bool {
    let client = if m.trusted_proxies.iter().any(|c| c.contains(peer)) {
        forwarded(headers, m.depth).unwrap_or(peer)
    } else {
        peer
    };
    m.cidrs.iter().any(|c| c.contains(client))
}

/// The `X-Forwarded-For` entry `depth` places from the right (every such header, in
/// order), when there is one and it is an address (`1.2.3.4`, `[::1]:80`, ...).
fn forwarded(headers: &HeaderMap, depth: usize) -> Option<IpAddr> {
    // Walked twice rather than collected: matching allocates nothing.
    let entries = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
    };
    let at = entries().count().checked_sub(depth)?;
    let entry = entries().nth(at)?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    #[test]
    fn query_parameters_as_sent() {
        let equals = ValueMatch::Equals("2".into());
        assert!(query_holds(Some("a=1&v=2"), "v", &equals));
        assert!(query_holds(Some("v=1&v=2"), "v", &equals), "any occurrence");
        assert!(!query_holds(Some("v=3"), "v", &equals));
        assert!(!query_holds(None, "v", &equals));
        assert!(query_holds(
            Some("debug&x=1"),
            "debug",
            &ValueMatch::Present
        ));
        assert!(query_holds(Some("debug="), "debug", &ValueMatch::Present));
        assert!(!query_holds(
            Some("debugger=1"),
            "debug",
            &ValueMatch::Present
        ));
    }

    #[test]
    fn forwarded_clients_only_from_trusted_peers() {
        let cidr = |s: &str| Cidr::parse(s).unwrap_or_else(|e| panic!("{e}"));
        let m = ClientIpMatch {
            cidrs: vec![cidr("203.0.113.0/24")],
            trusted_proxies: vec![cidr("10.0.0.0/8")],
            depth: 1,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("198.51.100.9, 203.0.113.5"),
        );
        let proxy: IpAddr = [10, 1, 1, 1].into();
        let stranger: IpAddr = [192, 0, 2, 1].into();
        assert!(
            client_holds(&m, proxy, &headers),
            "the trusted proxy's entry"
        );
        assert!(
            !client_holds(&m, stranger, &headers),
            "a stranger's is ignored"
        );
        let deeper = ClientIpMatch {
            depth: 2,
            ..m.clone()
        };
        assert!(!client_holds(&deeper, proxy, &headers), "198.51.100.9");
        let too_deep = ClientIpMatch { depth: 3, ..m };
        assert!(!client_holds(&too_deep, proxy, &headers), "the peer, then");
    }
}
