//! Outlier detection (Envoy's consecutive-5xx ejection): a target whose attempts fail
//! `consecutive_5xx` times in a row — a 5xx answer, or no answer at all — is taken out
//! of rotation for `base_ejection_time`, n times that for its n-th ejection in a row
//! (up to `max_ejection_time`); a good answer after it returns starts the count again.
//! At most `max_ejection_percent` of the targets are out of rotation at once, and at
//! least one may always be, so ejection never empties an upstream that is failing
//! everywhere (the balancer then fails open anyway).
//!
//! An ejection is a passive back-off (`Target::down_until_ms`), so the balancer, the
//! health view of `/status` and the back-off of refused connections all read it the
//! same way.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::retry::Failure;
use super::target::{Target, TargetSet};
use crate::config::OutlierConfig;

/// Records the outcome of an attempt on `target` (`failure`: `None` for a good
/// answer), ejecting it when it has failed too often in a row. Returns whether it was
/// ejected now.
pub fn record(
    config: &OutlierConfig,
    set: &TargetSet,
    target: &Target,
    failure: Option<Failure>,
    now_ms: impl Fn() -> u64,
) -> bool {
    if failure.is_none() {
        // Loads first: a target answering well is never written to.
        if target.failures_in_a_row.load(Ordering::Relaxed) != 0 {
            target.failures_in_a_row.store(0, Ordering::Relaxed);
        }
        if target.ejections.load(Ordering::Relaxed) != 0 {
            target.ejections.store(0, Ordering::Relaxed);
        }
        return false;
    }
    let in_a_row = target.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
    if in_a_row < config.consecutive_5xx {
        return false;
    }
    let now = now_ms();
    let out = set.list.iter().filter(|t| !t.is_available(now)).count();
    let allowed = (set.list.len() * config.max_ejection_percent as usize / 100).max(1);
    if out >= allowed {
        return false;
    }
    target.failures_in_a_row.store(0, Ordering::Relaxed);
    let n = target.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let time = ejection_time(config, n);
    let until = now.saturating_add(time.as_millis() as u64);
    target.down_until_ms.fetch_max(until, Ordering::Relaxed);
    set.health_changed();
    tracing::warn!(target = %target.address, ejection = n, ?time, "target ejected: {in_a_row} failures in a row");
    true
}

/// The length of ejection number `n` (from 1).
fn ejection_time(config: &OutlierConfig, n: u32) -> Duration {
    config
        .base_ejection_time
        .saturating_mul(n)
        .min(config.max_ejection_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn set(count: usize) -> TargetSet {
        TargetSet::with_weights(&vec![1; count])
    }

    fn config(percent: u32) -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 3,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_time: Duration::from_secs(25),
            max_ejection_percent: percent,
        }
    }

    const FAIL: Option<Failure> = Some(Failure::Status(StatusCode::BAD_GATEWAY));

    #[test]
    fn failures_in_a_row_eject_for_a_growing_time() {
        let (set, c) = (set(4), config(50));
        let t = &set.list[0];
        let now = || 1_000;
        assert!(!record(&c, &set, t, FAIL, now));
        assert!(
            !record(&c, &set, t, None, now),
            "a success restarts the count"
        );
        assert!(!record(&c, &set, t, FAIL, now) && !record(&c, &set, t, FAIL, now));
        assert!(record(&c, &set, t, FAIL, now), "third in a row");
        assert!(!t.is_available(1_000) && t.is_available(11_000), "10 s");
        // Back, and failing again at once: twice as long.
        let later = || 11_000;
        for _ in 0..3 {
            record(&c, &set, t, FAIL, later);
        }
        assert!(!t.is_available(30_000) && t.is_available(31_000), "20 s");
        assert_eq!(ejection_time(&c, 3), Duration::from_secs(25), "capped");
    }

    #[test]
    fn no_more_than_the_share_is_ejected_but_always_one() {
        let (set, c) = (set(4), config(10));
        let now = || 1_000;
        for _ in 0..3 {
            record(&c, &set, &set.list[0], FAIL, now);
        }
        assert!(!set.list[0].is_available(1_000), "one may always go");
        for _ in 0..3 {
            record(&c, &set, &set.list[1], FAIL, now);
        }
        assert!(set.list[1].is_available(1_000), "10% of 4 is one target");
    }
}
