//! Layer 4: `tcp_routes:` and `udp_routes:`, and what listeners and upstreams say about
//! plain byte streams (`protocol`, `proxy_protocol`), checked against each other once
//! every file is read.

use std::net::IpAddr;
use std::time::Duration;

use super::walk::{Cx, Field, Fields};
use super::{
    Cidr, ConfigError, ECHO_UPSTREAM, HostMatch, ListenerConfig, Origin, RouteConfig,
    UpstreamConfig,
};

/// `listeners[].protocol`: what a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 (over TLS when `tls` is given), served by `routes`.
    #[default]
    Http,
    /// TCP streams relayed by `tcp_routes` (TLS terminated when `tls` is given).
    Tcp,
    /// UDP datagrams relayed by `udp_routes`.
    Udp,
}

impl ListenerProtocol {
    /// The name with its article, for messages: `an http`, `a tcp`, `a udp`.
    pub fn a(self) -> &'static str {
        match self {
            ListenerProtocol::Http => "an http",
            ListenerProtocol::Tcp => "a tcp",
            ListenerProtocol::Udp => "a udp",
        }
    }

    /// The name written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ListenerProtocol::Http => "http",
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Udp => "udp",
        }
    }
}

/// `listeners[].proxy_protocol`: accept a PROXY protocol header (v1 or v2) from the
/// peers in `trusted`; the client address is then the one it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyProtocolIn {
    /// Peers whose connections must start with a header.
    pub trusted: Vec<Cidr>,
}

impl ProxyProtocolIn {
    /// Whether `peer` is trusted to send a header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }
}

/// `upstreams[].proxy_protocol`: the PROXY protocol header sent first on every
/// connection of a `tcp_routes` route to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocolVersion {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header.
    V2,
}

/// `tcp_routes[]` and `udp_routes[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct L4RouteConfig {
    /// Unique among the routes of its section; labels metrics and logs.
    pub name: String,
    /// `Tcp` or `Udp`: the section it was written in.
    pub protocol: ListenerProtocol,
    /// Listeners it serves; `None`: every listener of its protocol.
    pub listeners: Option<Vec<String>>,
    /// TLS server names it takes (`match: { sni: [...] }`); empty: any connection.
    pub sni: Vec<HostMatch>,
    /// Where connections go.
    pub upstream: String,
    /// How long neither side may send a byte (a UDP session: no datagram either way)
    /// before the connection is closed.
    pub idle_timeout: Duration,
    /// Where it was declared.
    pub origin: Origin,
}

/// `tcp_routes[].idle_timeout` when not given (HAProxy's and Envoy's TCP proxies
/// default to about this).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// `udp_routes[].idle_timeout` when not given (a UDP "session" has no end of its own).
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Decodes `protocol:` of a listener.
pub(crate) fn listener_protocol(cx: &mut Cx, field: &Field) -> Option<ListenerProtocol> {
    field.choice(
        cx,
        &[
            ("http", ListenerProtocol::Http),
            ("tcp", ListenerProtocol::Tcp),
            ("udp", ListenerProtocol::Udp),
        ],
    )
}

