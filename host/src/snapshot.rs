//! An immutable, fully built configuration: what one generation serves. A request pins
//! one snapshot (an `Arc` load) and uses it to the end.

mod http_calls;
mod split;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{
    Config, ConfigError, ConfigErrors, ECHO_UPSTREAM, FilterConfig, RouteDestination,
};
use crate::l4::L4Routes;
use crate::router::{Candidate, Router};
use crate::tls::TlsSet;
use crate::upstream::Upstream;
use crate::wasm::{HttpCaller, HttpFilters, Plugin, Runtime};
use http_calls::UpstreamCaller;
pub use split::Split;

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
    /// The service modules by name (`services:`): one VM each, on the first worker.
    services: HashMap<String, Arc<Plugin>>,
    tls: TlsSet,
    /// The `tcp_routes` and `udp_routes`, by listener.
    l4: L4Routes,
    /// The tracer of `tracing:`, if configured.
    tracer: Option<Arc<crate::otel::Tracer>>,
}

/// Configures a plugin of each of `modules` (filters or services), sharing those
/// unchanged from `serving` (the same section of the serving snapshot); each failure
/// goes to `errors`.
fn build_plugins(
    runtime: &Runtime,
    modules: &[FilterConfig],
    serving: Option<&HashMap<String, Arc<Plugin>>>,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, Arc<Plugin>> {
    let mut plugins = HashMap::new();
    for module in modules {
        let kept = serving.and_then(|s| s.get(&module.name));
        match runtime.plugin_reusing(module, kept) {
            Ok(p) => {
                plugins.insert(module.name.clone(), p);
            }
            Err(e) => errors.push(e),
        }
    }
    plugins
}

/// A chain entry's canary version, as a request draws it ([`RouteCanary::runs`]).
pub struct RouteCanary {
    /// The entry's index in the chain.
    pub at: usize,
    /// The filter run instead.
    pub plugin: Arc<Plugin>,
    /// The share of the requests that did not opt in (percent).
    pub weight: u32,
    /// A request with this header value opts in.
    pub header: Option<(http::HeaderName, String)>,
    /// A request with this cookie value opts in.
    pub cookie: Option<(String, String)>,
}

impl RouteCanary {
    /// Whether a request with `headers` runs the canary: it opts in by header or
    /// cookie, or else draws it with the weight.
    pub fn runs(&self, headers: &http::HeaderMap) -> bool {
        let by_header = self.header.as_ref().is_some_and(|(name, value)| {
            headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == value.as_bytes())
        });
        let by_cookie = self.cookie.as_ref().is_some_and(|(name, value)| {
            crate::upstream::balance::cookie(headers, name) == Some(value.as_str())
        });
        by_header || by_cookie || (self.weight > 0 && rand::random_range(0..100) < self.weight)
    }
}

/// A route resolved against its snapshot: everything serving a request needs. `U` is
/// where its requests go: a [`RouteUpstream`] when serving; the test kit's routes
/// answer with what the test describes.
pub struct Route<U = RouteUpstream> {
    /// The route's name (logs, metrics, `route_name`).
    pub name: Arc<str>,
    /// The filter chain, in request order.
    pub filters: Vec<Arc<Plugin>>,
    /// The counters of the `filters` that run in shadow mode (recorded, not enforced),
    /// by index, `None` for the others; empty when none does. Shorter than `filters`
    /// when the last ones do not.
    pub shadow: Vec<Option<Arc<crate::metrics::ShadowCounters>>>,
    /// Chain entries with a canary version.
    pub canaries: Vec<RouteCanary>,
    /// Where requests go.
    pub upstream: U,
    /// `upstream`'s name, as filters read it (`cluster_name`): made once here, not
    /// per request.
    pub upstream_name: Arc<str>,
    /// The largest request body accepted; `None`: no limit.
    pub max_request_body: Option<u64>,
    /// How long a connection this route switched (a WebSocket) may go without a byte.
    pub upgrade_idle_timeout: std::time::Duration,
    /// The shadow upstream a share of the requests is copied to, if any.
    pub mirror: Option<crate::upstream::mirror::Mirror>,
}

