//! The validated configuration: what a directory of YAML files means once every file
//! has been parsed, merged and checked. Everything downstream (the snapshot builder, the
//! server, the router) reads these types and never sees raw YAML.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a configuration item was written: the file (as found under the config
/// directory) and the line of its key. Errors found after parsing (a filter's
/// `on_configure` refusing its config, a certificate that does not load) point here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file's name relative to the config directory, e.g. `routes.yaml`.
    pub file: String,
    /// 1-based line of the item's key.
    pub line: usize,
}

/// A whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The admin listener, if configured.
    pub admin: Option<AdminConfig>,
    /// Worker threads; defaults to the number of cores.
    pub workers: usize,
    /// Where `workers` is set, if it is: a reload that changes it is refused there.
    pub workers_origin: Option<Origin>,
    /// Where compiled modules are kept between runs, if the configuration says.
    pub module_cache: Option<ModuleCacheConfig>,
    /// How the process stops on SIGTERM / SIGINT.
    pub shutdown: ShutdownConfig,
    /// Who this proxy is, for filters (`node.*` properties).
    pub node: NodeConfig,
    /// Listeners in file order.
    pub listeners: Vec<ListenerConfig>,
    /// Routes in file order (precedence is the router's business).
    pub routes: Vec<RouteConfig>,
    /// `tcp_routes` then `udp_routes`, each in file order.
    pub l4_routes: Vec<super::L4RouteConfig>,
    /// Filters by declaration order.
    pub filters: Vec<FilterConfig>,
    /// Service modules (`services:`), on no route: one VM each for the process, whose
    /// root context ticks, calls out and shares data and queues with the filters.
    pub services: Vec<FilterConfig>,
    /// Upstreams by declaration order.
    pub upstreams: Vec<UpstreamConfig>,
    /// The Redis server of global rate limits (`redis:`), if configured.
    pub redis: Option<RedisConfig>,
    /// Where spans go and which requests are traced (`tracing:`), if anywhere.
    pub tracing: Option<super::TracingConfig>,
    /// The proxy's own access log (`access_log:`); `None`: lines go to the process log.
    pub access_log: Option<super::AccessLogConfig>,
    /// Where documents come from besides the directory (`providers:`).
    pub providers: Providers,
    /// Every file outside the config directory's own YAML that this configuration
    /// reads (wasm modules, certificates, keys): the watcher watches these too.
    pub external_files: Vec<PathBuf>,
}

/// `redis:` — where global rate limits (`rate-limit` with `store: redis`) keep their
/// buckets.
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://` for TLS.
    pub url: String,
    /// How long a check waits for Redis before the filter's `on_store_error` decides.
    pub timeout: std::time::Duration,
    /// Connections kept open (each multiplexed).
    pub pool: usize,
    /// The name filters' `proxy_redis_call` gives it (default `redis`).
    pub name: String,
    /// Where it was declared.
    pub origin: Origin,
}

impl std::fmt::Debug for RedisConfig {
    /// Without the URL's password: configurations are logged and shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &super::redis::redact(&self.url))
            .field("timeout", &self.timeout)
            .field("pool", &self.pool)
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish()
    }
}

/// `providers:` — sources of configuration documents besides the directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Providers {
    /// `providers.etcd`: documents read from, and watched under, an etcd prefix.
    pub etcd: Option<EtcdConfig>,
}

/// `providers.etcd` — an etcd prefix whose keys hold configuration documents, one key
/// per file (`PREFIX/routes.yaml` holds what `routes.yaml` would).
#[derive(Clone, PartialEq)]
pub struct EtcdConfig {
    /// Client URLs (`http://HOST:2379`, `https://…`), tried in turn.
    pub endpoints: Vec<String>,
    /// The prefix the documents are under; always ends with `/`.
    pub prefix: String,
    /// How long one request (connect included) may take before etcd counts as down.
    pub timeout: Duration,
    /// TLS to etcd (`https://` endpoints): a private CA, a client certificate.
    pub tls: EtcdTls,
    /// etcd's user authentication, if enabled on the cluster.
    pub auth: Option<EtcdAuth>,
    /// Where it was declared.
    pub origin: Origin,
}