/// Decodes `proxy_protocol: { trusted: [CIDR, ...] }` of a listener.
pub(crate) fn proxy_protocol_in(cx: &mut Cx, field: &Field) -> Option<ProxyProtocolIn> {
    let mut f = Fields::new(cx, field)?;
    let trusted = f.require(cx, "trusted").and_then(|v| {
        let items = v.list(cx)?;
        if items.is_empty() {
            v.error(
                cx,
                "names no range; leave proxy_protocol out to accept no header",
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in &items {
            match item.string(cx).map(|s| Cidr::parse(&s)) {
                Some(Ok(c)) => out.push(c),
                Some(Err(e)) => {
                    item.error(cx, e);
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    f.finish(cx);
    Some(ProxyProtocolIn { trusted: trusted? })
}

/// Decodes `proxy_protocol: v1 | v2` of an upstream.
pub(crate) fn proxy_protocol_out(cx: &mut Cx, field: &Field) -> Option<ProxyProtocolVersion> {
    field.choice(
        cx,
        &[
            ("v1", ProxyProtocolVersion::V1),
            ("v2", ProxyProtocolVersion::V2),
        ],
    )
}

/// Decodes one `tcp_routes[]` / `udp_routes[]` item.
pub(crate) fn route(
    cx: &mut Cx,
    item: &Field,
    protocol: ListenerProtocol,
) -> Option<L4RouteConfig> {
    let section = section(protocol);
    let (mut f, name) = Fields::named(cx, item, section)?;
    let listeners = f.take("listeners").map(|v| {
        let names = v.string_list(cx)?;
        if names.is_empty() {
            v.error(cx, "names no listener; leave it out to serve on all");
            return None;
        }
        Some(names.into_iter().map(|(n, _)| n).collect::<Vec<_>>())
    });
    let sni = f.take("match").map(|v| {
        let mut m = Fields::new(cx, &v)?;
        let sni = m.require(cx, "sni").and_then(|s| {
            if protocol == ListenerProtocol::Udp {
                s.error(
                    cx,
                    "UDP carries no TLS server name; udp routes take no match",
                );
                return None;
            }
            let items = s.list(cx)?;
            let hosts: Vec<_> = items.iter().map(|i| super::route::host(cx, i)).collect();
            let hosts = hosts.into_iter().collect::<Option<Vec<_>>>()?;
            if hosts.is_empty() {
                s.error(cx, "names no server name; leave match out to take any");
                return None;
            }
            Some(hosts)
        });
        m.finish(cx);
        sni
    });
    let upstream = f.require(cx, "upstream").and_then(|v| {
        let name = v.string(cx)?;
        if name == ECHO_UPSTREAM {
            v.error(
                cx,
                format!("`{ECHO_UPSTREAM}` answers HTTP; name an upstream"),
            );
            return None;
        }
        Some(name)
    });
    let idle_timeout = f.take("idle_timeout").map(|v| v.duration(cx));
    f.finish(cx);
    let default_idle = match protocol {
        ListenerProtocol::Udp => UDP_IDLE_TIMEOUT,
        _ => TCP_IDLE_TIMEOUT,
    };
    Some(L4RouteConfig {
        name: name?,
        protocol,
        listeners: match listeners {
            Some(l) => Some(l?),
            None => None,
        },
        sni: match sni {
            Some(s) => s?,
            None => Vec::new(),
        },
        upstream: upstream?,
        idle_timeout: idle_timeout.unwrap_or(Some(default_idle))?,
        origin: cx.origin(item.line),
    })
}

/// The section a route of `protocol` is written in.
pub fn section(protocol: ListenerProtocol) -> &'static str {
    match protocol {
        ListenerProtocol::Udp => "udp_routes",
        _ => "tcp_routes",
    }
}

/// Checks what only the whole configuration can tell: that routes name listeners of
/// their protocol and upstreams that exist, that HTTP routes stay on HTTP listeners,
/// and that an upstream sending PROXY headers serves only TCP routes.
pub(crate) fn check(
    listeners: &[ListenerConfig],
    routes: &[RouteConfig],
    l4_routes: &[L4RouteConfig],
    upstreams: &[UpstreamConfig],
    errors: &mut Vec<ConfigError>,
) {
    let protocol_of = |name: &str| {
        listeners
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.protocol)
    };
    let names = |p: ListenerProtocol| -> String {
        let named: Vec<&str> = listeners
            .iter()
            .filter(|l| l.protocol == p)
            .map(|l| l.name.as_str())
            .collect();
        if named.is_empty() {
            "none".into()
        } else {
            named.join(", ")
        }
    };
    for r in routes {
        for name in r.listeners.iter().flatten() {
            if let Some(p) = protocol_of(name).filter(|p| *p != ListenerProtocol::Http) {
                errors.push(ConfigError::at(
                    &r.origin,
                    format!("routes.{}.listeners", r.name),
                    format!(
                        "`{name}` is {} listener; routes serve http listeners, {} serve it",
                        p.a(),
                        section(p)
                    ),
                ));
            }
        }
        for u in r.upstream.names() {
            if let Some(up) = upstreams.iter().find(|x| x.name == u)
                && up.proxy_protocol.is_some()
            {
                errors.push(ConfigError::at(
                    &r.origin,
                    format!("routes.{}.upstream", r.name),
                    format!(
                        "upstream `{u}` sends a PROXY protocol header, which only tcp_routes send (HTTP connections are pooled and shared by clients)"
                    ),
                ));
            }
        }
    }
    for r in l4_routes {
        let path = format!("{}.{}", section(r.protocol), r.name);
        for name in r.listeners.iter().flatten() {
            let message = match protocol_of(name) {
                None => format!("unknown listener `{name}` (defined: {})", names(r.protocol)),
                Some(p) if p != r.protocol => format!(
                    "`{name}` is {} listener (the {} listeners: {})",
                    p.a(),
                    r.protocol.name(),
                    names(r.protocol)
                ),
                Some(_) => continue,
            };
            errors.push(ConfigError::at(
                &r.origin,
                format!("{path}.listeners"),
                message,
            ));
        }
        match upstreams.iter().find(|u| u.name == r.upstream) {
            None => {
                let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
                let known = if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                };
                errors.push(ConfigError::at(
                    &r.origin,
                    format!("{path}.upstream"),
                    format!("unknown upstream `{}` (defined: {known})", r.upstream),
                ));
            }
            Some(u) if r.protocol == ListenerProtocol::Udp && u.tls.is_some() => {
                errors.push(ConfigError::at(
                    &r.origin,
                    format!("{path}.upstream"),
                    format!("upstream `{}` has tls, which UDP cannot carry", u.name),
                ));
            }
            Some(_) => {}
        }
    }
}
