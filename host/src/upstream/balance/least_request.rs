//! `least_request`: the power of two choices. Draw two targets by weight and send
//! the request to the one with fewer requests in flight per unit of weight (the
//! first drawn on a tie). Counting in flight across every worker, it steers away
//! from a slow or stuck target within a few requests, at the cost of two draws and
//! two loads, where scanning for the least loaded of all would cost a pass over every
//! target and send every worker's next request to the same one (Envoy's default, for
//! the same reasons). No settings.

use super::sample::{Rng, Weighted};
use super::{Balancer, Candidates, PickRequest, Policy, Settings};
use crate::upstream::target::TargetSet;

/// Builds the policy for `set`.
pub fn build(_: &mut Settings<'_>, set: &TargetSet) -> Option<Balancer> {
    Some(Balancer::new(LeastRequest {
        weights: Weighted::new(set),
    }))
}

struct LeastRequest {
    weights: Weighted,
}

impl Policy for LeastRequest {
    type Local = Rng;

    fn local(&self) -> Rng {
        Rng::new()
    }

    fn pick(&self, rng: &mut Rng, targets: &Candidates<'_>, _: &PickRequest<'_>) -> Option<usize> {
        let a = self.weights.draw_eligible(rng, targets)?;
        let b = self.weights.draw_eligible(rng, targets)?;
        Some(if lighter(targets, b, a) { b } else { a })
    }
}

/// Whether `x` has fewer requests in flight per unit of weight than `y`.
fn lighter(targets: &Candidates<'_>, x: usize, y: usize) -> bool {
    let load = |i: usize, other: usize| {
        u64::from(targets.active(i)) * u64::from(targets.weight(other).max(1))
    };
    load(x, y) < load(y, x)
}
