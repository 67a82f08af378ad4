//! The breaker that bounds what a spinning filter costs its worker.
//!
//! Guest calls are synchronous, so a callback that runs to its deadline stalls every
//! other request of its worker for that long. One miss is forgiven (the VM is
//! re-created, as after any failure). A miss soon after another suspends the filter on
//! this worker: its requests fail at once (its `on_error` applies) for a back-off that
//! doubles on each further trip, from [`FIRST`] up to [`LONGEST`]; the fresh VM after a
//! suspension is on probation (a miss soon after it trips again), and a quiet spell of
//! [`QUIET`] forgives the history. A filter that spins on every request thus costs its
//! worker at most one deadline per back-off.

use std::time::{Duration, Instant};

/// The first suspension.
pub(crate) const FIRST: Duration = Duration::from_secs(1);
/// Suspensions double up to this.
pub(crate) const LONGEST: Duration = Duration::from_secs(60);
/// A second miss within this long of the last one trips the breaker.
const RECENT: Duration = Duration::from_secs(10);
/// After this long without a miss, the next suspension is [`FIRST`] again.
const QUIET: Duration = Duration::from_secs(120);

/// One filter's deadline history on one worker.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    last_miss: Option<Instant>,
    /// The next suspension's length; [`FIRST`] when unset.
    next: Option<Duration>,
    open_until: Option<Instant>,
}

impl Breaker {
    /// Records a deadline miss at `now`; returns the suspension it starts, if any.
    pub fn missed(&mut self, now: Instant) -> Option<Duration> {
        // A suspension's end counts as a miss: the fresh VM after it is on probation.
        let last = self.last_miss.max(self.open_until);
        let since = last.map(|t| now.saturating_duration_since(t));
        self.last_miss = Some(now);
        if since.is_none_or(|d| d >= QUIET) {
            self.next = None;
        }
        if since.is_none_or(|d| d >= RECENT) {
            return None;
        }
        let length = self.next.unwrap_or(FIRST);
        self.next = Some(length.saturating_mul(2).min(LONGEST));
        self.open_until = Some(now + length);
        Some(length)
    }

    /// How much longer the filter stays suspended, if it is.
    pub fn suspended(&self, now: Instant) -> Option<Duration> {
        self.open_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_miss_is_forgiven_and_repeated_misses_back_off_doubling_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert_eq!(b.missed(t0), None, "a first miss suspends nothing");
        assert_eq!(b.suspended(t0), None);
        // A filter that spins on every request: it misses as soon as it runs again.
        let mut at = t0;
        let mut lengths = Vec::new();
        for _ in 0..9 {
            at += b.suspended(at).unwrap_or(Duration::from_millis(10));
            let len = b
                .missed(at)
                .unwrap_or_else(|| panic!("repeat miss at {at:?} forgiven"));
            assert_eq!(b.suspended(at), Some(len));
            assert_eq!(
                b.suspended(at + len),
                None,
                "still suspended after its back-off"
            );
            lengths.push(len.as_secs());
        }
        assert_eq!(lengths, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn misses_far_apart_never_suspend_and_a_quiet_spell_resets_the_back_off() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for i in 0..5 {
            assert_eq!(b.missed(t0 + RECENT * (i + 1)), None);
        }
        let t1 = t0 + RECENT * 6;
        b.missed(t1);
        assert_eq!(b.missed(t1), Some(FIRST));
        assert_eq!(b.missed(t1 + FIRST), Some(FIRST * 2));
        // Quiet from the end of the last suspension (2 s from t1 + 1 s).
        let later = t1 + FIRST * 3 + QUIET;
        assert_eq!(
            b.missed(later),
            None,
            "a miss after a quiet spell is a first miss"
        );
        assert_eq!(b.missed(later), Some(FIRST), "the back-off starts over");
    }
}