/// The destination of a route.
pub enum RouteUpstream {
    /// The built-in `echo@internal`.
    Echo,
    /// A configured upstream.
    Pool(Arc<Upstream>),
    /// Several, by canary match and weight (`upstreams:`).
    Split(Box<Split>),
}

impl RouteUpstream {
    /// The upstream's name as configured.
    pub fn name(&self) -> &str {
        match self {
            RouteUpstream::Echo => ECHO_UPSTREAM,
            RouteUpstream::Pool(u) => &u.config().name,
            RouteUpstream::Split(s) => s.label(),
        }
    }
}

/// Resolves a route's destination against the built upstreams; `missing` hears of
/// every name not found (with its field under the route).
fn destination(
    destination: &RouteDestination,
    upstreams: &HashMap<String, Arc<Upstream>>,
    mut missing: impl FnMut(&str, String),
) -> Option<RouteUpstream> {
    let mut one = |name: &str, field: String| {
        if name == ECHO_UPSTREAM {
            Some(RouteUpstream::Echo)
        } else if let Some(u) = upstreams.get(name) {
            Some(RouteUpstream::Pool(u.clone()))
        } else {
            missing(name, field);
            None
        }
    };
    match destination {
        RouteDestination::Single(name) => one(name, "upstream".into()),
        RouteDestination::Split(entries) => {
            let mut canaries = Vec::new();
            let mut weighted = Vec::new();
            let mut complete = true;
            for (i, e) in entries.iter().enumerate() {
                let Some(u) = one(&e.upstream, format!("upstreams.{i}.name")) else {
                    complete = false;
                    continue;
                };
                match &e.canary {
                    Some(m) => canaries.push((m.clone(), u)),
                    None => weighted.push((u, e.weight)),
                }
            }
            if !complete {
                return None;
            }
            Split::new(canaries, weighted).map(|s| RouteUpstream::Split(Box::new(s)))
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// The filters whose root context asked for ticks while configuring: every worker
    /// starts their VMs when this snapshot goes live.
    pub fn ticking_plugins(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values().filter(|p| p.ticks())
    }

    /// The service modules (`services:`): the first worker starts their one VM each
    /// when this snapshot goes live, and keeps those a reload kept.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.services.values()
    }

    /// Builds everything a generation needs (router, upstreams, a configured VM of every
    /// filter, TLS acceptors); any failure is a config error and nothing is applied.
    ///
    /// `previous` lets state that must survive a reload carry over: an upstream whose
    /// settings are unchanged (wherever they were written) is shared with it, health,
    /// pooled connections and balancer state included, and so is an unchanged filter.
    /// Since such a filter is serving in `previous` right now, its `http_call`s are
    /// only pointed at this snapshot's upstreams by [`Snapshot::go_live`], which the
    /// caller runs once nothing can fail any more; a snapshot built without a
    /// `previous` shares nothing and is wired at once.
    pub fn build(
        config: Arc<Config>,
        runtime: &Runtime,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut errors = Vec::new();

        crate::wasm::disk_cache::configure(config.module_cache.as_ref());
        let plugins = build_plugins(
            runtime,
            &config.filters,
            previous.map(|p| &p.plugins),
            &mut errors,
        );
        // An unchanged service is kept with its VM and state, as an unchanged filter.
        let services = build_plugins(
            runtime,
            &config.services,
            previous.map(|p| &p.services),
            &mut errors,
        );

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
                .filter(|u| u.config().same_settings(uc))
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
                    Err(e) => errors.extend(e),
                },
            }
        }

        let mut routes = Vec::with_capacity(config.routes.len());
        // Each route's shadow entries, by index; their counters are found once the
        // config is known good, so that a refused one leaves no series behind.
        let mut shadows = Vec::with_capacity(config.routes.len());
        for rc in &config.routes {
            let mut filters = Vec::with_capacity(rc.filters.len());
            let mut shadow = Vec::new();
            for name in &rc.filters {
                match plugins.get(name.as_str()) {
                    Some(p) => {
                        if !rc.shadow.is_empty() {
                            shadow.resize(filters.len(), false);
                            shadow.push(rc.shadow.contains(name));
                        }
                        filters.push(p.clone());
                    }
                    // A filter that failed to build already has its error.
                    None if config.filters.iter().any(|f| &f.name == name) => {}
                    None => errors.push(ConfigError::at(
                        &rc.origin,
                        format!("routes.{}.filters", rc.name),
                        format!("no filter is named `{name}`"),
                    )),
                }
            }
            let canaries = rc
                .canaries
                .iter()
                .filter_map(|c| {
                    // A filter missing here already has its error.
                    let at = rc.filters.iter().position(|f| *f == c.filter)?;
                    let canary = plugins.get(&c.canary)?;
                    (at < filters.len()).then(|| RouteCanary {
                        at,
                        plugin: canary.clone(),
                        weight: c.weight,
                        header: c.header.clone(),
                        cookie: c.cookie.clone(),
                    })
                })
                .collect();
            let upstream = destination(&rc.upstream, &upstreams, |name, field| {
                // A name declared nowhere was reported by the loader; one that failed to
                // build has its own error. Anything else is a gap between the two.
                if !config.upstreams.iter().any(|u| u.name == name) {
                    errors.push(ConfigError::at(
                        &rc.origin,
                        format!("routes.{}.{field}", rc.name),
                        format!("no upstream is named `{name}`"),
                    ));
                }
            });
            let name: Arc<str> = rc.name.as_str().into();
            let mirror = rc.mirror.as_ref().and_then(|m| {
                let shadow = upstreams.get(&m.upstream)?;
                Some(crate::upstream::mirror::Mirror::new(
                    name.clone(),
                    shadow.clone(),
                    m,
                ))
            });
            if let Some(upstream) = upstream {
                shadows.push(shadow);
                routes.push(Route {
                    name,
                    filters,
                    shadow: Vec::new(),
                    canaries,
                    upstream_name: upstream.name().into(),
                    upstream,
                    max_request_body: rc.max_request_body,
                    upgrade_idle_timeout: rc.upgrade_idle_timeout,
                    mirror,
                });
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        for (r, shadow) in routes.iter_mut().zip(shadows) {
            if !shadow.is_empty() {
                r.shadow = HttpFilters::shadow_counters(&r.filters, &shadow, &r.name);
            }
        }
        // Kept from `previous` when unchanged: its queue and export thread go on.
        let config_tracer = config
            .tracing
            .as_ref()
            .map(|t| crate::otel::Tracer::new(t, previous.and_then(|p| p.tracer.as_ref())));
        let snapshot = Snapshot {
            generation,
            loaded_at: SystemTime::now(),
            router: Router::build(&config),
            l4: L4Routes::build(&config, &upstreams),
            config,
            routes,
            upstreams,
            plugins,
            services,
            tls,
            tracer: config_tracer,
        };
        if previous.is_none() {
            snapshot.go_live();
        }
        Ok(snapshot)
    }

    /// Points every filter's and service's callouts at this snapshot's upstreams (by
    /// name), and the `node.*` properties at its `node:`. Run
    /// just before the snapshot goes into force: a filter kept from the serving
    /// snapshot is shared with it, and a reload that fails after building must leave
    /// it calling the upstreams it calls now.
    pub fn go_live(&self) {
        crate::wasm::set_node(Arc::new(self.config.node.clone()));
        // Global rate limits follow the `redis:` block (kept open when unchanged).
        crate::ratelimit::RateLimits::shared().set_redis(self.config.redis.as_ref());
        crate::access_log::configure(self.config.access_log.as_ref());
        let caller: Arc<dyn HttpCaller> = Arc::new(UpstreamCaller::new(self.upstreams.clone()));
        for plugin in self.plugins.values().chain(self.services.values()) {
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

    /// The tracer requests are traced with, if `tracing:` is configured.
    pub fn tracer(&self) -> Option<&Arc<crate::otel::Tracer>> {
        self.tracer.as_ref()
    }

    /// The `tcp_routes` and `udp_routes`.
    pub fn l4(&self) -> &L4Routes {
        &self.l4
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
