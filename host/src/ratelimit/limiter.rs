//! One limiter: a GCRA cell per client key, in a sharded map bounded in size.
//!
//! GCRA keeps one number per key, the theoretical arrival time (TAT): the instant the
//! bucket would be full again. With emission interval `T = per / rate` and tolerance
//! `tau = burst × T`, a request costing `n` is admitted when
//! `max(TAT, now) + n·T − tau ≤ now`, which is exactly a token bucket of capacity
//! `burst` refilled at `rate / per`. A cell whose TAT is in the past is a full bucket:
//! forgetting it changes nothing, which is how idle keys are evicted for free.
//!
//! Memory is bounded by `max_keys`: when an insert crosses it, idle cells are dropped,
//! and if the map is still above 90% of the bound (every key active — a spray of
//! sources), the cells closest to full are dropped too, down to 90%.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use super::DEFAULT_MAX_KEYS;

/// A limiter's parameters, as the filter configured them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Params {
    /// Tokens per period.
    pub rate: u32,
    /// The period, in nanoseconds.
    pub per_ns: u64,
    /// Bucket capacity.
    pub burst: u32,
    /// Most keys tracked (0: [`DEFAULT_MAX_KEYS`]). Not part of the identity.
    pub max_keys: u32,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The bucket's capacity.
    pub limit: u32,
    /// Whole tokens left.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_ns: u64,
    /// When denied: until the request would be admitted.
    pub retry_after_ns: u64,
}

/// Keys are already keyed hashes: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed with this; keep a sane fallback anyway.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The map hasher for pre-hashed `u64` keys.
pub type PreHashed = BuildHasherDefault<IdentityHasher>;

/// One limiter (one filter name + parameters).
pub struct Limiter {
    filter: Box<str>,
    params: Params,
    interval: u64,
    tau: u64,
    max_keys: usize,
    cells: DashMap<u64, AtomicU64, PreHashed>,
    len: AtomicUsize,
    sweeping: Mutex<()>,
    last_used: AtomicU64,
    retired: AtomicBool,
}

impl Limiter {
    /// A limiter with no keys yet.
    pub fn new(filter: &str, params: Params, now: u64) -> Self {
        let interval = (params.per_ns / u64::from(params.rate.max(1))).max(1);
        let max_keys = match params.max_keys {
            0 => DEFAULT_MAX_KEYS,
            n => n as usize,
        };
        Self {
            filter: filter.into(),
            params,
            interval,
            tau: interval.saturating_mul(u64::from(params.burst)),
            max_keys,
            cells: DashMap::with_hasher(PreHashed::default()),
            len: AtomicUsize::new(0),
            sweeping: Mutex::new(()),
            last_used: AtomicU64::new(now),
            retired: AtomicBool::new(false),
        }
    }

    /// Whether this is the limiter of `filter` with `params` (`max_keys` aside).
    pub fn is(&self, filter: &str, params: Params) -> bool {
        let p = self.params;
        &*self.filter == filter
            && (p.rate, p.per_ns, p.burst) == (params.rate, params.per_ns, params.burst)
    }

