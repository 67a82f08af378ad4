//! The `tcp_routes` and `udp_routes` of one snapshot, by listener: which route a new
//! connection (or UDP session) takes, by the TLS server name it asks for.
//!
//! Precedence, first tried to last: routes whose `sni` holds an exact name, then a
//! wildcard, then routes without `sni`; declaration order among equals. A connection
//! no route takes is closed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, HostMatch, L4RouteConfig};
use crate::upstream::Upstream;

/// One route, resolved against its snapshot's upstreams.
pub struct L4Route {
    /// The route's name (logs, metrics).
    pub name: Arc<str>,
    /// Server names it takes; empty: any.
    sni: Vec<HostMatch>,
    /// Where connections go.
    pub upstream: Arc<Upstream>,
    /// How long a connection may carry no byte either way.
    pub idle_timeout: Duration,
}

/// Every L4 route of a snapshot, by listener.
#[derive(Default)]
pub struct L4Routes {
    by_listener: HashMap<String, Listener>,
}

#[derive(Default)]
struct Listener {
    routes: Vec<Arc<L4Route>>,
    /// Whether any route matches by server name: a plain TCP listener then reads the
    /// ClientHello before it routes.
    wants_sni: bool,
}

impl L4Routes {
    /// The routes of `config`, on the upstreams built for it (a route whose upstream
    /// is not among them has an error of its own and is left out).
    pub fn build(config: &Config, upstreams: &HashMap<String, Arc<Upstream>>) -> L4Routes {
        let mut by_listener: HashMap<String, Listener> = HashMap::new();
        let routes: Vec<(&L4RouteConfig, Arc<L4Route>)> = config
            .l4_routes
            .iter()
            .filter_map(|r| {
                let upstream = upstreams.get(&r.upstream)?;
                let route = L4Route {
                    name: r.name.as_str().into(),
                    sni: r.sni.clone(),
                    upstream: Arc::clone(upstream),
                    idle_timeout: r.idle_timeout,
                };
                Some((r, Arc::new(route)))
            })
            .collect();
        for l in &config.listeners {
            let entry = by_listener.entry(l.name.clone()).or_default();
            for (config, route) in &routes {
                let serves = config.protocol == l.protocol
                    && config
                        .listeners
                        .as_ref()
                        .is_none_or(|names| names.contains(&l.name));
                if serves {
                    entry.wants_sni |= !route.sni.is_empty();
                    entry.routes.push(Arc::clone(route));
                }
            }
        }
        L4Routes { by_listener }
    }

    /// Whether a route of `listener` matches by server name.
    pub fn wants_sni(&self, listener: &str) -> bool {
        self.by_listener.get(listener).is_some_and(|l| l.wants_sni)
    }

    /// The route a connection to `listener` asking for `sni` (lower-case) takes.
    pub fn route(&self, listener: &str, sni: Option<&str>) -> Option<&Arc<L4Route>> {
        let routes = &self.by_listener.get(listener)?.routes;
        let rank = |r: &L4Route| -> Option<u8> {
            if r.sni.is_empty() {
                return Some(2);
            }
            let name = sni?;
            r.sni
                .iter()
                .filter_map(|m| match m {
                    HostMatch::Exact(h) => (h == name).then_some(0),
                    HostMatch::Wildcard(suffix) => name
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
                        .then_some(1),
                })
                .min()
        };
        let mut best: Option<(u8, &Arc<L4Route>)> = None;
        for r in routes {
            if let Some(rank) = rank(r)
                && best.is_none_or(|(b, _)| rank < b)
            {
                best = Some((rank, r));
            }
        }
        best.map(|(_, r)| r)
    }
}
