//! Upstreams: balancing over healthy targets (by the upstream's policy, see
//! [`balance`]), per-worker keep-alive pools, health checks, and forwarding with
//! connect and request timeouts.
//!
//! Health: a target is down when its last active probe failed, or (passively) when a
//! connection to it was refused. With a health check configured, a passively marked
//! target stays down until its next successful probe; without one, for
//! [`PASSIVE_BACKOFF`]. When every target is down the balancer picks among all of
//! them anyway (fail open): health data can lag, and trying costs less than certain
//! failure. Failed attempts are retried as the upstream's `retries` say ([`retry`]);
//! without it, a connect failure of a request without a body is retried once on
//! another target.

pub mod balance;
pub mod echo;
pub mod mirror;

pub use stream::Stream;
pub use target::InFlight;

pub(crate) mod h1;
mod health;
mod limits;
mod outlier;
mod pool;
mod replay;
mod retry;
mod sticky;
mod stream;
mod target;
mod tiers;
mod traced;
mod worker;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;

use crate::body::{self, ProxyBody};
use crate::config::{ConfigError, UpstreamConfig};
use crate::tls::UpstreamTls;
use crate::tls::connector::{ConnectError, UpstreamConnector};
use balance::{Balancer, PickRequest};
use replay::{clone_head, read_whole, rebuild};
use retry::{Failure, Retries};
use target::{Target, TargetSet, Tracked};

/// Set on a retried attempt's request: which attempt it is (2 for the first retry).
pub const ATTEMPT_HEADER: &str = "x-portcullis-attempt";

/// How long a target refused by a connection stays down when no health check runs.
pub const PASSIVE_BACKOFF: Duration = Duration::from_secs(3);

/// Why forwarding to an upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made (refused, unreachable, connect timeout): 502.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The target tried.
        target: String,
        /// What the connector said.
        #[source]
        source: ConnectError,
    },
    /// The response headers did not arrive within the request timeout: 504.
    #[error("{target} sent no response headers within {timeout:?}")]
    Timeout {
        /// The target tried.
        target: String,
        /// The configured request timeout.
        timeout: Duration,
    },
    /// The connection failed after it was made (reset, malformed response): 502.
    #[error("exchange with {target} failed: {source}")]
    Exchange {
        /// The target tried.
        target: String,
        /// What the connection said.
        #[source]
        source: body::BoxError,
    },
    /// The response body failed while being read (for a buffered call): 502.
    #[error("reading the response of {target} failed: {source}")]
    Body {
        /// The target tried.
        target: String,
        /// What the connection said.
        #[source]
        source: body::BoxError,
    },
    /// The upstream's circuit breaker is open (`max_requests` in flight, or no new
    /// connection within `max_connections` / `max_pending`): 503.
    #[error("{upstream} is at its circuit breaker's {limit} ({max})")]
    Overloaded {
        /// The upstream's name.
        upstream: String,
        /// The limit reached: `max_requests`, `max_connections` or `max_pending`.
        limit: &'static str,
        /// Its value.
        max: u32,
    },
    /// The client's request body failed while it was read whole to be retryable: 400.
    #[error("reading the request body failed: {source}")]
    RequestBody {
        /// What the body said.
        #[source]
        source: body::BoxError,
    },
    /// The upstream has no target to pick (cannot happen with a validated config).
    #[error("upstream has no targets")]
    NoTarget,
}

impl UpstreamError {
    /// What kind of failure it is: the `kind` label of
    /// `portcullis_upstream_errors_total` and a failed attempt's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::Timeout { .. } => "timeout",
            UpstreamError::Exchange { .. } | UpstreamError::Body { .. } => "protocol",
            UpstreamError::NoTarget => "no_target",
            UpstreamError::RequestBody { .. } => "request_body",
            UpstreamError::Overloaded { .. } => "overflow",
        }
    }
}

