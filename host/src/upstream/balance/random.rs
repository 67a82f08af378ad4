//! `random`: each request goes to a target drawn in proportion to its weight. No
//! state shared between requests, so no worker's balancer ever moves in step with
//! another's; the shares are exact only on average. No settings.

use super::sample::{Rng, Weighted};
use super::{Balancer, Candidates, PickRequest, Policy, Settings};
use crate::upstream::target::TargetSet;

/// Builds the policy for `set`.
pub fn build(_: &mut Settings<'_>, set: &TargetSet) -> Option<Balancer> {
    Some(Balancer::new(Random {
        weights: Weighted::new(set),
    }))
}

struct Random {
    weights: Weighted,
}

impl Policy for Random {
    type Local = Rng;

    fn local(&self) -> Rng {
        Rng::new()
    }

    fn pick(&self, rng: &mut Rng, targets: &Candidates<'_>, _: &PickRequest<'_>) -> Option<usize> {
        self.weights.draw_eligible(rng, targets)
    }
}
