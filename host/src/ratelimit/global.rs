//! Global limits (`store: redis`): the bucket is in Redis, shared by every instance;
//! this instance keeps, per key, what it may decide without asking — a *lease* of up
//! to `local_budget` tokens Redis granted, and the time until which Redis said the
//! bucket is empty.
//!
//! Accuracy: every token an instance spends was taken from the Redis bucket first, so
//! the instances together never admit more than `rate × t / per + burst`. They may
//! admit less: tokens leased and not spent before the lease expires (at most
//! `local_budget` per instance and key, once per lease lifetime) are lost to the
//! bucket. `local_budget: 1` makes every request ask Redis and loses nothing.
//!
//! A check with nothing leased and no denial known is answered later: the request is
//! paused until Redis answers or `redis.timeout` passes, and then `on_store_error`
//! decides (counted in `portcullis_ratelimit_store_errors_total`).

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use dashmap::DashMap;

use super::limiter::PreHashed;
use super::redis::{Grant, RedisStore, StoreError};
use super::wire::{self, OnStoreError, Query};
use super::{DEFAULT_MAX_KEYS, Params, RateLimits, Verdict};
use crate::config::RedisConfig;
use crate::wasm::foreign::Answer;

/// Bounds of a lease's lifetime: tokens not spent by then are given up. Within them a
/// lease lasts [`LEASE_INTERVALS`] refill intervals per token: long enough that a busy
/// instance spends it (giving up tokens only loses admissions), short enough that an
/// instance going quiet does not sit on them for long.
const LEASE_TTL: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
const LEASE_INTERVALS: u64 = 8;

/// Client keys longer than this are hashed (SHA-256) into the Redis key.
const RAW_KEY_MAX: usize = 64;

/// What this instance knows about one global bucket.
#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    /// Tokens granted by Redis and not yet spent.
    tokens: u32,
    /// When the unspent tokens are given up (ns on the limiters' clock).
    expires: u64,
    /// Until when Redis said the bucket cannot serve a request (ns).
    denied_until: u64,
    /// What Redis said of the bucket at the last grant, for the headers.
    remaining: u32,
    reset_at: u64,
}

/// The global limits of the process: the Redis store (from the live configuration's
/// `redis:` block) and the leases.
#[derive(Default)]
pub struct Globals {
    store: ArcSwapOption<RedisStore>,
    leases: DashMap<u64, Lease, PreHashed>,
}

impl Globals {
    /// Connects to the `redis:` of a configuration going live (keeping the
    /// connections when it did not change), or closes them when it is gone.
    pub fn configure(&self, config: Option<&RedisConfig>) {
        let current = self.store.load();
        let same = match (current.as_deref(), config) {
            (Some(s), Some(c)) => {
                s.config().url == c.url
                    && s.config().timeout == c.timeout
                    && s.config().pool == c.pool
                    && s.config().name == c.name
            }
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        let next = config.and_then(|c| match RedisStore::start(c) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!("redis: {e}; global rate limits use on_store_error");
                None
            }
        });
        self.store.store(next);
    }

    /// The store of the live `redis:` block, if there is one.
    pub fn store(&self) -> Option<Arc<RedisStore>> {
        self.store.load_full()
    }
}

impl RateLimits {
    /// The store of the live `redis:` block, if there is one (for `/status`).
    pub fn redis(&self) -> Option<Arc<RedisStore>> {
        self.globals.store()
    }

    /// Connects global limits to `redis` (see [`Globals::configure`]).
    pub fn set_redis(&self, redis: Option<&RedisConfig>) {
        self.globals.configure(redis);
    }

    /// A check of a global limit: decided now from the lease or a known denial, or
    /// later by Redis.
    pub(super) fn answer_global(&self, filter: &str, q: &Query<'_>, g: wire::Global) -> Answer {
        let now = self.now();
        let p = q.params;
        let id = self.lease_id(filter, p, q.key);
        if let Some(mut lease) = self.globals.leases.get_mut(&id) {
            if lease.tokens >= q.cost && now < lease.expires {
                lease.tokens -= q.cost;
                let v = Verdict {
                    allowed: true,
                    limit: p.burst,
                    remaining: lease.remaining.saturating_add(lease.tokens),
                    reset_ns: lease.reset_at.saturating_sub(now),
                    retry_after_ns: 0,
                };
                return Answer::Now(wire::encode_verdict(&v));
            }
            if now < lease.denied_until {
                let wait = lease.denied_until - now;
                let v = Verdict {
                    allowed: false,
                    limit: p.burst,
                    remaining: 0,
                    reset_ns: lease.reset_at.saturating_sub(now).max(wait),
                    retry_after_ns: wait,
                };
                return Answer::Now(wire::encode_verdict(&v));
            }
        }
        let store = self.globals.store.load_full().filter(|s| s.is_up());
        let (Some(store), Some(this)) = (store, self.me.upgrade()) else {
            // Nothing to wait for: decide now.
            let v = self.store_failed(filter, q, g.on_store_error, &StoreError::Down);
            return Answer::Now(wire::encode_verdict(&v));
        };
        let interval_ns = (p.per_ns / u64::from(p.rate.max(1))).max(1);
        let interval_us = interval_ns.div_ceil(1000).max(1);
        let tau_us = interval_us.saturating_mul(u64::from(p.burst));
        let want = g.local_budget.max(q.cost);
        let ttl = Duration::from_nanos(
            interval_ns
                .saturating_mul(u64::from(want))
                .saturating_mul(LEASE_INTERVALS),
        )
        .clamp(LEASE_TTL.0, LEASE_TTL.1);
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        let asked = store.take(
            redis_key(filter, p, q.key),
            interval_us,
            tau_us,
            want,
            q.cost,
        );
        let (filter, key, cost, params) = (filter.to_string(), q.key.to_vec(), q.cost, p);
        Answer::Later(Box::pin(async move {
            let v = match asked.await {
                Ok(grant) => this.granted(id, params, cost, &grant, ttl),
                Err(e) => {
                    let q = Query {
                        params,
                        cost,
                        key: &key,
                        global: Some(g),
                    };
                    this.store_failed(&filter, &q, g.on_store_error, &e)
                }
            };
            wire::encode_verdict(&v)
        }))
    }

