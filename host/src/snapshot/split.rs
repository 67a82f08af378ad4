//! A route that splits its requests between upstreams (`upstreams:`): canaries chosen
//! by a header or cookie, then shares by weight.
//!
//! The shares are exact over every cycle of the weights' total, across workers: one
//! counter per route (an atomic add per request), stepped through the cycle by a
//! stride prime to the total, so each cycle visits every slot once and an upstream's
//! slots come interleaved (90/10 gives one request in ten to the second, spread out,
//! not ten in a row). A reload builds a new split, so new weights apply from the next
//! request; requests under way finish where they were sent.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

use super::RouteUpstream;
use crate::config::CanaryMatch;
use crate::upstream::balance::cookie;

/// Steps through a cycle of the weights: prime, and larger than any total the config
/// allows, hence prime to it.
const STRIDE: u128 = 2_147_483_647;

/// A route's split (see the module documentation).
pub struct Split {
    /// In the order written: the first whose match holds takes the request.
    canaries: Vec<(CanaryMatch, RouteUpstream)>,
    /// The entries with a share (weight above 0), and the running sums of their weights.
    weighted: Vec<RouteUpstream>,
    cumulative: Vec<u64>,
    /// Requests shared by weight so far, by every worker.
    next: AtomicU64,
    /// The upstreams' names, for what the filters see before the choice.
    label: String,
}

impl Split {
    /// A split over `canaries` and `weighted` (upstream, weight); `None` without an
    /// entry of weight above 0.
    pub fn new(
        canaries: Vec<(CanaryMatch, RouteUpstream)>,
        weighted: Vec<(RouteUpstream, u32)>,
    ) -> Option<Split> {
        let mut names: Vec<&str> = canaries.iter().map(|(_, u)| u.name()).collect();
        names.extend(weighted.iter().map(|(u, _)| u.name()));
        names.dedup();
        let label = names.join(",");
        let mut total = 0u64;
        let mut cumulative = Vec::with_capacity(weighted.len());
        let mut upstreams = Vec::with_capacity(weighted.len());
        for (u, w) in weighted.into_iter().filter(|(_, w)| *w > 0) {
            total += u64::from(w);
            cumulative.push(total);
            upstreams.push(u);
        }
        if upstreams.is_empty() || u128::from(total) >= STRIDE {
            return None;
        }
        Some(Split {
            canaries,
            weighted: upstreams,
            cumulative,
            next: AtomicU64::new(0),
            label,
        })
    }

    /// The upstreams' names, joined by commas.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where a request with `headers` goes.
    pub fn choose(&self, headers: &HeaderMap) -> Option<&RouteUpstream> {
        if let Some((_, u)) = self.canaries.iter().find(|(m, _)| matches(m, headers)) {
            return Some(u);
        }
        let total = *self.cumulative.last()?;
        let n = self.next.fetch_add(1, Ordering::Relaxed) % total;
        let slot = (u128::from(n) * STRIDE % u128::from(total)) as u64;
        self.weighted
            .get(self.cumulative.partition_point(|&c| c <= slot))
    }
}

/// Whether every header and cookie of `m` is present with its value.
fn matches(m: &CanaryMatch, headers: &HeaderMap) -> bool {
    m.headers.iter().all(|(name, value)| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    }) && m
        .cookies
        .iter()
        .all(|(name, value)| cookie(headers, name) == Some(value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn split(weights: &[u32]) -> Split {
        let weighted = weights.iter().map(|w| (RouteUpstream::Echo, *w)).collect();
        Split::new(vec![], weighted).unwrap_or_else(|| panic!("a split"))
    }

    /// Which weighted entry each of `n` requests goes to.
    fn picks(s: &Split, n: usize) -> Vec<usize> {
        let headers = HeaderMap::new();
        (0..n)
            .map(|_| {
                let chosen = s.choose(&headers);
                s.weighted
                    .iter()
                    .position(|w| chosen.is_some_and(|c| std::ptr::eq(w, c)))
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    #[test]
    fn shares_are_exact_per_cycle_and_interleaved() {
        let s = split(&[90, 10]);
        let order = picks(&s, 1000);
        assert_eq!(order.iter().filter(|&&i| i == 1).count(), 100);
        // Never more than two requests in a row to the 10% entry.
        assert!(
            !order.windows(3).any(|w| w.iter().all(|&i| i == 1)),
            "the small share comes spread out: {:?}",
            &order[..100]
        );
        let s = split(&[1, 0, 2]);
        let order = picks(&s, 300);
        assert_eq!(order.iter().filter(|&&i| i == 0).count(), 100);
        assert_eq!(
            order.iter().filter(|&&i| i == 1).count(),
            200,
            "weight 0 is left out"
        );
    }

    #[test]
    fn a_canary_takes_the_requests_it_matches() {
        let canary = CanaryMatch {
            headers: vec![(http::HeaderName::from_static("x-canary"), "true".into())],
            cookies: vec![("beta".into(), "on".into())],
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-canary", HeaderValue::from_static("true"));
        assert!(!matches(&canary, &headers), "the cookie is missing");
        headers.insert("cookie", HeaderValue::from_static("a=1; beta=on"));
        assert!(matches(&canary, &headers));
        headers.insert("cookie", HeaderValue::from_static("beta=off"));
        assert!(!matches(&canary, &headers));
    }

    #[test]
    fn a_split_needs_a_share() {
        assert!(Split::new(vec![], vec![(RouteUpstream::Echo, 0)]).is_none());
    }
}