impl std::fmt::Debug for EtcdConfig {
    /// Without the password: configurations are logged and shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .field("auth", &self.auth.as_ref().map(|a| &a.username))
            .field("origin", &self.origin)
            .finish()
    }
}

/// `providers.etcd.tls`: what `https://` endpoints are checked against and shown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EtcdTls {
    /// PEM roots the server's certificate must chain to (default: the Mozilla roots).
    pub ca: Option<PathBuf>,
    /// A PEM client certificate, for a cluster with `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// Its PEM private key.
    pub key: Option<PathBuf>,
}

/// `providers.etcd.auth`: an etcd user (the cluster's `auth enable`).
#[derive(Clone, PartialEq)]
pub struct EtcdAuth {
    /// The user name.
    pub username: String,
    /// Its password.
    pub password: String,
}

/// Metadata as filters read it: values by dotted path, a string as its bytes, any
/// other value as compact JSON. Shared, so that handing it to a request is a clone of
/// a pointer.
pub type Metadata = std::sync::Arc<[(String, Vec<u8>)]>;

/// `node:` — who this proxy is, as Envoy's bootstrap `node` tells filters: the
/// `node.id`, `node.cluster` and `node.metadata.<name>` properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeConfig {
    /// `node.id`.
    pub id: String,
    /// `node.cluster`.
    pub cluster: String,
    /// `node.metadata`: a string value as its bytes, any other as compact JSON.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// Where it was declared, if it was.
    pub origin: Option<Origin>,
}

/// `admin:` — the admin listener serving `/ready`, `/status`, `/metrics`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Address to bind; port 0 picks a free port (logged at start).
    pub address: SocketAddr,
    /// Whether `POST /reload` is served.
    pub reload: bool,
    /// Bearer tokens and their roles; empty: every endpoint is open to whoever can
    /// connect (docs/operations.md, "Admin access").
    pub tokens: Vec<super::AdminToken>,
    /// TLS on the admin listener (one certificate; with a client CA, client
    /// certificates are required).
    pub tls: Option<TlsConfig>,
    /// Where it was declared.
    pub origin: Origin,
}

impl AdminConfig {
    /// The warning to log when anyone who can reach the admin listener can read the
    /// configuration and reload it: bound beyond loopback, without tokens or client
    /// certificates.
    pub fn exposure_warning(&self) -> Option<String> {
        let verified_clients = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if self.address.ip().is_loopback() || !self.tokens.is_empty() || verified_clients {
            return None;
        }
        Some(format!(
            "the admin listener on {} is reachable beyond this host and has no admin.tokens \
             (nor admin.tls.client_ca): whoever can connect reads /status and /metrics{}; \
             add tokens (docs/operations.md, \"Admin access\") or bind it to 127.0.0.1",
            self.address,
            if self.reload {
                " and can POST /reload"
            } else {
                ""
            }
        ))
    }
}

/// `module_cache:` — where compiled filter modules are kept on disk, so that a start
/// or reload finds them compiled (the environment variable `PORTCULLIS_MODULE_CACHE`
/// overrides it; see docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleCacheConfig {
    /// Whether compiled modules are kept on disk at all.
    pub enabled: bool,
    /// The directory, resolved against the file naming it; `None`: the default
    /// (`$XDG_CACHE_HOME/portcullis/modules`, else `$HOME/.cache/portcullis/modules`).
    pub dir: Option<PathBuf>,
    /// Past this total size the least recently used entries are removed.
    pub max_size: u64,
    /// Where it was declared.
    pub origin: Origin,
}

/// The default bound of the module cache: a compiled standard filter takes about a
/// MiB, so this keeps some hundreds of module versions.
pub const MODULE_CACHE_MAX_SIZE: u64 = 256 * 1024 * 1024;

// === shutdown ===

/// `shutdown:` — the graceful stop on SIGTERM / SIGINT (docs/operations.md#signals).
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run once the listeners are closed; what is
    /// still open then is closed.
    pub drain_timeout: Duration,
    /// How long the listeners keep accepting after the signal while `/ready` answers
    /// 503, so that a load balancer sees it and moves away before connections are
    /// refused. Zero: stop accepting at once.
    pub accept_grace: Duration,
    /// Where it was declared; `None` when the defaults apply.
    pub origin: Option<Origin>,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            accept_grace: Duration::ZERO,
            origin: None,
        }
    }
}