    /// Records what Redis granted and decides the request that asked.
    fn granted(&self, id: u64, p: Params, cost: u32, grant: &Grant, ttl: u64) -> Verdict {
        let now = self.now();
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if self.globals.leases.len() >= DEFAULT_MAX_KEYS {
            self.globals
                .leases
                .retain(|_, l| now < l.expires.max(l.denied_until));
        }
        let mut lease = self.globals.leases.entry(id).or_default();
        lease.remaining = grant.remaining;
        lease.reset_at = now.saturating_add(ns(grant.reset));
        if grant.granted >= cost {
            // Tokens another check leased meanwhile are kept too.
            let spare = grant.granted - cost;
            if now >= lease.expires {
                lease.tokens = 0;
            }
            lease.tokens = lease.tokens.saturating_add(spare);
            lease.expires = now.saturating_add(ttl);
            lease.denied_until = 0;
            Verdict {
                allowed: true,
                limit: p.burst,
                remaining: grant.remaining.saturating_add(lease.tokens),
                reset_ns: ns(grant.reset),
                retry_after_ns: 0,
            }
        } else {
            lease.denied_until = now.saturating_add(ns(grant.retry_after));
            Verdict {
                allowed: false,
                limit: p.burst,
                remaining: grant.remaining,
                reset_ns: ns(grant.reset),
                retry_after_ns: ns(grant.retry_after),
            }
        }
    }

    /// The verdict of `on_store_error` when Redis failed, counted and logged.
    fn store_failed(
        &self,
        filter: &str,
        q: &Query<'_>,
        policy: OnStoreError,
        e: &StoreError,
    ) -> Verdict {
        crate::metrics::global().store_error(filter, policy.name());
        tracing::debug!(filter, policy = policy.name(), "rate-limit store: {e}");
        let p = q.params;
        match policy {
            OnStoreError::Allow => Verdict {
                allowed: true,
                limit: p.burst,
                remaining: 0,
                reset_ns: 0,
                retry_after_ns: 0,
            },
            OnStoreError::Deny => Verdict {
                allowed: false,
                limit: p.burst,
                remaining: 0,
                reset_ns: 1_000_000_000,
                retry_after_ns: 1_000_000_000,
            },
            OnStoreError::Local => self.check(filter, p, q.key, q.cost),
        }
    }

    /// The lease of `key` in the global limiter of `filter` + `p`.
    fn lease_id(&self, filter: &str, p: Params, key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        filter.hash(&mut h);
        (p.rate, p.per_ns, p.burst).hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }
}

/// The Redis key of a bucket: readable for operators, the same on every instance.
fn redis_key(filter: &str, p: Params, key: &[u8]) -> Vec<u8> {
    let mut k = format!(
        "portcullis:rl:{filter}:{}/{}/{}:",
        p.rate, p.per_ns, p.burst
    )
    .into_bytes();
    if key.len() <= RAW_KEY_MAX {
        k.extend_from_slice(key);
    } else {
        use sha2::Digest;
        k.extend_from_slice(b"sha256:");
        k.extend_from_slice(hex::encode(sha2::Sha256::digest(key)).as_bytes());
    }
    k
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn redis_keys_are_readable_and_bounded() {
        let p = Params {
            rate: 200,
            per_ns: 1_000_000_000,
            burst: 20,
            max_keys: 0,
        };
        assert_eq!(
            redis_key("limit", p, b"1.2.3.4"),
            b"portcullis:rl:limit:200/1000000000/20:1.2.3.4"
        );
        let long = redis_key("limit", p, &[b'x'; 500]);
        assert!(long.len() < 120, "{}", long.len());
    }
}
