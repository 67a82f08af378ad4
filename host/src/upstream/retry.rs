//! Retries: which failed attempts an upstream tries again, the budget that keeps
//! retries from amplifying an outage, and the wait between attempts.
//!
//! A request is tried again only when it can be sent again whole: without a body, or
//! with a body of declared length within `max_body`, read whole before the first
//! attempt. A streamed body (no `Content-Length`, or a longer one) goes once, so a
//! POST whose body is still arriving is never sent twice.
//!
//! The budget (Envoy's retry budget): at any moment the retries under way for an
//! upstream may be at most `budget` percent of its requests in flight, or
//! `min_retries`, whichever is more. When an upstream fails every request, retries
//! then add at most that share to its load instead of multiplying it by `attempts`.
//!
//! Without `retries`, an upstream of several targets tries a request without a body
//! once more on another target when the first could not connect (nothing reached the
//! upstream, so nothing can be done twice): the behaviour from before `retries`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::StatusCode;

use super::UpstreamError;
use crate::config::{RetryConfig, RetryOn};

/// Why an attempt failed, as the retry conditions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made.
    Connect,
    /// HTTP/2 `REFUSED_STREAM`: the upstream did not process the request.
    Refused,
    /// The connection failed after it was made, before the response head.
    Reset,
    /// No response head within the (per-try) timeout.
    Timeout,
    /// A 5xx response.
    Status(StatusCode),
}

impl Failure {
    /// The failure of an attempt that ended in `result`, if it failed.
    pub fn of<B>(result: &Result<http::Response<B>, UpstreamError>) -> Option<Failure> {
        match result {
            Ok(resp) if resp.status().is_server_error() => Some(Failure::Status(resp.status())),
            Ok(_) => None,
            Err(UpstreamError::Connect { .. }) => Some(Failure::Connect),
            Err(UpstreamError::Timeout { .. }) => Some(Failure::Timeout),
            Err(UpstreamError::Exchange { source, .. }) if refused_stream(source) => {
                Some(Failure::Refused)
            }
            Err(UpstreamError::Exchange { .. }) => Some(Failure::Reset),
            Err(_) => None,
        }
    }

    /// The `reason` label of `portcullis_upstream_retries_total`.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Connect => "connect-failure",
            Failure::Refused => "refused-stream",
            Failure::Reset => "reset",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "5xx",
        }
    }

    /// Whether the condition `on` covers this failure (Envoy's meanings: `5xx` and
    /// `gateway-error` include failing to get an answer at all).
    fn covered_by(self, on: RetryOn) -> bool {
        match (on, self) {
            (RetryOn::ConnectFailure, Failure::Connect) => true,
            (RetryOn::RefusedStream, Failure::Refused) => true,
            (RetryOn::Reset, Failure::Reset | Failure::Refused) => true,
            (RetryOn::Status5xx, _) => true,
            (RetryOn::GatewayError, Failure::Status(s)) => {
                matches!(s.as_u16(), 502..=504)
            }
            (RetryOn::GatewayError, _) => true,
            _ => false,
        }
    }
}