// === listeners ===

/// `listeners[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, referenced by routes.
    pub name: String,
    /// Address to bind.
    pub address: SocketAddr,
    /// What it serves: HTTP (the default), TCP or UDP.
    pub protocol: super::ListenerProtocol,
    /// TLS termination, if any.
    pub tls: Option<TlsConfig>,
    /// PROXY protocol headers accepted from trusted peers, if configured.
    pub proxy_protocol: Option<super::ProxyProtocolIn>,
    /// Whether HTTP/3 is served on the same port over UDP (QUIC), and advertised with
    /// `Alt-Svc` on the listener's HTTP/1.1 and HTTP/2 responses. TLS `http` listeners
    /// only.
    pub http3: bool,
    /// Limits a client meets on this listener.
    pub limits: ListenerLimits,
    /// The HTTP/2 settings it announces to its clients.
    pub http2: Http2Settings,
    /// Where it was declared.
    pub origin: Origin,
}

/// `listeners[].http2`: what an HTTP/2 client of the listener may send before the proxy
/// has read it. Nothing is allocated for a window: it bounds what a connection may
/// come to buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Request body bytes a client may send on one stream ahead of the proxy's reading
    /// (SETTINGS_INITIAL_WINDOW_SIZE).
    pub initial_stream_window: u32,
    /// The same for all the streams of a connection together.
    pub initial_connection_window: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            // An upload of one stream runs at up to a window per round trip: 1 MiB is
            // ~80 Mbit/s at 100 ms. The connection's window is the same, so that one
            // stream can use all of it, and bounds what a client can make the proxy
            // buffer when the upstream reads slowly.
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 1024 * 1024,
        }
    }
}

/// Per-listener client limits (docs/configuration.md, `listeners[].limits`).
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    /// Total size of the request head; past it: 431.
    pub max_header_bytes: usize,
    /// Number of header fields; past it: 431.
    pub max_headers: usize,
    /// Time allowed to receive the request headers before the connection is closed.
    pub header_timeout: Duration,
    /// Idle keep-alive time before the connection is closed.
    pub idle_timeout: Duration,
    // --- slow clients (docs/operations.md#limits-and-defences) ---
    /// Lowest average rate (bytes per second of waiting on the client) a request body
    /// may arrive at once `body_rate_grace` has passed; below it: 408.
    pub min_body_rate: u64,
    /// How long a request body may arrive slower than `min_body_rate`.
    pub body_rate_grace: Duration,
    /// How long the proxy waits for the next byte of a request body; past it: 408.
    pub body_timeout: Duration,
    // --- abusive clients (docs/operations.md#limits-and-defences) ---
    /// HTTP/2 streams one connection may have open at once; more are refused
    /// (`REFUSED_STREAM`).
    pub max_concurrent_streams: u32,
    /// Requests one connection may carry; the last is answered with
    /// `Connection: close` (HTTP/1) or followed by a GOAWAY (HTTP/2). `None`: no limit.
    pub max_requests_per_connection: Option<u64>,
    /// Connections one client IP may have open on this listener; past it a new one is
    /// closed at once. `None`: no limit.
    pub max_connections_per_ip: Option<usize>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            min_body_rate: 240,
            body_rate_grace: Duration::from_secs(5),
            body_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            max_requests_per_connection: None,
            max_connections_per_ip: None,
        }
    }
}

/// `listeners[].tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Certificate/key pairs, chosen by SNI; the first one serves clients without SNI
    /// (and names that have no ACME certificate yet). Empty only beside `acme`.
    pub certificates: Vec<CertificatePair>,
    /// Lowest protocol version offered.
    pub min_version: TlsVersion,
    /// CA bundle used to verify client certificates, if client auth is on.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is asked for, and whether it is required.
    pub client_auth: ClientAuth,
    /// Certificates ordered from an ACME CA, if configured.
    pub acme: Option<super::AcmeConfig>,
    /// Where it was declared.
    pub origin: Origin,
}

