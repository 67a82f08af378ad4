//! `round_robin`, the default: smooth weighted round-robin, as nginx does it. Every
//! pick adds each candidate's weight to its running score, takes the highest, and
//! subtracts the total from the winner. Over one cycle each target gets exactly its
//! share, interleaved rather than in bursts (weights 5,1,1 give a a b a c a a, not
//! a a a a a b c). Each worker keeps its own scores, so the shares are exact per
//! worker. No settings.

use super::{Balancer, Candidates, PickRequest, Policy, Settings};
use crate::upstream::target::TargetSet;

/// Builds the policy for `set`.
pub fn build(_: &mut Settings<'_>, set: &TargetSet) -> Option<Balancer> {
    Some(Balancer::new(RoundRobin {
        targets: set.list.len(),
    }))
}

/// Smooth weighted round-robin over a fixed number of targets.
struct RoundRobin {
    targets: usize,
}

impl Policy for RoundRobin {
    /// The running scores, one per target.
    type Local = Vec<i64>;

    fn local(&self) -> Vec<i64> {
        vec![0; self.targets]
    }

    fn pick(
        &self,
        scores: &mut Vec<i64>,
        targets: &Candidates<'_>,
        _: &PickRequest<'_>,
    ) -> Option<usize> {
        smooth(scores, |i| targets.eligible(i).then(|| targets.weight(i)))
    }
}

/// Picks an index among the candidates. `weight(i)` is `Some(w)` for a candidate and
/// `None` for a target to skip (unhealthy). `current` holds the running scores and
/// must have one slot per target. Returns `None` when there is no candidate.
fn smooth(current: &mut [i64], weight: impl Fn(usize) -> Option<u32>) -> Option<usize> {
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for i in 0..current.len() {
        let Some(w) = weight(i) else { continue };
        let w = i64::from(w);
        current[i] += w;
        total += w;
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::smooth as pick;

    fn run(weights: &[u32], healthy: &[bool], n: usize) -> Vec<usize> {
        let mut current = vec![0; weights.len()];
        let mut counts = vec![0; weights.len()];
        for _ in 0..n {
            if let Some(i) = pick(&mut current, |i| healthy[i].then_some(weights[i])) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn distribution_is_exact_over_whole_cycles() {
        assert_eq!(run(&[3, 1], &[true, true], 400), vec![300, 100]);
        assert_eq!(run(&[5, 1, 1], &[true; 3], 700), vec![500, 100, 100]);
        assert_eq!(run(&[1, 1, 1], &[true; 3], 3), vec![1, 1, 1]);
    }

    #[test]
    fn sequence_is_smooth_not_bursty() {
        let mut current = vec![0; 3];
        let order: Vec<usize> = (0..7)
            .filter_map(|_| pick(&mut current, |i| Some([5, 1, 1][i])))
            .collect();
        assert_eq!(
            order,
            vec![0, 0, 1, 0, 2, 0, 0],
            "nginx's smooth order for 5,1,1"
        );
    }

    #[test]
    fn unhealthy_targets_are_skipped_and_none_when_all_are() {
        assert_eq!(
            run(&[3, 1, 2], &[true, false, true], 500),
            vec![300, 0, 200]
        );
        assert_eq!(run(&[1, 1], &[false, false], 10), vec![0, 0]);
    }
}