/// Whether `e` is HTTP/2's `REFUSED_STREAM` (hyper keeps h2's error as its source).
fn refused_stream(e: &crate::body::BoxError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

/// An upstream's retry policy and its budget's running count.
pub struct Retries {
    config: RetryConfig,
    /// Retries under way now.
    retrying: AtomicU32,
}

impl Retries {
    /// The policy of `config`; without one, the implicit policy (see the module
    /// documentation) for an upstream of `targets` targets.
    pub fn new(config: Option<&RetryConfig>, targets: usize) -> Self {
        let config = config.cloned().unwrap_or_else(|| RetryConfig {
            attempts: if targets > 1 { 2 } else { 1 },
            on: vec![RetryOn::ConnectFailure],
            per_try_timeout: None,
            backoff: Duration::ZERO,
            max_body: 0,
            ..RetryConfig::default()
        });
        Self {
            config,
            retrying: AtomicU32::new(0),
        }
    }

    /// Attempts in all, the first included.
    pub fn attempts(&self) -> u32 {
        self.config.attempts
    }

    /// The longest request body read whole so that it can be sent again.
    pub fn max_body(&self) -> u64 {
        self.config.max_body
    }

    /// The time one attempt may wait for its response head, if shorter than the
    /// upstream's request timeout.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.config.per_try_timeout
    }

    /// Whether this policy retries `failure`.
    pub fn retries(&self, failure: Failure) -> bool {
        self.config.on.iter().any(|&on| failure.covered_by(on))
    }

    /// A place in the budget for one retry, the upstream having `active` requests in
    /// flight; `None` when the budget is spent.
    pub fn admit(&self, active: u32) -> Option<Permit<'_>> {
        let allowed = (u64::from(active) * u64::from(self.config.budget_percent) / 100)
            .max(u64::from(self.config.min_retries));
        let taken = self.retrying.fetch_add(1, Ordering::Relaxed);
        if u64::from(taken) >= allowed {
            self.retrying.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Permit(&self.retrying))
    }

    /// The wait before retry number `retry` (1 for the first): a random time up to
    /// `backoff` × 2^(retry−1), at most ten times `backoff` (full jitter, so that
    /// clients failing together do not retry together).
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self.config.backoff;
        if base.is_zero() {
            return Duration::ZERO;
        }
        let ceiling = base
            .saturating_mul(1 << retry.saturating_sub(1).min(16))
            .min(base.saturating_mul(10));
        ceiling.mul_f64(rand::random::<f64>())
    }
}

/// A retry counted in the budget while it lives.
pub struct Permit<'a>(&'a AtomicU32);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn], budget_percent: u32, min_retries: u32) -> Retries {
        Retries::new(
            Some(&RetryConfig {
                attempts: 3,
                on: on.to_vec(),
                budget_percent,
                min_retries,
                ..RetryConfig::default()
            }),
            2,
        )
    }

    #[test]
    fn conditions_cover_what_envoy_says() {
        let s = |code: u16| Failure::Status(StatusCode::from_u16(code).unwrap_or_default());
        let gateway = policy(&[RetryOn::GatewayError], 20, 3);
        assert!(gateway.retries(s(503)) && gateway.retries(Failure::Timeout));
        assert!(!gateway.retries(s(500)), "500 is not a gateway error");
        let connect = policy(&[RetryOn::ConnectFailure], 20, 3);
        assert!(connect.retries(Failure::Connect));
        assert!(!connect.retries(Failure::Reset) && !connect.retries(s(502)));
        let any = policy(&[RetryOn::Status5xx], 20, 3);
        assert!(any.retries(s(500)) && any.retries(Failure::Reset));
        let reset = policy(&[RetryOn::Reset], 20, 3);
        assert!(reset.retries(Failure::Refused) && !reset.retries(Failure::Connect));
    }

    #[test]
    fn the_budget_bounds_retries_under_way() {
        let p = policy(&[RetryOn::Status5xx], 20, 0);
        assert!(p.admit(4).is_none(), "20% of 4 in flight is no retry");
        let permits: Vec<_> = (0..2).filter_map(|_| p.admit(10)).collect();
        assert_eq!(permits.len(), 2, "20% of 10 in flight: two");
        assert!(p.admit(10).is_none(), "a third is over the budget");
        drop(permits);
        assert!(
            p.admit(10).is_some(),
            "finished retries give their place back"
        );
        let floor = policy(&[RetryOn::Status5xx], 20, 3);
        let permits: Vec<_> = (0..5).filter_map(|_| floor.admit(1)).collect();
        assert_eq!(permits.len(), 3, "min_retries holds at low load");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = Retries::new(
            Some(&RetryConfig {
                backoff: Duration::from_millis(100),
                ..RetryConfig::default()
            }),
            2,
        );
        for retry in 1..8 {
            let wait = p.backoff(retry);
            let cap = Duration::from_millis(100 * (1 << (retry - 1)).min(10));
            assert!(wait <= cap, "retry {retry}: {wait:?} over {cap:?}");
        }
    }
}