/// A PEM certificate chain and its private key, both resolved against the file that
/// named them.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificatePair {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Where it was declared.
    pub origin: Origin,
}

/// TLS protocol versions a listener may be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Client-certificate verification mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    Off,
    /// Asked for and verified if given.
    Optional,
    /// Required: a client without a valid one fails the handshake.
    Required,
}

/// `routes[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Unique name, shown in logs, metrics and the `route_name` property.
    pub name: String,
    /// Listeners this route serves; `None` means all.
    pub listeners: Option<Vec<String>>,
    /// What a request must look like; every given field must hold.
    pub matcher: RouteMatch,
    /// Explicit precedence: higher wins, and beats every route without one.
    pub priority: Option<i64>,
    /// Filter names, run in this order (responses in reverse).
    pub filters: Vec<String>,
    /// Those of `filters` in shadow mode (`{ filter: NAME, shadow: true }`): they run
    /// on every request, but what they decide is recorded, not applied.
    pub shadow: Vec<String>,
    /// The entries of `filters` with a canary version
    /// (`{ filter: NAME, canary: { filter: NEW, weight: N } }`).
    pub canaries: Vec<FilterCanary>,
    /// Where requests go: one upstream (or `echo@internal`), or a weighted split with
    /// canaries (`upstreams:`).
    pub upstream: super::RouteDestination,
    /// The largest request body accepted (`max_request_body`); `None`: no limit.
    pub max_request_body: Option<u64>,
    /// How long a connection switched to another protocol (an HTTP/1.1 upgrade, a
    /// WebSocket) may pass no byte either way before it is closed.
    pub upgrade_idle_timeout: Duration,
    /// A shadow upstream that gets a copy of a share of the requests, if configured.
    pub mirror: Option<super::MirrorConfig>,
    /// Where it was declared.
    pub origin: Origin,
}

/// `routes[].match`: every field optional; all given must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteMatch {
    /// Host match against the request's authority (port stripped, case-insensitive).
    pub host: Option<HostMatch>,
    /// Path match against the request path (without the query).
    pub path: Option<PathMatch>,
    /// Allowed methods; `None` allows all.
    pub methods: Option<Vec<http::Method>>,
    /// Headers that must be present with exactly these values.
    pub headers: Vec<(http::HeaderName, String)>,
    /// `path_regex`: the path must hold a match (instead of `path` / `path_prefix`).
    pub path_regex: Option<super::Pattern>,
    /// Headers that must be present, or hold a regex match (`{ present: true }`,
    /// `{ regex: R }` under `headers`).
    pub header_patterns: Vec<(http::HeaderName, super::ValueMatch)>,
    /// Query parameters that must be present, equal a value, or hold a regex match.
    pub query: Vec<(String, super::ValueMatch)>,
    /// The client's address must be in one of these blocks.
    pub client_ip: Option<super::ClientIpMatch>,
    /// `any`, `all`, `not`: conditions combined, if given.
    pub logic: Option<Box<super::Logic>>,
}

/// A host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com` (stored lower-case).
    Exact(String),
    /// `*.example.com`: exactly one more label; stores the suffix `.example.com`.
    Wildcard(String),
}

/// A path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `path: /exact`.
    Exact(String),
    /// `path_prefix: /api`: matches `/api`, `/api/`, `/api/x` and also `/apix`
    /// (a plain string prefix, as Envoy's `prefix`).
    Prefix(String),
}

/// The name of the built-in upstream that echoes the request as JSON.
pub const ECHO_UPSTREAM: &str = "echo@internal";

/// `routes[].upgrade_idle_timeout` when not given: nginx's `proxy_read_timeout`
/// default, and three times the 20 s ping interval of common WebSocket libraries.
pub const UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A chain entry's canary: `canary` runs instead of `filter` on the requests that
/// opt in (by `header` or `cookie`) and on `weight`% of the others, drawn per request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FilterCanary {
    /// The entry's filter: the version in force.
    pub filter: String,
    /// The filter run instead on the canary's share.
    pub canary: String,
    /// The share, in percent (0–100), of the requests that did not opt in.
    pub weight: u32,
    /// A request with this header (one of its values exactly this) runs the canary.
    pub header: Option<(http::HeaderName, String)>,
    /// A request with this cookie (exactly this value) runs the canary.
    pub cookie: Option<(String, String)>,
}

