//! The validated traffic-management settings: how an upstream balances over its
//! targets, how a route splits its requests between upstreams, and how an unchanged
//! upstream is recognised across a reload.
//!
//! Kept apart from `model.rs` so that this work merges without touching its blocks.

use std::time::Duration;

use super::{CertificatePair, Origin, UpstreamConfig, UpstreamTlsConfig};

/// The default `failover_threshold`: a group with at least 70% of its targets up
/// takes all its traffic (Envoy's overprovisioning factor 1.4 puts it at 71%).
pub const DEFAULT_FAILOVER_THRESHOLD: u32 = 70;

/// The default `zone_overload`: the proxy's zone spills part of its traffic to the
/// group's other zones past 32 requests in flight per target up (and only to zones
/// less loaded than it).
pub const DEFAULT_ZONE_OVERLOAD: u32 = 32;

/// The environment variable that gives the proxy's zone, over the top-level `zone`.
pub const ZONE_ENV: &str = "PORTCULLIS_ZONE";

/// The policy an upstream balances with when `balance` is not given.
pub const DEFAULT_BALANCE: &str = "round_robin";

/// `upstreams[].balance`: a policy by name and its settings as written.
///
/// The settings are checked by the policy itself when the upstream is built
/// (`upstream::balance`), so that adding a policy needs no change here; its errors
/// still name the file, line and field.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceConfig {
    /// The policy: `round_robin`, `least_request`, `random`, `consistent_hash`.
    pub policy: String,
    /// The policy's other settings, in the order written.
    pub options: Vec<BalanceOption>,
    /// Where `balance` was written.
    pub origin: Origin,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            policy: DEFAULT_BALANCE.into(),
            options: Vec::new(),
            origin: Origin::default(),
        }
    }
}

/// One setting of a balancing policy (`key: header:x-user`), as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceOption {
    /// The setting's name.
    pub name: String,
    /// Its value, as the scalar was written.
    pub value: String,
    /// The line it was written on.
    pub line: usize,
}

/// `upstreams[].retries`: when a failed attempt is tried again (see
/// `upstream::retry`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1–10).
    pub attempts: u32,
    /// The failures that are retried.
    pub on: Vec<RetryOn>,
    /// How long one attempt may wait for its response head; the upstream's
    /// `timeouts.request` when absent.
    pub per_try_timeout: Option<Duration>,
    /// The base of the randomised, doubling wait between attempts.
    pub backoff: Duration,
    /// A request body of declared length up to this is read whole so that it can be
    /// sent again; a longer or streamed one is sent once.
    pub max_body: u64,
    /// Retries under way may be at most this percentage of the requests in flight...
    pub budget_percent: u32,
    /// ...or this many, whichever is more.
    pub min_retries: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            on: vec![RetryOn::ConnectFailure, RetryOn::RefusedStream],
            per_try_timeout: None,
            backoff: Duration::from_millis(25),
            max_body: 64 * 1024,
            budget_percent: 20,
            min_retries: 3,
        }
    }
}

/// `upstreams[].outlier_detection`: a target that fails several requests in a row is
/// taken out of rotation for a while (see `upstream::outlier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row (5xx, or no answer at all) that eject a target.
    pub consecutive_5xx: u32,
    /// The first ejection's length; the n-th lasts n times this...
    pub base_ejection_time: Duration,
    /// ...up to this.
    pub max_ejection_time: Duration,
    /// At most this percentage of the targets is out of rotation at once (at least one
    /// target may always be).
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// `upstreams[].circuit_breaker`: limits past which a request gets 503 at once
/// instead of queueing behind the others (at least one is set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BreakerConfig {
    /// Requests in flight (from every worker) beyond which new ones are refused.
    pub max_requests: Option<u32>,
    /// Connections open to the targets (from every worker) beyond which a request that
    /// needs a new one is refused.
    pub max_connections: Option<u32>,
    /// Requests waiting for a new connection to be set up (from every worker) beyond
    /// which another that would wait is refused.
    pub max_pending: Option<u32>,
}

/// `upstreams[].sticky`: a cookie set on the response pins the client to the target
/// that served it, for as long as that target is in rotation (see `upstream::sticky`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    /// The cookie's name.
    pub cookie: String,
    /// The cookie's `Max-Age`; `None`: a session cookie.
    pub max_age: Option<Duration>,
}

/// A failure `retries.on` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// `connect-failure`: no connection could be made.
    ConnectFailure,
    /// `refused-stream`: HTTP/2 `REFUSED_STREAM`.
    RefusedStream,
    /// `reset`: the connection failed before the response head.
    Reset,
    /// `5xx`: a 5xx response, or no response at all (connect failure, reset, timeout).
    Status5xx,
    /// `gateway-error`: a 502, 503 or 504 response, or no response at all.
    GatewayError,
}

/// `routes[].mirror`: a copy of a share of the route's requests goes to a shadow
/// upstream, whose answers are discarded (see `proxy::mirror`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    /// The shadow upstream's name.
    pub upstream: String,
    /// The share of the requests copied, 1–100 (percent).
    pub percent: u32,
    /// A request whose body is longer than this is not copied.
    pub max_body: u64,
    /// Copies of the route's requests under way at most; past it, requests are not
    /// copied (a shadow slower than the traffic).
    pub max_in_flight: u32,
}

