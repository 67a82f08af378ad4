//! The host side of the `rate-limit` filter: token buckets shared by every worker and
//! kept across reloads, reached by guests through the foreign function
//! [`FOREIGN_NAME`].
//!
//! Each limiter is identified by the calling filter's name and its (`rate`, `per`,
//! `burst`): a reload that leaves those unchanged finds the same buckets, one that
//! changes them starts afresh. Buckets are GCRA cells (one `u64` each) in a sharded
//! map keyed by a keyed hash of the client key; see [`limiter`] for the bounds on
//! memory.

mod filter_calls;
mod global;
pub mod limiter;
pub mod redis;
pub mod wire;

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub use limiter::{Limiter, Params, Verdict};
pub use wire::{Query, WireError};

/// The name guests call (`proxy_call_foreign_function`).
pub const FOREIGN_NAME: &str = "portcullis.rate_limit";

/// Keys tracked per limiter when the filter does not say (`max_keys`).
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// A limiter unused this long is dropped (its filter was reconfigured or removed).
const STALE_AFTER: Duration = Duration::from_secs(600);

/// Limiters each thread keeps at hand (a worker rarely sees more than a few).
const LOCAL_CAPACITY: usize = 32;

type LocalCache = Vec<(u64, Arc<Limiter>)>;