/// `filters[]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterConfig {
    /// Unique name, referenced by routes; labels the filter's metrics and logs.
    pub name: String,
    /// Where the module comes from.
    pub source: FilterSource,
    /// proxy-wasm root id; empty when not given.
    pub root_id: String,
    /// The plugin configuration handed to `on_configure`: a YAML string as its raw
    /// bytes, anything else as compact JSON; empty when absent.
    pub config: Vec<u8>,
    /// What a failure of this filter does to its request.
    pub on_error: OnError,
    /// Sandbox limits.
    pub limits: FilterLimits,
    /// `async: true`: callbacks run on a fiber that lets the worker's other requests
    /// run while they compute, for filters whose callbacks legitimately run long. Off
    /// by default: a synchronous call costs far less (docs/performance.md).
    pub asynchronous: bool,
    /// What the module's bytes must be before they are compiled (`sha256`,
    /// `require_signature`); nothing for a standard filter, which is the binary's own.
    pub integrity: ModuleIntegrity,
    /// Where it was declared.
    pub origin: Origin,
}

/// What a module from disk must be for the proxy to load it: the digest its filter
/// entry pins, and a signature by a trusted key when the configuration requires one.
/// Checked on the bytes that are then compiled, on every load and reload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleIntegrity {
    /// `sha256:` the module's digest as lower-case hex, and where it was written.
    pub sha256: Option<(String, Origin)>,
    /// Where `wasm:` was written: a missing or bad signature is reported there.
    pub wasm_origin: Option<Origin>,
    /// `require_signature`: the keys one of which must have signed the module.
    pub signers: Option<std::sync::Arc<SignaturePolicy>>,
}

/// `require_signature:` — every module from disk must carry an ed25519 signature
/// (`MODULE.sig` beside it) by one of these keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignaturePolicy {
    /// The trusted public keys, each with the file it was read from.
    pub keys: Vec<(PathBuf, ed25519_dalek::VerifyingKey)>,
    /// Where it was declared.
    pub origin: Origin,
}

impl FilterConfig {
    /// Whether `other` configures the same filter, wherever in which file it was
    /// written: a reload keeps a filter's VMs (and their state) when this holds.
    pub fn same_settings(&self, other: &FilterConfig) -> bool {
        // Destructured in full, so that a new field cannot be forgotten here.
        let FilterConfig {
            name,
            source,
            root_id,
            config,
            on_error,
            limits,
            asynchronous,
            // Checked on the module's bytes before any reuse, on every build.
            integrity: _,
            origin: _,
        } = self;
        *name == other.name
            && *source == other.source
            && *root_id == other.root_id
            && *config == other.config
            && *on_error == other.on_error
            && *limits == other.limits
            && *asynchronous == other.asynchronous
    }
}

/// Where a filter's module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterSource {
    /// A standard filter embedded in the binary, by name (`rate-limit`, …).
    Builtin(String),
    /// A module on disk, resolved against the file that named it.
    Wasm(PathBuf),
}

/// `on_error`: the failure policy of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail the request with 500.
    #[default]
    Deny,
    /// Skip the filter and carry on.
    Allow,
}

/// `filters[].limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Linear memory cap of one VM, in bytes.
    pub memory: u64,
    /// Deadline of one callback into the guest.
    pub callback_timeout: Duration,
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self {
            memory: 64 * 1024 * 1024,
            callback_timeout: Duration::from_millis(10),
        }
    }
}

