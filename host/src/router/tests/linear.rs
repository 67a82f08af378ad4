//! The reference for the index: the linear matcher the router had before it (every
//! route of a listener sorted by precedence, tried one by one), kept as it was so
//! that the property tests compare the index with an independent implementation. It
//! shares only the one-label wildcard test, which the index uses only for a wildcard
//! without its leading dot.

use std::collections::HashMap;

use http::{HeaderName, Method};

use crate::config::{Config, HostMatch, PathMatch, RouteMatch};
use crate::router::matcher::wildcard_matches;
use crate::router::{Candidate, RouteId};

/// Every listener's routes, compiled and sorted by precedence.
#[derive(Debug, Default)]
pub struct LinearRouter {
    /// Listener name → routes that serve it, best first.
    by_listener: HashMap<String, Vec<(RouteId, CompiledMatch)>>,
}

impl LinearRouter {
    /// Compiles the routes of `config` for each of its listeners.
    pub fn build(config: &Config) -> Self {
        let mut by_listener: HashMap<String, Vec<(RouteId, CompiledMatch)>> = config
            .listeners
            .iter()
            .map(|l| (l.name.clone(), Vec::new()))
            .collect();
        for (id, route) in config.routes.iter().enumerate() {
            let compiled = CompiledMatch::new(&route.matcher, route.priority);
            for (listener, routes) in by_listener.iter_mut() {
                let serves = route
                    .listeners
                    .as_ref()
                    .is_none_or(|names| names.iter().any(|n| n == listener));
                if serves {
                    routes.push((id, compiled.clone()));
                }
            }
        }
        for routes in by_listener.values_mut() {
            // A stable sort keeps file order among equally specific routes.
            routes.sort_by_key(|(_, m)| std::cmp::Reverse(m.precedence()));
        }
        Self { by_listener }
    }

    /// The route serving `req` on `listener`, if any.
    pub fn route(&self, listener: &str, req: &Candidate<'_>) -> Option<RouteId> {
        self.by_listener
            .get(listener)?
            .iter()
            .find(|(_, m)| m.matches(req))
            .map(|(id, _)| *id)
    }

    /// The routes of `listener` in the order they are tried.
    pub fn order(&self, listener: &str) -> Vec<RouteId> {
        self.by_listener
            .get(listener)
            .map(|routes| routes.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }
}

/// A route's match, ready to test requests without allocating.
#[derive(Debug, Clone)]
pub struct CompiledMatch {
    host: Option<HostMatch>,
    path: Option<PathMatch>,
    methods: Option<Vec<Method>>,
    headers: Vec<(HeaderName, String)>,
    priority: Option<i64>,
}

/// The sort key of a route, greater tried first: priority (`Some` beats `None`), host
/// (2 exact, 1 wildcard, 0 none), path (2 exact, 1 prefix, 0 none), path length, and
/// the number of further conditions (headers, plus one for a method list).
pub type Precedence = (Option<i64>, u8, u8, usize, usize);

// === impl CompiledMatch ===

impl CompiledMatch {
    /// Compiles `m`, remembering `priority` for precedence.
    pub fn new(m: &RouteMatch, priority: Option<i64>) -> Self {
        Self {
            host: m.host.clone().map(|h| match h {
                HostMatch::Exact(s) => HostMatch::Exact(s.to_ascii_lowercase()),
                HostMatch::Wildcard(s) => HostMatch::Wildcard(s.to_ascii_lowercase()),
            }),
            path: m.path.clone(),
            methods: m.methods.clone(),
            headers: m.headers.clone(),
            priority,
        }
    }

    /// Where this route stands among others (greater is tried first).
    pub fn precedence(&self) -> Precedence {
        let (path_kind, path_len) = match &self.path {
            Some(PathMatch::Exact(p)) => (2, p.len()),
            Some(PathMatch::Prefix(p)) => (1, p.len()),
            None => (0, 0),
        };
        let host = match self.host {
            Some(HostMatch::Exact(_)) => 2,
            Some(HostMatch::Wildcard(_)) => 1,
            None => 0,
        };
        let conditions = self.headers.len() + usize::from(self.methods.is_some());
        (self.priority, host, path_kind, path_len, conditions)
    }

    /// Whether every condition of the route holds for `req`.
    pub fn matches(&self, req: &Candidate<'_>) -> bool {
        if let Some(host) = &self.host {
            let Some(got) = req.host else { return false };
            let ok = match host {
                HostMatch::Exact(want) => got.eq_ignore_ascii_case(want),
                HostMatch::Wildcard(suffix) => wildcard_matches(suffix, got),
            };
            if !ok {
                return false;
            }
        }
        let path_ok = match &self.path {
            Some(PathMatch::Exact(want)) => req.path == want,
            Some(PathMatch::Prefix(prefix)) => req.path.starts_with(prefix.as_str()),
            None => true,
        };
        if !path_ok {
            return false;
        }
        if let Some(methods) = &self.methods
            && !methods.contains(req.method)
        {
            return false;
        }
        self.headers.iter().all(|(name, want)| {
            req.headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == want.as_bytes())
        })
    }
}