/// A configured upstream: its targets, their health, and its health-check task.
/// Kept across reloads while its configuration does not change.
pub struct Upstream {
    /// Process-unique: keys the per-worker pools and balancer state.
    id: u64,
    config: UpstreamConfig,
    targets: Arc<TargetSet>,
    /// The balancing policy, shared by every worker (each with its own state of it).
    balancer: Balancer,
    /// When failed attempts are tried again, and the retry budget.
    retries: Retries,
    /// Per-worker state holds a `Weak` of this to know when to let go of its pool.
    alive: Arc<()>,
    /// TLS to the targets, when configured.
    tls: Option<UpstreamTls>,
    /// The circuit breaker's connection limits, shared by every worker's pool.
    limits: Option<Arc<limits::ConnLimits>>,
    /// The sticky-session cookie, when configured.
    sticky: Option<sticky::Sticky>,
    /// Failover and locality tiers, when the targets fall into more than one.
    tiers: Option<tiers::Tiers>,
    /// Stops the health-check task when the upstream is dropped.
    _health: Option<health::Task>,
}

// === impl Upstream ===

impl Upstream {
    /// Validates the targets' addresses and the balancing settings, and starts the
    /// health check, if configured; `tls` (built from `config.tls`) makes every
    /// connection HTTPS. Every error found is returned.
    pub fn new(
        config: &UpstreamConfig,
        tls: Option<&UpstreamTls>,
    ) -> Result<Self, Vec<ConfigError>> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let mut targets = Vec::with_capacity(config.targets.len());
        for (i, t) in config.targets.iter().enumerate() {
            let address: Authority = t.address.parse().map_err(|e| {
                vec![ConfigError::at(
                    &config.origin,
                    format!("upstreams.{}.targets.{i}.address", config.name),
                    format!("`{}` is not a host:port: {e}", t.address),
                )]
            })?;
            if address.port_u16().is_none() {
                return Err(vec![ConfigError::at(
                    &config.origin,
                    format!("upstreams.{}.targets.{i}.address", config.name),
                    format!("`{}` needs a port", t.address),
                )]);
            }
            targets.push(Target::new(address, t.weight.max(1)));
        }
        if targets.is_empty() {
            return Err(vec![ConfigError::at(
                &config.origin,
                format!("upstreams.{}.targets", config.name),
                "an upstream needs at least one target",
            )]);
        }
        let tiers = tiers::Tiers::new(config);
        let counted = tiers.as_ref().and_then(|t| t.counted_tiers());
        let targets = Arc::new(TargetSet::with_tiers(targets, counted.unwrap_or_default()));
        let balancer = Balancer::build(&config.name, &config.balance, &targets)?;
        let sticky = config
            .sticky
            .as_ref()
            .map(|c| sticky::Sticky::new(c, &targets));
        let health = config.health_check.as_ref().and_then(|hc| {
            let connector = UpstreamConnector::new(http_connector(hc.timeout), tls, hc.timeout);
            health::start(&config.name, targets.clone(), hc.clone(), connector)
        });
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config: config.clone(),
            retries: Retries::new(config.retries.as_ref(), targets.list.len()),
            targets,
            balancer,
            alive: Arc::new(()),
            tls: tls.cloned(),
            limits: limits::ConnLimits::new(config.circuit_breaker.as_ref()),
            sticky,
            tiers,
            _health: health,
        })
    }

    /// The configuration this upstream was built from.
    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// The fingerprint of the TLS files this upstream was built from, if any.
    pub fn tls_fingerprint(&self) -> Option<[u8; 32]> {
        self.tls.as_ref().map(|t| t.fingerprint)
    }

    /// A connector for this upstream's targets: TCP, then TLS when configured.
    pub(crate) fn connector(&self) -> UpstreamConnector {
        let connect = self.config.timeouts.connect;
        UpstreamConnector::new(http_connector(connect), self.tls.as_ref(), connect)
    }

    /// Whether target `index` (in config order) is in rotation now: its last probe
    /// passed and no refused connection has taken it out.
    pub fn target_healthy(&self, index: usize) -> Option<bool> {
        let now = now_ms();
        self.targets.list.get(index).map(|t| t.is_available(now))
    }

    /// The target (index in config order) this worker's balancer picks for `request`
    /// now, as a request pays for it (the per-worker state lookup included, the pool
    /// handle not): for benchmarks and tests; forwarding picks through the same path.
    pub fn pick(&self, request: &PickRequest<'_>) -> Option<usize> {
        worker::pick_index(self, request)
    }

    /// Connections open to the targets, when the circuit breaker limits them (only
    /// then are they counted).
    pub fn open_connections(&self) -> Option<u32> {
        self.limits.as_ref().map(|l| l.open())
    }

    /// The targets with their health, requests in flight, ejections in a row (outlier
    /// detection) and the time left of a passive back-off, for the dashboard.
    pub fn status(&self) -> serde_json::Value {
        let now = now_ms();
        let targets: Vec<serde_json::Value> = self
            .targets
            .list
            .iter()
            .map(|t| {
                let back_off = t.back_off_until().filter(|&u| u > now);
                serde_json::json!({
                    "address": t.address.as_str(),
                    "weight": t.weight,
                    "healthy": t.is_available(now),
                    "active": t.active(),
                    "ejections": t.ejections.load(std::sync::atomic::Ordering::Relaxed),
                    "back_off_ms": back_off.map(|u| u - now),
                })
            })
            .collect();
        let mut status = serde_json::json!({
            "name": self.config.name,
            "health_check": self.config.health_check.is_some(),
            "balance": self.balancer.name(),
            "targets": targets,
        });
        if let Some(open) = self.open_connections() {
            status["connections"] = open.into();
        }
        status
    }

    /// Sends `req` (origin-form URI, headers already prepared), which came from
    /// `client` (if from a client at all), to a target, trying again as the upstream's
    /// retry policy allows, and returns the response head with the body still
    /// streaming. Returns the address of the target tried last with the outcome, for
    /// the access log.
    pub async fn forward(
        &self,
        req: Request<ProxyBody>,
        client: Option<IpAddr>,
    ) -> (
        Option<Authority>,
        Result<Response<ProxyBody>, UpstreamError>,
    ) {
        if let Some(e) = self.over_max_requests() {
            return (None, Err(e));
        }
        let trace = traced::trace_of(&req);
        let (mut once, replay) = match self.replayable(req).await {
            Ok(r) => r,
            Err(e) => return (None, Err(e)),
        };
        let attempts = if replay.is_some() {
            self.retries.attempts()
        } else {
            1
        };
        // Held until the last attempt is over: a retry counts in the budget meanwhile.
        let mut _permit = None;
        let mut attempt = 1;
        // The target the request's sticky cookie names, if any.
        let mut named = None;
        loop {
            let this = match (&replay, once.take()) {
                (Some((head, body)), _) => rebuild(head, body, attempt),
                (None, Some(req)) => req,
                (None, None) => return (None, Err(UpstreamError::NoTarget)),
            };
            let request = PickRequest {
                uri: this.uri(),
                headers: this.headers(),
                client,
            };
            // A sticky client goes back to its target while it is in rotation (a retry
            // lets the balancer pick afresh).
            if attempt == 1 {
                named = self.sticky.as_ref().and_then(|s| s.pinned(this.headers()));
            }
            let pinned = named
                .filter(|_| attempt == 1)
                .and_then(|i| worker::pinned(self, i));
            let picked = pinned.or_else(|| worker::pick(self, &request));
            let Some((i, pool)) = picked else {
                return (None, Err(UpstreamError::NoTarget));
            };
            let Some(target) = self.targets.list.get(i) else {
                return (None, Err(UpstreamError::NoTarget));
            };
            let flight = InFlight::start(&self.targets, i);
            let mut this = this;
            let span = trace
                .as_deref()
                .map(|t| traced::Attempt::begin(t, &mut this));
            let result = self.send(&pool, i, target, this).await;
            if let Some(span) = span {
                let address = target.address.as_str();
                span.end(&self.config.name, address, attempt, &result);
            }
            let failure = Failure::of(&result);
            if let Some(config) = &self.config.outlier_detection {
                outlier::record(config, &self.targets, target, failure, now_ms);
            }
            if attempt < attempts
                && let Some(failure) = failure.filter(|f| self.retries.retries(*f))
            {
                match self.retries.admit(self.targets.active()) {
                    Some(permit) => {
                        _permit = Some(permit);
                        crate::metrics::global().upstream_retry(&self.config.name, failure.label());
                        // The failed attempt's response (a 5xx) is dropped unread.
                        drop((result, flight));
                        tokio::time::sleep(self.retries.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    None => crate::metrics::global().upstream_retry_denied(&self.config.name),
                }
            }
            let mut result = result;
            if let (Some(sticky), Ok(resp)) = (&self.sticky, &mut result)
                && named != Some(i)
                && let Some(cookie) = sticky.set_cookie(i)
            {
                resp.headers_mut()
                    .append(http::header::SET_COOKIE, cookie.clone());
            }
            let result = result.map(|resp| resp.map(|b| body::boxed(Tracked::new(b, flight))));
            return (Some(target.address.clone()), result);
        }
    }

    /// `req` as it goes out once, or, when a failed attempt may be retried, its head
    /// and whole body to send again: a request without a body, or with one of declared
    /// length within the policy's `max_body` (read here, before the first attempt).
    async fn replayable(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<(Option<Request<ProxyBody>>, Option<(Request<()>, Bytes)>), UpstreamError> {
        if self.retries.attempts() < 2 {
            return Ok((Some(req), None));
        }
        if req.body().is_end_stream() {
            return Ok((None, Some((clone_head(&req), Bytes::new()))));
        }
        match body::declared_length(req.headers()) {
            Some(length) if length <= self.retries.max_body() => {
                let head = clone_head(&req);
                let body = read_whole(req.into_body(), length).await?;
                Ok((None, Some((head, body))))
            }
            _ => Ok((Some(req), None)),
        }
    }

    /// Sends a buffered request (a filter's `http_call`: origin-form or absolute URI,
    /// `Host` set by the caller) and reads the whole answer, all within `timeout`.
    pub async fn call(
        &self,
        req: Request<Bytes>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, UpstreamError> {
        let req = req.map(body::full);
        let exchange = async {
            let (target, result) = self.forward(req, None).await;
            let (head, body) = result?.into_parts();
            let target = target.map(|t| t.to_string()).unwrap_or_default();
            let body = body
                .collect()
                .await
                .map_err(|source| UpstreamError::Body { target, source })?;
            Ok(Response::from_parts(head, body.to_bytes()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(UpstreamError::Timeout {
                    target: self.config.name.clone(),
                    timeout,
                })
            })
    }

    async fn send(
        &self,
        pool: &Arc<pool::Pool>,
        index: usize,
        target: &Target,
        req: Request<ProxyBody>,
    ) -> Result<Response<pool::PooledBody>, UpstreamError> {
        let request = self.config.timeouts.request;
        let timeout = self
            .retries
            .per_try_timeout()
            .map_or(request, |t| t.min(request));
        let address = || target.address.to_string();
        match tokio::time::timeout(timeout, pool.request(index, &target.address, req)).await {
            Err(_) => Err(UpstreamError::Timeout {
                target: address(),
                timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(pool::PoolError::Connect(source))) => {
                self.mark_down(target);
                Err(UpstreamError::Connect {
                    target: address(),
                    source,
                })
            }
            Ok(Err(pool::PoolError::Exchange(source))) => Err(UpstreamError::Exchange {
                target: address(),
                source,
            }),
            Ok(Err(pool::PoolError::Overflow(o))) => Err(self.overloaded(o.limit, o.max)),
        }
    }

    /// The breaker's refusal when `max_requests` are in flight already.
    fn over_max_requests(&self) -> Option<UpstreamError> {
        let max = self.config.circuit_breaker.as_ref()?.max_requests?;
        (self.targets.active() >= max).then(|| self.overloaded("max_requests", max))
    }

    /// The circuit breaker's refusal: `limit` (of value `max`) was reached.
    fn overloaded(&self, limit: &'static str, max: u32) -> UpstreamError {
        tracing::debug!(upstream = %self.config.name, limit, max, "circuit breaker open");
        UpstreamError::Overloaded {
            upstream: self.config.name.clone(),
            limit,
            max,
        }
    }

    /// Passive health: a target that refused a connection is taken out of rotation.
    fn mark_down(&self, target: &Target) {
        if self.config.health_check.is_some() {
            target.healthy.store(false, Ordering::Relaxed);
        } else {
            let until = now_ms().saturating_add(PASSIVE_BACKOFF.as_millis() as u64);
            target.down_until_ms.store(until, Ordering::Relaxed);
        }
        self.targets.health_changed();
        tracing::warn!(upstream = %self.config.name, target = %target.address, "target marked down");
    }
}

/// A TCP connector with `connect` as its timeout.
fn http_connector(connect: Duration) -> hyper_util::client::legacy::connect::HttpConnector {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(connect));
    connector.set_nodelay(true);
    connector
}

/// Milliseconds on a monotonic clock whose origin is the first call.
fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}
