//! Route matching on a pinned snapshot.
//!
//! The router is built once per generation, off the request path: the routes are
//! sorted by precedence into one order, and an index ([`index`]) maps a request's host
//! and path to the few routes that may match it (a `path_regex` route is indexed by
//! its host only). Matching looks those up, checks their remaining conditions
//! (method, headers, listener, and the rarer ones of [`extra`]) and keeps the first in the
//! order that holds, with no allocation; its cost does not grow with the number of
//! routes of other hosts and paths.
//!
//! Precedence (documented for users in `docs/routing.md`):
//!
//! 1. an explicit `priority` (higher first) beats any route without one;
//! 2. host: exact > wildcard (`*.example.com`) > none;
//! 3. path: exact > regex > prefix (longer before shorter, for both) > none;
//! 4. the number of further conditions (each header and query parameter, plus one
//!    for `methods`, one for `client_ip` and one for each of `any`, `all`, `not`);
//! 5. file order.

mod extra;
mod index;
mod matcher;

pub use matcher::{Candidate, request_host};

use std::collections::HashMap;

use http::{HeaderName, Method};

use crate::config::{Config, PathMatch};
use extra::Extra;
use index::{Best, HostIndex, HostIndexBuilder, Pos};
use matcher::{Precedence, conditions_hold, path_holds};

/// Index of a route in [`Config::routes`] (and in the snapshot's route table).
pub type RouteId = usize;

/// Every route of a configuration, indexed for matching.
#[derive(Debug, Default)]
pub struct Router {
    /// Listener name → its number in [`Conditions::listeners`].
    listeners: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// The routes in the order they are tried; the index holds positions in it.
    routes: Vec<Entry>,
    /// The rarer conditions, apart so that a route without them stays small.
    conditions: Vec<Conditions>,
    index: HostIndex,
}

/// A route as the matcher sees it once the index chose it.
#[derive(Debug)]
struct Entry {
    id: u32,
    /// Index into [`Router::conditions`], `NONE` when the route has none.
    conditions: u32,
    /// Checked again after the index, which is what lets a host's few routes be read
    /// in order without a path index.
    path: Option<PathMatch>,
}

const NONE: u32 = u32::MAX;

/// A route's method, header and listener conditions.
#[derive(Debug)]
struct Conditions {
    methods: Option<Box<[Method]>>,
    headers: Box<[(HeaderName, String)]>,
    /// The listeners the route serves, `None` for all.
    listeners: Option<Box<[u32]>>,
    /// Path regex, header patterns, query, client IP: `None` when the route has none.
    extra: Option<Box<Extra>>,
}

// === impl Router ===

impl Router {
    /// Sorts and indexes the routes of `config`.
    pub fn build(config: &Config) -> Self {
        let mut listeners = HashMap::with_hasher(Default::default());
        for (n, l) in config.listeners.iter().enumerate() {
            listeners.entry(l.name.as_str().into()).or_insert(n as u32);
        }
        let mut order: Vec<(Precedence, usize)> = config
            .routes
            .iter()
            .enumerate()
            .map(|(id, r)| (Precedence::new(&r.matcher, r.priority), id))
            .collect();
        // Greater precedence first; file order among equals.
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

        let mut routes = Vec::with_capacity(order.len());
        let mut conditions = Vec::new();
        let mut index = HostIndexBuilder::default();
        for (pos, (_, id)) in order.into_iter().enumerate() {
            let Some(route) = config.routes.get(id) else {
                continue;
            };
            let m = &route.matcher;
            let mut entry = Entry {
                id: id as u32,
                conditions: NONE,
                path: m.path.clone(),
            };
            let extra = Extra::of(m);
            if m.methods.is_some()
                || !m.headers.is_empty()
                || route.listeners.is_some()
                || extra.is_some()
            {
                entry.conditions = conditions.len() as u32;
                conditions.push(Conditions {
                    methods: m.methods.clone().map(Vec::into_boxed_slice),
                    headers: m.headers.clone().into(),
                    listeners: route.listeners.as_ref().map(|names| {
                        names
                            .iter()
                            .filter_map(|n| listeners.get(n.as_str()).copied())
                            .collect()
                    }),
                    extra,
                });
            }
            index.add(pos as Pos, m.host.as_ref(), m.path.as_ref());
            routes.push(entry);
        }
        Self {
            listeners,
            routes,
            conditions,
            index: index.finish(),
        }
    }

    /// The route serving `req` on `listener`, if any.
    pub fn route(&self, listener: &str, req: &Candidate<'_>) -> Option<RouteId> {
        let listener = *self.listeners.get(listener)?;
        let mut best = Best(Pos::MAX);
        self.index.find(req.host, req.path, &mut best, &mut |pos| {
            self.routes.get(pos as usize).is_some_and(|e| {
                path_holds(e.path.as_ref(), req.path) && self.holds(e, listener, Some(req))
            })
        });
        self.routes.get(best.0 as usize).map(|e| e.id as RouteId)
    }

    /// The routes of `listener` in the order they are tried (for `/status` and tests).
    pub fn order(&self, listener: &str) -> Vec<RouteId> {
        let Some(&listener) = self.listeners.get(listener) else {
            return Vec::new();
        };
        self.routes
            .iter()
            .filter(|e| self.holds(e, listener, None))
            .map(|e| e.id as RouteId)
            .collect()
    }

    /// Whether the route serves `listener` and, given a request, whether its method
    /// and headers are what the route asks for.
    fn holds(&self, e: &Entry, listener: u32, req: Option<&Candidate<'_>>) -> bool {
        if e.conditions == NONE {
            return true;
        }
        let Some(c) = self.conditions.get(e.conditions as usize) else {
            return false;
        };
        let serves = c.listeners.as_ref().is_none_or(|l| l.contains(&listener));
        serves
            && req.is_none_or(|req| {
                conditions_hold(c.methods.as_deref(), &c.headers, req)
                    && c.extra.as_ref().is_none_or(|x| x.holds(req))
            })
    }
}

#[cfg(test)]
mod tests;