thread_local! {
    /// (set uid, limiter) of the limiters this thread used last.
    static LOCAL: std::cell::RefCell<LocalCache> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Every limiter of the process.
pub struct RateLimits {
    uid: u64,
    epoch: Instant,
    /// Seeded per process: clients cannot aim their keys at one map shard.
    hasher: foldhash::fast::RandomState,
    limiters: DashMap<u64, Arc<Limiter>, limiter::PreHashed>,
    /// Two limiter ids with the same 64-bit hash: never expected, but kept exact.
    collided: Mutex<Vec<Arc<Limiter>>>,
    /// Limits kept in Redis (`store: redis`).
    globals: global::Globals,
    /// This set, for the answers that come later (empty unless made by
    /// [`RateLimits::new_shared`]: such a set decides global checks by
    /// `on_store_error`).
    me: Weak<RateLimits>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimits {
    /// An empty set of limiters.
    pub fn new() -> Self {
        static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            uid: NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            epoch: Instant::now(),
            hasher: foldhash::fast::RandomState::default(),
            limiters: DashMap::with_hasher(limiter::PreHashed::default()),
            collided: Mutex::new(Vec::new()),
            globals: global::Globals::default(),
            me: Weak::new(),
        }
    }

    /// An empty set that can answer global checks later (it hands its answers a
    /// reference to itself).
    pub fn new_shared() -> Arc<RateLimits> {
        Arc::new_cyclic(|me| RateLimits {
            me: me.clone(),
            ..RateLimits::new()
        })
    }

    /// The process-wide instance: the buckets outlive every Snapshot.
    pub fn shared() -> Arc<RateLimits> {
        static SHARED: OnceLock<Arc<RateLimits>> = OnceLock::new();
        SHARED.get_or_init(RateLimits::new_shared).clone()
    }

    /// Nanoseconds since this set was created: the limiters' clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Takes `cost` tokens from `key`'s bucket in the limiter of `filter` + `params`.
    pub fn check(&self, filter: &str, params: Params, key: &[u8], cost: u32) -> Verdict {
        self.check_at(filter, params, key, cost, self.now())
    }

    /// [`Self::check`] at a given time (ns on this set's clock), for tests.
    pub fn check_at(
        &self,
        filter: &str,
        params: Params,
        key: &[u8],
        cost: u32,
        now: u64,
    ) -> Verdict {
        let key = self.hash_key(key);
        // The hot path: this thread's cache, so workers do not bounce the registry's
        // shard lock or the limiter's reference count between their caches.
        let cached = LOCAL.with(|cache| {
            let cache = cache.try_borrow().ok()?;
            let (_, l) = cache
                .iter()
                .find(|(set, l)| *set == self.uid && l.is(filter, params))?;
            if l.is_retired() {
                return None;
            }
            l.touch(now);
            Some(l.check(key, cost, now))
        });
        if let Some(v) = cached {
            return v;
        }
        let id = self.limiter_id(filter, params);
        let limiter = self.limiter(id, filter, params, now);
        LOCAL.with(|cache| {
            if let Ok(mut cache) = cache.try_borrow_mut() {
                cache.retain(|(_, l)| !l.is_retired());
                if cache.len() >= LOCAL_CAPACITY {
                    cache.remove(0);
                }
                cache.push((self.uid, limiter.clone()));
            }
        });
        limiter.check(key, cost, now)
    }

    /// Decodes a guest's query, checks it, and encodes the verdict.
    pub fn call(&self, filter: &str, args: &[u8]) -> Result<Vec<u8>, WireError> {
        let q = Query::decode(args)?;
        let verdict = self.check(filter, q.params, q.key, q.cost);
        Ok(wire::encode_verdict(&verdict))
    }

    /// How many limiters exist (for tests and metrics).
    pub fn limiter_count(&self) -> usize {
        self.limiters.len()
    }

    fn hash_key(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The registry key of a limiter: filter name, rate, period and burst (not
    /// `max_keys`, which a reload may change without losing the buckets).
    fn limiter_id(&self, filter: &str, params: Params) -> u64 {
        let mut h = self.hasher.build_hasher();
        filter.hash(&mut h);
        (params.rate, params.per_ns, params.burst).hash(&mut h);
        h.finish()
    }

    fn limiter(&self, id: u64, filter: &str, params: Params, now: u64) -> Arc<Limiter> {
        if let Some(l) = self.limiters.get(&id) {
            if l.is(filter, params) {
                l.touch(now);
                return l.clone();
            }
            return self.collided_limiter(filter, params, now);
        }
        self.drop_stale(now);
        self.limiters
            .entry(id)
            .or_insert_with(|| Arc::new(Limiter::new(filter, params, now)))
            .clone()
    }

    fn collided_limiter(&self, filter: &str, params: Params, now: u64) -> Arc<Limiter> {
        let mut list = self.collided.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = list.iter().find(|l| l.is(filter, params)) {
            l.touch(now);
            return l.clone();
        }
        let l = Arc::new(Limiter::new(filter, params, now));
        list.push(l.clone());
        l
    }

    fn drop_stale(&self, now: u64) {
        let stale = u64::try_from(STALE_AFTER.as_nanos()).unwrap_or(u64::MAX);
        self.limiters.retain(|_, l| {
            let keep = now.saturating_sub(l.last_used()) < stale;
            if !keep {
                l.retire();
            }
            keep
        });
    }
}

impl crate::wasm::ForeignFunction for RateLimits {
    fn call(&self, filter: &str, args: &[u8]) -> Result<Vec<u8>, crate::wasm::ForeignError> {
        RateLimits::call(self, filter, args)
            .map_err(|e| crate::wasm::ForeignError::BadArgument(e.to_string()))
    }

    fn answer(
        &self,
        filter: &str,
        args: &[u8],
    ) -> Result<crate::wasm::foreign::Answer, crate::wasm::ForeignError> {
        let q = Query::decode(args)
            .map_err(|e| crate::wasm::ForeignError::BadArgument(e.to_string()))?;
        Ok(match q.global {
            None => {
                let v = self.check(filter, q.params, q.key, q.cost);
                crate::wasm::foreign::Answer::Now(wire::encode_verdict(&v))
            }
            Some(g) => self.answer_global(filter, &q, g),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn params(rate: u32, per_s: u64, burst: u32) -> Params {
        Params {
            rate,
            per_ns: per_s * SEC,
            burst,
            max_keys: 0,
        }
    }

    #[test]
    fn limiters_are_per_filter_and_parameters() {
        let rl = RateLimits::new();
        let p = params(1, 1, 1);
        assert!(rl.check_at("a", p, b"k", 1, SEC).allowed);
        assert!(!rl.check_at("a", p, b"k", 1, SEC).allowed, "same bucket");
        assert!(rl.check_at("b", p, b"k", 1, SEC).allowed, "another filter");
        assert!(
            rl.check_at("a", params(2, 1, 1), b"k", 1, SEC).allowed,
            "new parameters"
        );
        assert!(rl.check_at("a", p, b"other", 1, SEC).allowed, "another key");
        assert_eq!(rl.limiter_count(), 3);
    }

    #[test]
    fn stale_limiters_go() {
        let rl = RateLimits::new();
        rl.check_at("a", params(1, 1, 1), b"k", 1, SEC);
        rl.check_at("b", params(1, 1, 1), b"k", 1, 700 * SEC);
        assert_eq!(rl.limiter_count(), 1, "a was unused for 699 s");
        // This thread's cache let it go too: a comes back with a fresh bucket.
        assert!(
            rl.check_at("a", params(1, 1, 1), b"k", 1, 700 * SEC)
                .allowed
        );
        assert!(
            !rl.check_at("a", params(1, 1, 1), b"k", 1, 700 * SEC)
                .allowed
        );
        assert_eq!(rl.limiter_count(), 2);
    }

    #[test]
    fn threads_share_buckets() {
        let rl = Arc::new(RateLimits::new());
        let p = params(1, 3600, 100);
        let admitted: usize = (0..4)
            .map(|_| {
                let rl = rl.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|_| rl.check("f", p, b"k", 1).allowed)
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap_or(0))
            .sum();
        assert_eq!(admitted, 100, "one bucket of 100 across 4 threads");
    }

    #[test]
    fn call_round_trips_the_wire_format() {
        let rl = RateLimits::new();
        let mut q = vec![1u8];
        q.extend_from_slice(&10u32.to_le_bytes());
        q.extend_from_slice(&SEC.to_le_bytes());
        q.extend_from_slice(&3u32.to_le_bytes());
        q.extend_from_slice(&1u32.to_le_bytes());
        q.extend_from_slice(&0u32.to_le_bytes());
        q.extend_from_slice(b"1.2.3.4");
        let reply = rl.call("f", &q).unwrap();
        assert_eq!(reply.len(), 26);
        assert_eq!(reply[0..2], [1, 1], "version 1, allowed");
        assert_eq!(reply[2..6], 3u32.to_le_bytes(), "limit = burst");
        assert_eq!(reply[6..10], 2u32.to_le_bytes(), "remaining");
        assert!(rl.call("f", &q[..10]).is_err());
    }
}
