//! Route matching on a pinned snapshot.
//!
//! The router is built once per generation: every route's match is compiled and the
//! routes of each listener are sorted by precedence, so that matching a request is a
//! scan that stops at the first route whose match holds, with no allocation.
//!
//! Precedence (documented for users in `docs/routing.md`):
//!
//! 1. an explicit `priority` (higher first) beats any route without one;
//! 2. host: exact > wildcard (`*.example.com`) > none;
//! 3. path: exact > prefix (longer before shorter) > none;
//! 4. the number of further conditions (each header, plus one for `methods`);
//! 5. file order.

mod matcher;

pub use matcher::{Candidate, CompiledMatch, request_host};

use std::collections::HashMap;

use crate::config::Config;

/// Index of a route in [`Config::routes`] (and in the snapshot's route table).
pub type RouteId = usize;

/// Every listener's routes, compiled and sorted by precedence.
#[derive(Debug, Default)]
pub struct Router {
    /// Listener name → routes that serve it, best first.
    by_listener: HashMap<String, Vec<(RouteId, CompiledMatch)>, foldhash::fast::RandomState>,
}

// === impl Router ===

impl Router {
    /// Compiles the routes of `config` for each of its listeners.
    pub fn build(config: &Config) -> Self {
        let mut by_listener: HashMap<String, Vec<(RouteId, CompiledMatch)>, _> = config
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

    /// The routes of `listener` in the order they are tried (for `/status` and tests).
    pub fn order(&self, listener: &str) -> Vec<RouteId> {
        self.by_listener
            .get(listener)
            .map(|routes| routes.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
