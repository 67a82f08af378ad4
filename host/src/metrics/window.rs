//! Recent activity for the dashboard: a ring of per-second slots covering the last
//! five minutes, each with a request count, an error count and a latency histogram.
//! One ring per route (kept beside the route's Prometheus histogram, so counting it
//! costs no extra lookup) and one per filter (held by the filter's `Plugin`).
//!
//! Recording is a few relaxed atomics on the slot of the current second; reading sums
//! the slots still inside the asked span, so rates and quantiles need no background
//! task. When the ring comes round to a slot, the first writer of the new second
//! claims and clears it: a count another worker adds between that claim and the
//! clearing is lost, which at most loses a request or two per slot — a dashboard can
//! afford that, the request path cannot afford a lock.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How many seconds a ring covers.
pub const SPAN_SECS: u64 = 300;

/// Latency buckets: under 64 µs, then two per power of two (each about √2 wide) up to
/// 2^24 µs (16.8 s), the last open-ended.
const BUCKETS: usize = 38;

/// Seconds are counted from here; 0 marks a slot never used.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

thread_local! {
    /// The end of the last request this thread counted, in any window.
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// When the last request this thread counted ended: "now" to within a request, for a
/// caller that did not read the clock itself (a filter chain it did not time).
pub fn last_instant() -> Option<Instant> {
    LAST.with(Cell::get)
}

/// The ring's second of `at`, from 1.
fn second_of(at: Instant) -> u64 {
    at.saturating_duration_since(*EPOCH).as_secs() + 1
}

/// One route's or filter's requests of the last [`SPAN_SECS`] seconds.
pub struct Window {
    slots: Box<[Slot]>,
}

struct Slot {
    /// The second this slot counts (see [`second_of`]).
    second: AtomicU64,
    requests: AtomicU32,
    errors: AtomicU32,
    latency: [AtomicU32; BUCKETS],
}

/// What a [`Window`] saw over a span: counts and latency quantiles.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Requests finished within the span.
    pub requests: u64,
    /// Of which errors (a 5xx for a route; a trap, deadline or memory failure for a
    /// filter).
    pub errors: u64,
    /// Median latency, in milliseconds (0 without requests).
    pub p50_ms: f64,
    /// 99th percentile latency, in milliseconds (0 without requests).
    pub p99_ms: f64,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            second: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            errors: AtomicU32::new(0),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

impl Default for Window {
    fn default() -> Self {
        let _ = *EPOCH;
        Self {
            slots: (0..SPAN_SECS).map(|_| Slot::default()).collect(),
        }
    }
}

// === impl Window ===

impl Window {
    /// Counts one request that ended at `at`, after `latency` when it was timed (the
    /// quantiles come from the timed ones).
    #[inline]
    pub fn record(&self, at: Instant, latency: Option<Duration>, error: bool) {
        LAST.with(|last| last.set(Some(at)));
        let second = second_of(at);
        let Some(slot) = self.slot_for(second) else {
            return;
        };
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            let micros = latency
                .as_secs()
                .saturating_mul(1_000_000)
                .saturating_add(u64::from(latency.subsec_micros()));
            slot.latency[bucket(micros)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The slot counting `second`, claimed (and cleared) if it still counts an older
    /// one; `None` if the ring has already moved past `second`.
    fn slot_for(&self, second: u64) -> Option<&Slot> {
        let slot = &self.slots[(second % SPAN_SECS) as usize];
        let seen = slot.second.load(Ordering::Acquire);
        if seen == second {
            return Some(slot);
        }
        if seen > second {
            return None;
        }
        if slot
            .second
            .compare_exchange(seen, second, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for b in &slot.latency {
                b.store(0, Ordering::Relaxed);
            }
        }
        Some(slot)
    }

    /// The slots counting the `secs` seconds up to and including `now`'s.
    fn recent(&self, now: Instant, secs: u64) -> impl Iterator<Item = &Slot> {
        let last = second_of(now);
        let first = last.saturating_sub(secs.min(SPAN_SECS)) + 1;
        self.slots.iter().filter(move |s| {
            let second = s.second.load(Ordering::Acquire);
            second >= first && second <= last
        })
    }

    /// Requests, errors and latency quantiles over the `secs` seconds up to `now`.
    pub fn summary(&self, now: Instant, secs: u64) -> Summary {
        let mut sum = Summary::default();
        let mut hist = [0u64; BUCKETS];
        for slot in self.recent(now, secs) {
            sum.requests += u64::from(slot.requests.load(Ordering::Relaxed));
            sum.errors += u64::from(slot.errors.load(Ordering::Relaxed));
            for (h, b) in hist.iter_mut().zip(&slot.latency) {
                *h += u64::from(b.load(Ordering::Relaxed));
            }
        }
        sum.p50_ms = quantile(&hist, 0.50);
        sum.p99_ms = quantile(&hist, 0.99);
        sum
    }

    /// Requests per second in each of `points` consecutive steps of `step` seconds,
    /// the oldest first, the last ending with `now`'s second: a sparkline's data.
    pub fn rates(&self, now: Instant, step: u64, points: u64) -> Vec<f64> {
        let step = step.max(1);
        let last = second_of(now);
        let mut counts = vec![0u64; points as usize];
        for slot in self.recent(now, step * points) {
            let age = last - slot.second.load(Ordering::Acquire).min(last);
            if let Some(point) = (points - 1).checked_sub(age / step) {
                counts[point as usize] += u64::from(slot.requests.load(Ordering::Relaxed));
            }
        }
        counts.iter().map(|&c| c as f64 / step as f64).collect()
    }
}

/// The bucket of a latency of `micros`.
fn bucket(micros: u64) -> usize {
    if micros < 64 {
        return 0;
    }
    let power = 63 - micros.leading_zeros() as usize;
    let half = ((micros >> (power - 1)) & 1) as usize;
    ((power - 6) * 2 + half + 1).min(BUCKETS - 1)
}

/// The smallest latency (µs) of bucket `i`.
fn lower_bound(i: usize) -> f64 {
    if i == 0 {
        return 0.0;
    }
    let power = (i - 1) / 2 + 6;
    let half = (i - 1) % 2;
    ((1u64 << power) + half as u64 * (1u64 << (power - 1))) as f64
}

/// The `q` quantile of `hist` in milliseconds, interpolated within its bucket.
fn quantile(hist: &[u64; BUCKETS], q: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in hist.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let low = lower_bound(i);
            // The open-ended last bucket is shown at its lower bound.
            let high = if i + 1 < BUCKETS {
                lower_bound(i + 1)
            } else {
                low
            };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return (low + (high - low) * within) / 1000.0;
        }
        below += n;
    }
    lower_bound(BUCKETS - 1) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_their_latencies() {
        for micros in [
            0,
            63,
            64,
            95,
            96,
            127,
            128,
            1000,
            250_000,
            16_000_000,
            u64::MAX,
        ] {
            let b = bucket(micros);
            assert!(
                lower_bound(b) <= micros as f64,
                "{micros} µs in bucket {b} starting at {}",
                lower_bound(b)
            );
            if b + 1 < BUCKETS {
                assert!(
                    (micros as f64) < lower_bound(b + 1),
                    "{micros} µs should be below bucket {}",
                    b + 1
                );
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn summary_counts_the_span_and_its_quantiles() {
        let w = Window::default();
        let now = Instant::now() + Duration::from_secs(1000);
        for _ in 0..98 {
            w.record(now, Some(Duration::from_millis(2)), false);
        }
        w.record(now, Some(Duration::from_millis(400)), true);
        w.record(now, Some(Duration::from_millis(400)), true);
        let s = w.summary(now, 60);
        assert_eq!((s.requests, s.errors), (100, 2));
        assert!(
            (1.5..=2.9).contains(&s.p50_ms),
            "p50 should be about 2 ms: {s:?}"
        );
        assert!(
            (250.0..=600.0).contains(&s.p99_ms),
            "p99 should be about 400 ms: {s:?}"
        );
    }

    #[test]
    fn old_seconds_leave_the_span_and_the_ring() {
        let w = Window::default();
        let t0 = Instant::now() + Duration::from_secs(1000);
        w.record(t0, Some(Duration::from_millis(1)), false);
        let later = t0 + Duration::from_secs(30);
        w.record(later, Some(Duration::from_millis(1)), false);
        assert_eq!(w.summary(later, 10).requests, 1, "t0 is 30 s back");
        assert_eq!(w.summary(later, 60).requests, 2);
        // A full turn later the slot of t0 counts a new second.
        let turn = t0 + Duration::from_secs(SPAN_SECS);
        w.record(turn, Some(Duration::from_millis(1)), false);
        assert_eq!(w.summary(turn, SPAN_SECS).requests, 2, "t0's count is gone");
        // A request ending in a second the ring has left is not counted.
        w.record(t0, Some(Duration::from_millis(1)), false);
        assert_eq!(w.summary(turn, SPAN_SECS).requests, 2);
    }

    #[test]
    fn untimed_requests_count_but_leave_the_quantiles_alone() {
        let w = Window::default();
        let now = Instant::now() + Duration::from_secs(1000);
        w.record(now, Some(Duration::from_millis(3)), false);
        for _ in 0..9 {
            w.record(now, None, false);
        }
        let s = w.summary(now, 60);
        assert_eq!(s.requests, 10);
        assert!((2.0..=4.0).contains(&s.p99_ms), "{s:?}");
        assert_eq!(last_instant(), Some(now));
    }

    #[test]
    fn rates_place_counts_by_step() {
        let w = Window::default();
        let now = Instant::now() + Duration::from_secs(1000);
        for _ in 0..10 {
            w.record(now, Some(Duration::from_millis(1)), false);
        }
        for _ in 0..20 {
            w.record(
                now - Duration::from_secs(12),
                Some(Duration::from_millis(1)),
                false,
            );
        }
        let rates = w.rates(now, 10, 3);
        assert_eq!(rates, vec![0.0, 2.0, 1.0]);
    }
}
