//! Configuration: a directory of YAML files, parsed with line numbers, merged, and
//! validated into an immutable [`Config`].
//!
//! Loading goes in three steps, each reporting every problem it finds rather than the
//! first: [`yaml`] parses a file into a tree that remembers lines; the section decoders
//! ([`listener`], [`route`], [`filter`], [`upstream`]) walk it with [`walk`]'s typed
//! helpers; then the files are merged and cross-checked (unique names, references).

mod access_log;
pub(crate) mod acme;
mod admin;
mod error;
pub(crate) mod filter;
pub(crate) mod integrity;
mod l4;
mod listener;
mod matching;
mod model;
mod module_cache;
mod node;
mod otel;
pub mod providers;
pub mod redis;
mod route;
mod route_match;
mod shutdown;
mod traffic;
mod units;
mod upstream;
pub(crate) mod walk;
pub(crate) mod yaml;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;

pub use access_log::{AccessLogConfig, AccessLogFormat};
pub use acme::{AcmeChallenge, AcmeConfig, AcmeDomains, DEFAULT_RENEW_BEFORE};
pub use admin::{AdminRole, AdminToken, MIN_TOKEN_LEN, TokenDigest, TokenSource};
pub use error::{ConfigError, ConfigErrors};
pub use l4::{
    L4RouteConfig, ListenerProtocol, ProxyProtocolIn, ProxyProtocolVersion, TCP_IDLE_TIMEOUT,
    UDP_IDLE_TIMEOUT,
};
pub use matching::{Cidr, ClientIpMatch, Logic, Pattern, ValueMatch};
pub use model::*;
pub use otel::{OTLP_TIMEOUT, TracingConfig};
pub use traffic::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use route::RouteRefs;
use walk::{Cx, Field, Fields};
use yaml::Node;

/// A set hashed with foldhash: the reference checks look up one name per route.
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// Loads every `*.yaml` / `*.yml` file directly in `dir` (symlinks followed, names
/// starting with `.` ignored, in name order), merges and validates them.
/// On failure, returns every error found, each naming file, line and field.
pub fn load(dir: &Path) -> Result<Config, ConfigErrors> {
    load_into(Some(dir), &[], &mut Vec::new(), &mut Vec::new())
}

/// [`load`], with `documents` read from a provider (etcd) merged in after the files:
/// each is `(key, text)`, the key standing for a file name in every error. Without a
/// directory, the documents are the whole configuration (relative paths then resolve
/// against the working directory).
pub fn load_with(
    dir: Option<&Path>,
    documents: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    load_into(dir, documents, &mut Vec::new(), &mut Vec::new())
}

/// What a load read besides the configuration: the YAML trees it parsed, handed to its
/// caller to free when it suits (a large routes file's tree is a million small
/// allocations, and freeing them need not delay the configuration going live), and
/// the files its fields name.
pub struct Parsed {
    #[expect(dead_code, reason = "held only to be dropped later")]
    trees: Vec<Vec<Node>>,
    /// Every file a field names, resolved, sorted, found even when the configuration
    /// does not load: what the reload watcher must watch (see [`named_files`]).
    pub named: Vec<PathBuf>,
}

/// [`load_with`], keeping the parsed trees alive in [`Parsed`] rather than freeing them
/// before returning.
pub fn load_keeping_parsed(
    dir: Option<&Path>,
    documents: &[(String, String)],
) -> (Result<Config, ConfigErrors>, Parsed) {
    let mut trees = Vec::new();
    let mut named = Vec::new();
    let config = load_into(dir, documents, &mut named, &mut trees);
    named.sort();
    named.dedup();
    (config, Parsed { trees, named })
}

/// Every file the YAML in `dir` names (`wasm`, `cert`, `key`, `ca`, `client_ca`),
/// resolved as [`load`] resolves them, sorted: what the loader reads, found even when
/// the configuration does not load (the reload watcher must see a missing module
/// appear so that it can retry).
pub fn named_files(dir: &Path) -> Vec<PathBuf> {
    load_keeping_parsed(Some(dir), &[]).1.named
}

