//! Randomness for the policies that sample (`random`, `least_request`, and
//! `consistent_hash` without a key): a per-worker generator, and draws of a target in
//! proportion to its weight.

use super::Candidates;
use crate::upstream::target::TargetSet;

/// Draws at random before falling back to a scan of the eligible targets: with a
/// share `d` of the targets down, all four draws miss with probability `d⁴`.
const DRAWS: usize = 4;

/// wyrand: a small, fast generator. Ample for spreading load; never for secrets.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the operating system's randomness (once per worker and
    /// upstream), so that workers and processes do not move in step.
    pub fn new() -> Self {
        Rng(rand::random())
    }

    /// A generator with a fixed seed (for tests).
    #[cfg(test)]
    pub fn seeded(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n` > 0, and the bias is at most
    /// `n / 2⁶⁴`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Draws target indices with probability proportional to their weights.
pub struct Weighted {
    /// Running sums of the weights (`cumulative[i]` = weights of `0..=i`); empty when
    /// every weight is the same, and a draw is then a plain index.
    cumulative: Box<[u64]>,
    count: u64,
    total: u64,
}

impl Weighted {
    /// The sampler of `set`'s weights (fixed for the upstream's life).
    pub fn new(set: &TargetSet) -> Self {
        let weights: Vec<u32> = set.list.iter().map(|t| t.weight).collect();
        Self::of_weights(&weights)
    }

    /// The sampler of `weights`: draws are positions in it.
    pub fn of_weights(weights: &[u32]) -> Self {
        let first = weights.first().copied().unwrap_or(1);
        let uniform = weights.iter().all(|&w| w == first);
        let mut total = 0u64;
        let cumulative: Box<[u64]> = if uniform {
            Box::new([])
        } else {
            weights
                .iter()
                .map(|&w| {
                    total += u64::from(w);
                    total
                })
                .collect()
        };
        Self {
            cumulative,
            count: weights.len() as u64,
            total,
        }
    }

    /// A target drawn by weight, regardless of its health.
    pub fn draw(&self, rng: &mut Rng) -> usize {
        if self.cumulative.is_empty() {
            return rng.below(self.count.max(1)) as usize;
        }
        let r = rng.below(self.total.max(1));
        self.cumulative.partition_point(|&c| c <= r)
    }

    /// An eligible target drawn by weight; `None` when none is eligible. When the
    /// pick is confined to a failover or locality tier, the draw is among the tier's
    /// targets only (by the tier's own sampler), so that a small tier costs no more
    /// than a whole upstream.
    pub fn draw_eligible(&self, rng: &mut Rng, targets: &Candidates<'_>) -> Option<usize> {
        match targets.within() {
            Some(w) => w
                .sampler
                .draw_from(rng, targets, |p| w.members.get(p).map(|&i| i as usize)),
            None => self.draw_from(rng, targets, Some),
        }
    }

    /// An eligible target drawn by weight, `index` mapping a position of this
    /// sampler to a target.
    fn draw_from(
        &self,
        rng: &mut Rng,
        targets: &Candidates<'_>,
        index: impl Fn(usize) -> Option<usize>,
    ) -> Option<usize> {
        for _ in 0..DRAWS {
            let i = index(self.draw(rng))?;
            if targets.eligible(i) {
                return Some(i);
            }
        }
        // Most targets are down: draw among the eligible ones only.
        let weight = |p: usize| {
            index(p)
                .filter(|&i| targets.eligible(i))
                .map_or(0, |i| u64::from(targets.weight(i)))
        };
        let count = self.count as usize;
        let total: u64 = (0..count).map(weight).sum();
        if total == 0 {
            return None;
        }
        let mut r = rng.below(total);
        for p in 0..count {
            let w = weight(p);
            if r < w {
                return index(p);
            }
            r -= w;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(weights: &[u32]) -> TargetSet {
        TargetSet::with_weights(weights)
    }

    #[test]
    fn draws_follow_the_weights() {
        let set = set(&[1, 3, 6]);
        let weighted = Weighted::new(&set);
        let mut rng = Rng::seeded(7);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[weighted.draw(&mut rng)] += 1;
        }
        for (i, share) in [0.1, 0.3, 0.6].iter().enumerate() {
            let got = f64::from(counts[i]) / 100_000.0;
            assert!(
                (got - share).abs() < 0.01,
                "target {i}: share {share} expected, got {got} ({counts:?})"
            );
        }
    }

    #[test]
    fn equal_weights_draw_every_index() {
        let set = set(&[2, 2, 2, 2]);
        let weighted = Weighted::new(&set);
        let mut rng = Rng::seeded(1);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            seen[weighted.draw(&mut rng)] = true;
        }
        assert_eq!(seen, [true; 4]);
    }
}
