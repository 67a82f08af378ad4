//! An immutable, fully built configuration: what one generation serves. A request pins
//! one snapshot (an `Arc` load) and uses it to the end.

mod http_calls;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigError, ConfigErrors, ECHO_UPSTREAM};
use crate::router::{Candidate, Router};
use crate::tls::TlsSet;
use crate::upstream::Upstream;
use crate::wasm::{HttpCaller, Plugin, Runtime};
use http_calls::UpstreamCaller;

/// One generation of the proxy's configuration, built completely before it serves.
pub struct Snapshot {
    /// Counts successful loads from 1.
    pub generation: u64,
    /// When this snapshot was built.
    pub loaded_at: SystemTime,
    /// The validated configuration it was built from.
    pub config: Arc<Config>,
    router: Router,
    /// Indexed by [`crate::router::RouteId`] (the route's position in the config).
    routes: Vec<Route>,
    upstreams: HashMap<String, Arc<Upstream>>,
    /// Every configured filter by name (also those no route uses), for the next
    /// reload to keep the unchanged ones.
    plugins: HashMap<String, Arc<Plugin>>,
    tls: TlsSet,
}

/// A route resolved against its snapshot: everything serving a request needs. `U` is
/// where its requests go: a [`RouteUpstream`] when serving; the test kit's routes
/// answer with what the test describes.
pub struct Route<U = RouteUpstream> {
    /// The route's name (logs, metrics, `route_name`).
    pub name: Arc<str>,
    /// The filter chain, in request order.
    pub filters: Vec<Arc<Plugin>>,
    /// Where requests go.
    pub upstream: U,
}

/// The destination of a route.
pub enum RouteUpstream {
    /// The built-in `echo@internal`.
    Echo,
    /// A configured upstream.
    Pool(Arc<Upstream>),
}

impl RouteUpstream {
    /// The upstream's name as configured.
    pub fn name(&self) -> &str {
        match self {
            RouteUpstream::Echo => ECHO_UPSTREAM,
            RouteUpstream::Pool(u) => &u.config().name,
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds everything a generation needs (router, upstreams, a configured VM of every
    /// filter, TLS acceptors); any failure is a config error and nothing is applied.
    ///
    /// `previous` lets state that must survive a reload carry over: an upstream whose
    /// configuration is unchanged is shared with it, health and pooled connections
    /// included, and so is an unchanged filter. Since such a filter is serving in
    /// `previous` right now, its `http_call`s are only pointed at this snapshot's
    /// upstreams by [`Snapshot::go_live`], which the caller runs once nothing can fail
    /// any more; a snapshot built without a `previous` shares nothing and is wired at
    /// once.
    pub fn build(
        config: Arc<Config>,
        runtime: &Runtime,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();

        crate::wasm::disk_cache::configure(config.module_cache.as_ref());
        let mut plugins: HashMap<String, Arc<Plugin>> = HashMap::new();
        for filter in &config.filters {
            let serving = previous.and_then(|p| p.plugins.get(&filter.name));
            match runtime.plugin_reusing(filter, serving) {
                Ok(p) => {
                    plugins.insert(filter.name.clone(), p);
                }
                Err(e) => errors.push(e),
            }
        }

        // Certificates are read (and checked) on every build, so a reload triggered by
        // a replaced certificate file applies it.
        let tls = TlsSet::build(&config).unwrap_or_else(|e| {
            errors.extend(e);
            TlsSet::default()
        });

        let mut upstreams: HashMap<String, Arc<Upstream>> = HashMap::new();
        for uc in &config.upstreams {
            let upstream_tls = tls.upstream(&uc.name);
            let kept = previous
                .and_then(|p| p.upstreams.get(&uc.name))
                .filter(|u| u.config() == uc)
                .filter(|u| u.tls_fingerprint() == upstream_tls.map(|t| t.fingerprint));
            match kept {
                Some(u) => {
                    upstreams.insert(uc.name.clone(), u.clone());
                }
                None if uc.tls.is_some() && upstream_tls.is_none() => {} // error recorded
                None => match Upstream::new(uc, upstream_tls) {
                    Ok(u) => {
                        upstreams.insert(uc.name.clone(), Arc::new(u));
                    }
                    Err(e) => errors.push(e),
                },
            }
        }

        let mut routes = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let mut filters = Vec::with_capacity(rc.filters.len());
            for name in &rc.filters {
                match plugins.get(name.as_str()) {
                    Some(p) => filters.push(p.clone()),
                    // A filter that failed to build already has its error.
                    None if config.filters.iter().any(|f| &f.name == name) => {}
                    None => errors.push(ConfigError::at(
                        &rc.origin,
                        format!("routes.{}.filters", rc.name),
                        format!("no filter is named `{name}`"),
                    )),
                }
            }
            let upstream = if rc.upstream == ECHO_UPSTREAM {
                Some(RouteUpstream::Echo)
            } else if let Some(u) = upstreams.get(&rc.upstream) {
                Some(RouteUpstream::Pool(u.clone()))
            } else {
                if !config.upstreams.iter().any(|u| u.name == rc.upstream) {
                    errors.push(ConfigError::at(
                        &rc.origin,
                        format!("routes.{}.upstream", rc.name),
                        format!("no upstream is named `{}`", rc.upstream),
                    ));
                }
                None
            };
            if let Some(upstream) = upstream {
                routes.push(Route {
                    name: rc.name.as_str().into(),
                    filters,
                    upstream,
                });
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let snapshot = Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            router: Router::build(&config),
            config,
            routes,
            upstreams,
            plugins,
            tls,
        };
        if previous.is_none() {
            snapshot.go_live();
        }
        Ok(snapshot)
    }

    /// Points every filter's `http_call` at this snapshot's upstreams (by name). Run
    /// just before the snapshot goes into force: a filter kept from the serving
    /// snapshot is shared with it, and a reload that fails after building must leave
    /// it calling the upstreams it calls now.
    pub fn go_live(&self) {
        let caller: Arc<dyn HttpCaller> = Arc::new(UpstreamCaller::new(self.upstreams.clone()));
        for plugin in self.plugins.values() {
            plugin.set_http_caller(caller.clone());
        }
    }

    /// The TLS acceptors of the listeners and client configs of the upstreams.
    pub fn tls(&self) -> &TlsSet {
        &self.tls
    }

    /// The route serving a request on `listener`, if any.
    pub fn route(&self, listener: &str, req: &Candidate<'_>) -> Option<&Route> {
        self.routes.get(self.router.route(listener, req)?)
    }

    /// The compiled router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// A configured filter by name.
    pub fn plugin(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// A configured upstream by name (e.g. for a filter's `http_call`).
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Every configured upstream with its targets' health, in config order, for
    /// `/status`: `[{ name, health_check, targets: [{ address, weight, healthy }] }]`.
    pub fn upstream_status(&self) -> serde_json::Value {
        let list = self
            .config
            .upstreams
            .iter()
            .filter_map(|uc| self.upstreams.get(&uc.name))
            .map(|u| u.status())
            .collect();
        serde_json::Value::Array(list)
    }
}