/// [`load_with`], recording in `named` every file a field names, in the order met, and
/// in `parsed` the trees of the files.
fn load_into(
    dir: Option<&Path>,
    documents: &[(String, String)],
    named: &mut Vec<PathBuf>,
    parsed: &mut Vec<Vec<Node>>,
) -> Result<Config, ConfigErrors> {
    let dir_name = dir.map_or_else(|| "etcd".to_string(), |d| d.display().to_string());
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            file: dir_name.clone(),
            line: 0,
            path: String::new(),
            message,
        }])
    };
    let here = Path::new(".");
    let base = std::path::absolute(dir.unwrap_or(here)).unwrap_or_else(|_| here.to_path_buf());
    let files = match dir {
        Some(dir) => config_files(dir)
            .map_err(|e| fail(format!("cannot read the configuration directory: {e}")))?,
        None => Vec::new(),
    };
    if files.is_empty() && documents.is_empty() {
        return Err(fail(match dir {
            Some(_) => "no *.yaml or *.yml files in the configuration directory".into(),
            None => "no documents (*.yaml or *.yml keys) under the etcd prefix".into(),
        }));
    }
    let texts = files
        .into_iter()
        .map(|(name, path)| (name, std::fs::read_to_string(path), false))
        .chain(
            documents
                .iter()
                .map(|(key, text)| (key.clone(), Ok(text.clone()), true)),
        );
    merge(&dir_name, &base, texts, named, parsed)
}

/// Loads one file's `text` as if it were the only file in `base` (named `name`): what
/// the fuzz target of the loader drives, without a directory.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn load_text(name: &str, text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let dir_name = base.display().to_string();
    let texts = std::iter::once((name.to_string(), Ok(text.to_string()), false));
    merge(&dir_name, base, texts, &mut Vec::new(), &mut Vec::new())
}

/// Decodes, merges and validates the files `texts` (each by name, as read, and whether
/// a provider rather than the directory gave it), relative paths resolved against
/// `base`.
fn merge(
    dir_name: &str,
    base: &Path,
    texts: impl Iterator<Item = (String, std::io::Result<String>, bool)>,
    named: &mut Vec<PathBuf>,
    parsed: &mut Vec<Vec<Node>>,
) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut merged = Merged::default();
    for (name, text, from_provider) in texts {
        let mut cx = Cx {
            file: name,
            base: base.to_path_buf(),
            errors: &mut errors,
            files: named,
        };
        match text {
            Ok(text) => parsed.push(merged.add_file(&mut cx, &text, from_provider)),
            Err(e) => {
                merged.unreadable = true;
                cx.error(0, "", format!("cannot read: {e}"));
            }
        }
    }
    let signatures = merged.require_signature.take();
    let mut config = merged.finish(dir_name, &mut errors);
    if let Some(policy) = &signatures {
        integrity::apply(policy, &mut config.filters, named);
        integrity::apply(policy, &mut config.services, named);
    }
    let mut seen = std::collections::HashSet::new();
    config.external_files = named.iter().filter(|p| seen.insert(*p)).cloned().collect();
    // Decoding visits a file's fields roughly in order; sorting makes the report read
    // top to bottom, file by file.
    errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The YAML files directly in `dir`, by name: `(name, path)`.
fn config_files(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        // Follow symlinks (a Kubernetes ConfigMap is all symlinks); a dangling one is
        // kept so that reading it reports the problem.
        let path = entry.path();
        if std::fs::metadata(&path)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            continue;
        }
        files.push((name, path));
    }
    files.sort();
    Ok(files)
}

/// Everything read so far, before cross-file checks.
#[derive(Default)]
struct Merged {
    admin: Option<AdminConfig>,
    workers: Option<(usize, Origin)>,
    /// The top-level `zone`: where this proxy runs, for locality-aware balancing.
    zone: Option<(String, Origin)>,
    module_cache: Option<ModuleCacheConfig>,
    shutdown: Option<ShutdownConfig>,
    redis: Option<RedisConfig>,
    tracing: Option<TracingConfig>,
    access_log: Option<AccessLogConfig>,
    /// `require_signature`, handed to every module from disk once all files are read.
    require_signature: Option<std::sync::Arc<SignaturePolicy>>,
    providers: Option<(Providers, Origin)>,
    node: Option<NodeConfig>,
    listeners: Vec<ListenerConfig>,
    routes: Vec<RouteConfig>,
    l4_routes: Vec<L4RouteConfig>,
    filters: Vec<FilterConfig>,
    services: Vec<FilterConfig>,
    upstreams: Vec<UpstreamConfig>,
    /// Whether a file could not be read or parsed: what it declares is unknown.
    unreadable: bool,
    /// Every route's references, from broken routes too.
    refs: Vec<RouteRefs>,
    /// Every name declared per section, from broken items too: a reference to a
    /// broken item is not a second error, and duplicates are found regardless.
    declared: BTreeMap<&'static str, Vec<(String, Origin)>>,
}