    /// Records a use, at most one store per second.
    pub fn touch(&self, now: u64) {
        if now.saturating_sub(self.last_used.load(Ordering::Relaxed)) > 1_000_000_000 {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    /// Marks this limiter as dropped from the registry: threads' caches let it go.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether [`Self::retire`] was called.
    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// When this limiter was last used.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Takes `cost` tokens from the bucket of `key` (a keyed hash) at `now`.
    pub fn check(&self, key: u64, cost: u32, now: u64) -> Verdict {
        loop {
            if let Some(cell) = self.cells.get(&key) {
                let tat = cell.load(Ordering::Acquire);
                let (verdict, new_tat) = self.decide(tat, cost, now);
                if !verdict.allowed
                    || cell
                        .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    return verdict;
                }
                continue;
            }
            let (verdict, new_tat) = self.decide(0, cost, now);
            let mut inserted = false;
            self.cells.entry(key).or_insert_with(|| {
                inserted = true;
                AtomicU64::new(if verdict.allowed { new_tat } else { 0 })
            });
            if inserted {
                if self.len.fetch_add(1, Ordering::Relaxed) + 1 > self.max_keys {
                    self.sweep(now);
                }
                return verdict;
            }
            // Another worker inserted it first: go through the CAS path.
        }
    }

    /// The GCRA decision for a cell holding `tat`, and the TAT to store if admitted.
    fn decide(&self, tat: u64, cost: u32, now: u64) -> (Verdict, u64) {
        let tat = tat.max(now);
        let new_tat = tat.saturating_add(self.interval.saturating_mul(u64::from(cost)));
        let allow_at = new_tat.saturating_sub(self.tau);
        let remaining_after =
            |t: u64| (now.saturating_add(self.tau).saturating_sub(t)) / self.interval;
        let limit = self.params.burst;
        if allow_at > now {
            let v = Verdict {
                allowed: false,
                limit,
                remaining: clamp(remaining_after(tat)),
                reset_ns: tat - now,
                retry_after_ns: allow_at - now,
            };
            (v, tat)
        } else {
            let v = Verdict {
                allowed: true,
                limit,
                remaining: clamp(remaining_after(new_tat)),
                reset_ns: new_tat - now,
                retry_after_ns: 0,
            };
            (v, new_tat)
        }
    }

    /// Drops full (idle) buckets; if that is not enough, the fullest active ones.
    fn sweep(&self, now: u64) {
        let _guard = match self.sweeping.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return, // another worker sweeps
        };
        self.cells
            .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
        let target = self.max_keys / 10 * 9;
        if self.cells.len() > target {
            let mut tats: Vec<u64> = self
                .cells
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect();
            let excess = tats.len().saturating_sub(target);
            if excess > 0 {
                let (_, cutoff, _) = tats.select_nth_unstable(excess - 1);
                let cutoff = *cutoff;
                self.cells
                    .retain(|_, tat| tat.load(Ordering::Relaxed) > cutoff);
            }
        }
        self.len.store(self.cells.len(), Ordering::Relaxed);
    }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn limiter(rate: u32, per_s: u64, burst: u32, max_keys: u32) -> Limiter {
        Limiter::new(
            "f",
            Params {
                rate,
                per_ns: per_s * SEC,
                burst,
                max_keys,
            },
            0,
        )
    }

    #[test]
    fn burst_then_rate() {
        let l = limiter(10, 1, 5, 0);
        let t = SEC;
        for i in 0..5 {
            let v = l.check(1, 1, t);
            assert!(v.allowed, "request {i} of the burst");
            assert_eq!(v.remaining, 4 - i);
        }
        let v = l.check(1, 1, t);
        assert!(!v.allowed, "the sixth at once is over the burst");
        assert_eq!(v.retry_after_ns, 100 * MS);
        assert_eq!(v.reset_ns, 500 * MS);
        assert!(!l.check(1, 1, t + 99 * MS).allowed);
        assert!(
            l.check(1, 1, t + 100 * MS).allowed,
            "one token back after 1/rate"
        );
        assert!(l.check(2, 1, t).allowed, "keys are independent");
    }

    #[test]
    fn admitted_never_exceeds_rate_times_time_plus_burst() {
        let l = limiter(100, 1, 20, 0);
        let mut admitted = 0u64;
        // 1000 req/s offered for 5 s, one every ms.
        for i in 0..5000u64 {
            if l.check(7, 1, SEC + i * MS).allowed {
                admitted += 1;
            }
        }
        let bound = 100 * 5 + 20;
        assert!(
            admitted <= bound && admitted >= bound - 2,
            "admitted {admitted}, bound {bound}"
        );
    }

    #[test]
    fn idle_keys_are_evicted_and_memory_is_bounded() {
        let l = limiter(1, 1, 1, 1000);
        for k in 0..1000u64 {
            assert!(l.check(k, 1, SEC).allowed);
        }
        assert_eq!(l.len(), 1000);
        // Two seconds later every bucket is full again: one more key sweeps them all.
        l.check(5000, 1, 3 * SEC);
        assert_eq!(l.len(), 1, "idle keys evicted");
        // A spray of active keys: never more than max_keys.
        for k in 10_000..15_000u64 {
            l.check(k, 1, 3 * SEC + k);
            assert!(l.len() <= 1000, "{} keys tracked", l.len());
        }
        assert!(
            !l.check(14_999, 1, 3 * SEC + 15_000).allowed,
            "the newest keys are kept"
        );
    }

    #[test]
    fn concurrent_checks_admit_exactly_the_burst() {
        let l = std::sync::Arc::new(limiter(1, 3600, 1000, 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.check(9, 1, SEC).allowed).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(total, 1000);
    }
}