/// `upstreams[]`. The default is an upstream with no targets and every option off,
/// for building one in code (`..UpstreamConfig::default()`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamConfig {
    /// Unique name, referenced by routes and by `http_call`.
    pub name: String,
    /// Targets with their weights.
    pub targets: Vec<TargetConfig>,
    /// Active health checking, if configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Connect and request timeouts.
    pub timeouts: UpstreamTimeouts,
    /// TLS to the targets, if configured.
    pub tls: Option<UpstreamTlsConfig>,
    /// Which HTTP the targets speak (`protocol`).
    pub protocol: UpstreamProtocol,
    /// The balancing policy (`round_robin` when not given).
    pub balance: super::BalanceConfig,
    /// Retries of failed attempts; `None`: only the implicit connect-failure retry.
    pub retries: Option<super::RetryConfig>,
    /// Ejection of targets that keep failing, if configured.
    pub outlier_detection: Option<super::OutlierConfig>,
    /// Limits on requests in flight, connections and requests waiting for one.
    pub circuit_breaker: Option<super::BreakerConfig>,
    /// The PROXY protocol header sent on connections of `tcp_routes`, if configured.
    pub proxy_protocol: Option<super::ProxyProtocolVersion>,
    /// Sticky sessions: the cookie that pins a client to a target, if configured.
    pub sticky: Option<super::StickyConfig>,
    /// Failover and locality: below this percentage of its targets up, a priority
    /// group (or the proxy's zone within it) passes part of its traffic on.
    pub failover_threshold: u32,
    /// `metadata`: what filters read as `cluster_metadata.filter_metadata.<namespace>.
    /// <name>` on requests routed here, by its dotted path (`<namespace>.<name>`); a
    /// string as its bytes, any other value as compact JSON.
    pub metadata: Metadata,
    /// Locality: past this many requests in flight per target up, the proxy's zone
    /// passes part of its traffic to the group's less loaded zones; `None`: never.
    pub zone_overload: Option<u32>,
    /// The proxy's own zone (top-level `zone`, or `PORTCULLIS_ZONE`), copied into each
    /// upstream so that a reload changing it rebuilds the upstreams it matters to.
    pub local_zone: Option<String>,
    /// Where it was declared.
    pub origin: Origin,
}

/// `upstreams[].targets[]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetConfig {
    /// `host:port`; a name is resolved when connecting.
    pub address: String,
    /// Relative share of traffic (smooth weighted round-robin); at least 1.
    pub weight: u32,
    /// Failover group: 0 (the default) takes traffic first, then 1, and so on.
    pub priority: u32,
    /// Free-form labels, in the order written; `zone` is what locality reads.
    pub labels: Vec<(String, String)>,
}

impl TargetConfig {
    /// The target's `zone` label, if it has one.
    pub fn zone(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == "zone")
            .map(|(_, v)| v.as_str())
    }
}

/// `upstreams[].health_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// What a probe is (`type`).
    pub kind: HealthCheckKind,
    /// Path probed with GET (`http`), any 2xx/3xx being healthy; for `grpc`, the
    /// health method's path; empty for `tcp`.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
}

/// `upstreams[].health_check.type`: what a probe is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HealthCheckKind {
    /// `GET path`; a 2xx or 3xx is healthy.
    #[default]
    Http,
    /// gRPC's health protocol over HTTP/2: `grpc.health.v1.Health/Check` for
    /// `service` (empty: the server as a whole); `SERVING` is healthy.
    Grpc {
        /// The service asked about.
        service: String,
    },
    /// A TCP connect (and TLS handshake, with `tls`) that succeeds is healthy.
    Tcp,
}

/// `upstreams[].protocol`: which HTTP goes to the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1; over TLS, HTTP/2 when the target picks it by ALPN.
    #[default]
    Auto,
    /// HTTP/2 with prior knowledge over plain TCP: gRPC servers without TLS.
    H2c,
}

/// `upstreams[].timeouts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect; past it: 502.
    pub connect: Duration,
    /// Until the response headers arrive; past it: 504.
    pub request: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(30),
        }
    }
}

/// `upstreams[].tls`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTlsConfig {
    /// CA bundle to verify the targets against; the system roots when absent.
    pub ca: Option<PathBuf>,
    /// Server name to send and verify; the target's host when absent.
    pub sni: Option<String>,
    /// Whether to verify the target's certificate at all.
    pub verify: bool,
    /// Client certificate for mutual TLS.
    pub client_cert: Option<CertificatePair>,
}