impl Merged {
    /// Decodes one document's text (`from_provider` when it was read from a provider,
    /// etcd, rather than the directory); returns its parsed documents.
    fn add_file(&mut self, cx: &mut Cx, text: &str, from_provider: bool) -> Vec<Node> {
        let docs = match yaml::parse(text) {
            Ok(docs) => docs,
            Err(e) => {
                self.unreadable = true;
                cx.error(e.line, "", format!("invalid YAML: {}", e.message));
                return Vec::new();
            }
        };
        for doc in &docs {
            if doc.is_null() {
                continue;
            }
            let root = Field::root(doc);
            let Some(mut f) = Fields::new(cx, &root) else {
                continue;
            };
            if let Some(v) = f.take("admin")
                && let Some(admin) = admin::admin(cx, &v)
            {
                match &self.admin {
                    Some(first) => {
                        v.error(cx, format!("admin is already set at {}", at(&first.origin)))
                    }
                    None => self.admin = Some(admin),
                }
            }
            if let Some(v) = f.take("workers")
                && let Some(n) = v.int(cx, 1, 4096)
            {
                match &self.workers {
                    Some((_, first)) => {
                        v.error(cx, format!("workers is already set at {}", at(first)))
                    }
                    None => self.workers = Some((n as usize, cx.origin(v.line))),
                }
            }
            if let Some(v) = f.take("zone")
                && let Some(zone) = v.string(cx)
            {
                match &self.zone {
                    Some((_, first)) => {
                        v.error(cx, format!("zone is already set at {}", at(first)))
                    }
                    None => self.zone = Some((zone, cx.origin(v.line))),
                }
            }
            if let Some(v) = f.take("module_cache")
                && let Some(cache) = module_cache::module_cache(cx, &v)
            {
                match &self.module_cache {
                    Some(first) => v.error(
                        cx,
                        format!("module_cache is already set at {}", at(&first.origin)),
                    ),
                    None => self.module_cache = Some(cache),
                }
            }
            if let Some(v) = f.take("node")
                && let Some(node) = node::node(cx, &v)
            {
                match self.node.as_ref().and_then(|n| n.origin.as_ref()) {
                    Some(first) => v.error(cx, format!("node is already set at {}", at(first))),
                    None => self.node = Some(node),
                }
            }
            if let Some(v) = f.take("shutdown")
                && let Some(shutdown) = shutdown::shutdown(cx, &v)
            {
                match self.shutdown.as_ref().and_then(|s| s.origin.as_ref()) {
                    Some(first) => v.error(cx, format!("shutdown is already set at {}", at(first))),
                    None => self.shutdown = Some(shutdown),
                }
            }
            if let Some(v) = f.take("redis")
                && let Some(r) = redis::redis(cx, &v)
            {
                match &self.redis {
                    Some(first) => {
                        v.error(cx, format!("redis is already set at {}", at(&first.origin)))
                    }
                    None => self.redis = Some(r),
                }
            }
            if let Some(v) = f.take("tracing")
                && let Some(t) = otel::tracing(cx, &v)
            {
                match &self.tracing {
                    Some(first) => v.error(
                        cx,
                        format!("tracing is already set at {}", at(&first.origin)),
                    ),
                    None => self.tracing = Some(t),
                }
            }
            if let Some(v) = f.take("access_log")
                && let Some(a) = access_log::access_log(cx, &v)
            {
                match &self.access_log {
                    Some(first) => v.error(
                        cx,
                        format!("access_log is already set at {}", at(&first.origin)),
                    ),
                    None => self.access_log = Some(a),
                }
            }
            if let Some(v) = f.take("require_signature")
                && !integrity::not_from_provider(cx, &v, from_provider)
                && let Some(policy) = integrity::require_signature(cx, &v)
            {
                match &self.require_signature {
                    Some(first) => v.error(
                        cx,
                        format!("require_signature is already set at {}", at(&first.origin)),
                    ),
                    None => self.require_signature = Some(std::sync::Arc::new(policy)),
                }
            }
            if let Some(v) = f.take("providers") {
                if from_provider {
                    providers::not_from_provider(cx, &v);
                } else if let Some(p) = providers::providers(cx, &v) {
                    match &self.providers {
                        Some((_, first)) => {
                            v.error(cx, format!("providers is already set at {}", at(first)))
                        }
                        None => self.providers = Some((p, cx.origin(v.line))),
                    }
                }
            }
            let sections = [
                "listeners",
                "routes",
                "tcp_routes",
                "udp_routes",
                "filters",
                "services",
                "upstreams",
            ];
            for section in sections {
                let Some(items) = f.take(section).and_then(|v| v.list(cx)) else {
                    continue;
                };
                // Sized once: with 50,000 routes, growing these by doubling copied
                // tens of MiB and faulted in fresh pages for each copy.
                self.declared
                    .entry(section)
                    .or_default()
                    .reserve(items.len());
                if section == "routes" {
                    self.routes.reserve(items.len());
                    self.refs.reserve(items.len());
                }
                for item in &items {
                    if let Some(name) = walk::name_of(item.node) {
                        let origin = cx.origin(item.line);
                        self.declared
                            .entry(section)
                            .or_default()
                            .push((name.to_string(), origin));
                    }
                    match section {
                        "listeners" => self.listeners.extend(listener::listener(cx, item)),
                        "routes" => self.routes.extend(route::route(cx, item, &mut self.refs)),
                        "tcp_routes" => {
                            self.l4_routes
                                .extend(l4::route(cx, item, ListenerProtocol::Tcp))
                        }
                        "udp_routes" => {
                            self.l4_routes
                                .extend(l4::route(cx, item, ListenerProtocol::Udp))
                        }
                        "filters" => self.filters.extend(filter::filter(cx, item)),
                        "services" => self.services.extend(filter::service(cx, item)),
                        _ => self.upstreams.extend(upstream::upstream(cx, item)),
                    }
                }
            }
            f.finish(cx);
        }
        docs
    }