/// `routes[].upstream` / `routes[].upstreams`: where a route's requests go.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteDestination {
    /// `upstream: NAME` (an upstream, or `echo@internal`).
    Single(String),
    /// `upstreams: [...]`: the first canary whose match holds takes the request;
    /// otherwise the weighted entries share the requests by weight.
    Split(Vec<SplitEntry>),
}

/// One entry of `routes[].upstreams`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitEntry {
    /// The upstream's name (or `echo@internal`).
    pub upstream: String,
    /// Share of the requests no canary took; 0 for a canary (it takes only its own).
    pub weight: u32,
    /// For a canary: what a request must carry to go here.
    pub canary: Option<CanaryMatch>,
}

/// `routes[].upstreams[].match`: every header and cookie given must be present with
/// exactly this value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CanaryMatch {
    /// Headers and their values (any one of repeated values may match).
    pub headers: Vec<(http::HeaderName, String)>,
    /// Cookies and their values.
    pub cookies: Vec<(String, String)>,
}

impl RouteDestination {
    /// Every upstream name this destination refers to, in the order written.
    pub fn names(&self) -> Vec<&str> {
        match self {
            RouteDestination::Single(name) => vec![name.as_str()],
            RouteDestination::Split(entries) => {
                entries.iter().map(|e| e.upstream.as_str()).collect()
            }
        }
    }
}

impl From<&str> for RouteDestination {
    fn from(name: &str) -> Self {
        RouteDestination::Single(name.to_string())
    }
}

impl From<String> for RouteDestination {
    fn from(name: String) -> Self {
        RouteDestination::Single(name)
    }
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// Whether `other` configures the same upstream, wherever in which file it was
    /// written: a reload keeps an upstream's health, pools and balancer state when this
    /// holds, so moving an unchanged upstream to another line must not reset them.
    pub fn same_settings(&self, other: &UpstreamConfig) -> bool {
        // Destructured in full, so that a new field cannot be forgotten here.
        let UpstreamConfig {
            name,
            targets,
            health_check,
            timeouts,
            tls,
            protocol,
            balance,
            retries,
            outlier_detection,
            circuit_breaker,
            proxy_protocol,
            sticky,
            failover_threshold,
            metadata,
            zone_overload,
            local_zone,
            origin: _,
        } = self;
        *name == other.name
            && *targets == other.targets
            && *health_check == other.health_check
            && *timeouts == other.timeouts
            && same_tls(tls.as_ref(), other.tls.as_ref())
            && *protocol == other.protocol
            && *retries == other.retries
            && *outlier_detection == other.outlier_detection
            && *circuit_breaker == other.circuit_breaker
            && *proxy_protocol == other.proxy_protocol
            && *sticky == other.sticky
            && *failover_threshold == other.failover_threshold
            && *metadata == other.metadata
            && *zone_overload == other.zone_overload
            && *local_zone == other.local_zone
            && balance.policy == other.balance.policy
            && balance.options.len() == other.balance.options.len()
            && balance
                .options
                .iter()
                .zip(&other.balance.options)
                .all(|(a, b)| a.name == b.name && a.value == b.value)
    }
}

fn same_tls(a: Option<&UpstreamTlsConfig>, b: Option<&UpstreamTlsConfig>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a.is_none() && b.is_none();
    };
    let UpstreamTlsConfig {
        ca,
        sni,
        verify,
        client_cert,
    } = a;
    let same_pair = |x: Option<&CertificatePair>, y: Option<&CertificatePair>| match (x, y) {
        (Some(x), Some(y)) => x.cert == y.cert && x.key == y.key,
        (x, y) => x.is_none() && y.is_none(),
    };
    *ca == b.ca
        && *sni == b.sni
        && *verify == b.verify
        && same_pair(client_cert.as_ref(), b.client_cert.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetConfig;

    fn upstream(line: usize) -> UpstreamConfig {
        UpstreamConfig {
            name: "api".into(),
            targets: vec![TargetConfig {
                address: "127.0.0.1:9000".into(),
                weight: 1,
                ..TargetConfig::default()
            }],
            balance: BalanceConfig {
                policy: "consistent_hash".into(),
                options: vec![BalanceOption {
                    name: "key".into(),
                    value: "client_ip".into(),
                    line: line + 2,
                }],
                origin: Origin {
                    file: "a.yaml".into(),
                    line: line + 1,
                },
            },
            origin: Origin {
                file: "a.yaml".into(),
                line,
            },
            ..UpstreamConfig::default()
        }
    }

    #[test]
    fn moving_an_upstream_keeps_it_the_same() {
        assert!(upstream(3).same_settings(&upstream(40)));
        let mut other = upstream(40);
        other.origin.file = "b.yaml".into();
        assert!(upstream(3).same_settings(&other));
    }

    #[test]
    fn a_changed_setting_makes_it_another() {
        let mut weight = upstream(3);
        weight.targets[0].weight = 2;
        assert!(!upstream(3).same_settings(&weight));
        let mut key = upstream(3);
        key.balance.options[0].value = "path".into();
        assert!(!upstream(3).same_settings(&key));
        let mut policy = upstream(3);
        policy.balance.policy = "random".into();
        assert!(!upstream(3).same_settings(&policy));
    }
}