    /// Checks what only the whole can tell (unique names, references, listeners at
    /// all) and builds the [`Config`].
    fn finish(self, dir: &str, errors: &mut Vec<ConfigError>) -> Config {
        for (section, names) in &self.declared {
            unique(errors, section, names);
        }
        self.check_service_names(errors);
        self.check_addresses(errors);
        self.check_references(errors);
        acme::check(&self.listeners, errors);
        redis::check_stores(&self.filters, self.redis.as_ref(), errors);
        l4::check(
            &self.listeners,
            &self.routes,
            &self.l4_routes,
            &self.upstreams,
            errors,
        );
        // A file that did not parse may well hold the listeners: do not pile on.
        if !self.declared.contains_key("listeners") && !self.unreadable {
            errors.push(ConfigError {
                file: dir.to_string(),
                line: 0,
                path: "listeners".into(),
                message: "no listener is configured; nothing would be served".into(),
            });
        }
        // The environment (a Pod's downward API) wins over the file.
        let zone = std::env::var(ZONE_ENV)
            .ok()
            .filter(|z| !z.is_empty())
            .or(self.zone.map(|(z, _)| z));
        let mut upstreams = self.upstreams;
        for u in &mut upstreams {
            u.local_zone.clone_from(&zone);
        }
        Config {
            admin: self.admin,
            workers_origin: self.workers.as_ref().map(|(_, o)| o.clone()),
            workers: self.workers.map_or_else(default_workers, |(n, _)| n),
            module_cache: self.module_cache,
            shutdown: self.shutdown.unwrap_or_default(),
            node: self.node.unwrap_or_default(),
            listeners: self.listeners,
            routes: self.routes,
            l4_routes: self.l4_routes,
            filters: self.filters,
            services: self.services,
            upstreams,
            redis: self.redis,
            tracing: self.tracing,
            access_log: self.access_log,
            providers: self.providers.map(|(p, _)| p).unwrap_or_default(),
            // Filled by the loader, which records every file it was named.
            external_files: Vec::new(),
        }
    }

    /// A service and a filter share a namespace (the `filter` label of their metrics
    /// and logs): no service may be named like a filter.
    fn check_service_names(&self, errors: &mut Vec<ConfigError>) {
        let (Some(services), Some(filters)) =
            (self.declared.get("services"), self.declared.get("filters"))
        else {
            return;
        };
        for (name, origin) in services {
            if let Some((_, first)) = filters.iter().find(|(f, _)| f == name) {
                let message = format!("a filter is already named `{name}` (at {})", at(first));
                errors.push(ConfigError::at(origin, format!("services.{name}"), message));
            }
        }
    }

    /// Two sockets on one fixed address cannot both bind; say so before trying.
    fn check_addresses(&self, errors: &mut Vec<ConfigError>) {
        // UDP ports are apart from TCP ones: a udp listener may share a tcp address.
        type Bound<'o> = (std::net::SocketAddr, bool, String, &'o Origin);
        let mut bound: Vec<Bound> = Vec::new();
        let admin = self
            .admin
            .iter()
            .map(|a| (a.address, false, "admin".to_string(), &a.origin));
        let listeners = self.listeners.iter().map(|l| {
            let udp = l.protocol == ListenerProtocol::Udp;
            (l.address, udp, format!("listeners.{}", l.name), &l.origin)
        });
        for (addr, udp, path, origin) in admin.chain(listeners) {
            if addr.port() != 0
                && let Some((_, _, other, first)) =
                    bound.iter().find(|(a, u, _, _)| *a == addr && *u == udp)
            {
                let message = format!("address {addr} is already used by {other} ({})", at(first));
                errors.push(ConfigError::at(origin, format!("{path}.address"), message));
            }
            bound.push((addr, udp, path, origin));
        }
    }

    fn check_references<'a>(&'a self, errors: &mut Vec<ConfigError>) {
        let names = |section: &str| -> Vec<&'a str> {
            let mut names: Vec<&str> = self
                .declared
                .get(section)
                .map(|d| d.iter().map(|(n, _)| n.as_str()).collect())
                .unwrap_or_default();
            names.dedup();
            names
        };
        let listeners = names("listeners");
        let filters = names("filters");
        let mut upstreams = names("upstreams");
        upstreams.push(ECHO_UPSTREAM);
        // Sets for the lookups: a configuration of one upstream per tenant has as many
        // upstreams as routes, and a scan per route would grow with their product.
        let set = |names: &[&'a str]| -> FastSet<&'a str> { names.iter().copied().collect() };
        let (listener_set, filter_set, upstream_set) =
            (set(&listeners), set(&filters), set(&upstreams));
        for refs in &self.refs {
            let mut err = |line: usize, field: &str, kind: &str, name: &str, known: &[&str]| {
                errors.push(ConfigError {
                    file: refs.file.clone(),
                    line,
                    path: format!("{}.{field}", refs.path),
                    message: format!("unknown {kind} `{name}` (defined: {})", list(known)),
                })
            };
            for (name, line) in &refs.listeners {
                if !listener_set.contains(name.as_str()) {
                    err(*line, "listeners", "listener", name, &listeners);
                }
            }
            for (name, line) in &refs.filters {
                if !filter_set.contains(name.as_str()) {
                    err(*line, "filters", "filter", name, &filters);
                }
            }
            for (name, line, field) in &refs.upstreams {
                if !upstream_set.contains(name.as_str()) {
                    err(*line, field, "upstream", name, &upstreams);
                }
            }
        }
    }
}

/// Reports every name declared twice in `section`, at the second declaration.
fn unique(errors: &mut Vec<ConfigError>, section: &str, names: &[(String, Origin)]) {
    let mut first: HashMap<&str, &Origin, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(names.len(), Default::default());
    for (name, origin) in names {
        match first.get(name.as_str()) {
            Some(prev) => errors.push(ConfigError::at(
                origin,
                format!("{section}.{name}"),
                format!("duplicate name `{name}` (first declared at {})", at(prev)),
            )),
            None => {
                first.insert(name, origin);
            }
        }
    }
}

fn at(origin: &Origin) -> String {
    format!("{}:{}", origin.file, origin.line)
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// The default number of workers: one per core.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
