//! Failover and locality: which targets of an upstream take its traffic now.
//!
//! The targets fall into tiers, tried in order: each priority group (`priority` 0,
//! then 1, ...), and within a group, when the proxy knows its zone and some targets of
//! the group carry it, the proxy's zone before the group's other targets. A tier's
//! health is its share of targets up divided by the threshold, at most 1 (Envoy's
//! priority load with an overprovisioning factor of 100 / threshold): at or above the
//! threshold a tier is fully healthy. The first tier takes its health's share of the
//! requests, each next tier its health's share of what is left, and so on; when the
//! healths sum to less than 1 the shares are scaled up to 1 (Envoy's normalisation).
//! When no target of any tier is up, the balancer's own fail-open applies. A request
//! then goes to a tier drawn by these shares, and the upstream's policy picks among
//! that tier's targets.
//!
//! The shares change only when a target's health does. Each worker keeps them with
//! the health epoch they were computed at ([`TargetSet::epoch`], bumped by every
//! change of health) and the earliest end of a passive back-off among the targets,
//! and computes them again when either has passed: a pick costs two loads and a
//! draw, not a pass over the targets.
//!
//! The proxy's zone is also left for load, not only for health (`zone_overload`): when
//! the request drew a tier of the proxy's zone, and that zone's requests in flight per
//! target up exceed both `zone_overload` and those of the group's other zones, the
//! share of the excess goes to the other zones instead — with a load of `L` in flight
//! per target against a bound `B` (the larger of the two), `(L − B) / L` of the
//! requests spill. Taking requests off a slow zone lowers its load, so the spill
//! settles where the zone holds about `B` per target; it ends when the zone keeps up
//! again. Each tier's requests in flight are counted as they start and end
//! ([`TargetSet::tier_active`]), so the check costs two loads, not a pass.
//!
//! An upstream with one tier (one priority, and no zone to prefer) has no
//! [`Tiers`]: its picks do not pass here at all.

use super::balance::Within;
use super::balance::sample::{Rng, Weighted};
use super::target::TargetSet;
use crate::config::{DEFAULT_FAILOVER_THRESHOLD, UpstreamConfig};

/// Shares are in units of 1/SCALE.
const SCALE: u64 = 1 << 16;

/// An upstream's tiers.
pub struct Tiers {
    /// The tier of each target, in config order.
    tier_of: Box<[u16]>,
    /// How many targets each tier has.
    sizes: Box<[u32]>,
    /// Each tier's targets, in config order.
    members: Box<[Box<[u32]>]>,
    /// Each tier's weights, for the policies that draw.
    samplers: Box<[Weighted]>,
    /// A tier is fully healthy with this percentage of its targets up.
    threshold: u64,
    /// For a tier of the proxy's zone, its group's tier of the other zones.
    spill_to: Box<[Option<u16>]>,
    /// `zone_overload`: requests in flight per target up past which the proxy's zone
    /// spills; `None`: it spills for health only.
    overload: Option<u64>,
}

/// A worker's view of the tiers' shares.
pub struct TierLocal {
    /// The health epoch the shares were computed at; `u64::MAX` before the first.
    epoch: u64,
    /// The shares are stale from this time (`now_ms`), when a back-off ends.
    stale_at: u64,
    /// Running sums of the tiers' shares; empty when no tier has a target up.
    cumulative: Vec<u64>,
    /// Each tier's targets up, as of `epoch`.
    up: Vec<u64>,
    rng: Rng,
}

impl Tiers {
    /// The tiers of `config`'s targets, or `None` when there is only one.
    pub fn new(config: &UpstreamConfig) -> Option<Self> {
        let zone = config.local_zone.as_deref();
        let mut keys: Vec<(u32, bool)> = config
            .targets
            .iter()
            .map(|t| (t.priority, zone.is_some() && t.zone() == zone))
            .collect();
        // Within a priority, the proxy's zone (`true`) first.
        let mut order = keys.clone();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        order.dedup();
        if order.len() < 2 {
            return None;
        }
        let tier_of: Box<[u16]> = keys
            .drain(..)
            .map(|k| order.iter().position(|o| *o == k).unwrap_or(0) as u16)
            .collect();
        let mut sizes = vec![0u32; order.len()];
        for &t in tier_of.iter() {
            if let Some(n) = sizes.get_mut(usize::from(t)) {
                *n += 1;
            }
        }
        let members: Box<[Box<[u32]>]> = (0..order.len())
            .map(|t| {
                (0..tier_of.len() as u32)
                    .filter(|&i| tier_of.get(i as usize) == Some(&(t as u16)))
                    .collect()
            })
            .collect();
        let samplers = members
            .iter()
            .map(|m| {
                let weights: Vec<u32> = m
                    .iter()
                    .filter_map(|&i| config.targets.get(i as usize))
                    .map(|t| t.weight.max(1))
                    .collect();
                Weighted::of_weights(&weights)
            })
            .collect();
        let threshold = match config.failover_threshold {
            0 => DEFAULT_FAILOVER_THRESHOLD,
            t => t,
        };
        // A zone tier is followed by its group's other zones, when the group has any.
        let spill_to = order
            .iter()
            .zip(order.iter().skip(1).map(Some).chain([None]))
            .enumerate()
            .map(|(t, (here, next))| match next {
                Some(next) if here.1 && next.0 == here.0 => Some(t as u16 + 1),
                _ => None,
            })
            .collect();
        Some(Self {
            tier_of,
            sizes: sizes.into(),
            members,
            samplers,
            threshold: u64::from(threshold),
            spill_to,
            overload: config.zone_overload.map(u64::from),
        })
    }

    /// The tier of each target, when the requests in flight per tier are to be counted
    /// (the proxy's zone may spill for load); `None` when nothing reads them.
    pub fn counted_tiers(&self) -> Option<Box<[u16]>> {
        let spills = self.overload.is_some() && self.spill_to.iter().any(Option::is_some);
        spills.then(|| self.tier_of.clone())
    }

    /// A fresh worker view (computed on its first pick).
    pub fn local(&self) -> TierLocal {
        TierLocal {
            epoch: u64::MAX,
            stale_at: 0,
            cumulative: Vec::with_capacity(self.sizes.len()),
            up: Vec::with_capacity(self.sizes.len()),
            rng: Rng::new(),
        }
    }

    /// Tier `tier`, for the balancer to pick within.
    pub fn within(&self, tier: u16) -> Option<Within<'_>> {
        Some(Within {
            tier_of: &self.tier_of,
            tier,
            members: self.members.get(usize::from(tier))?,
            sampler: self.samplers.get(usize::from(tier))?,
        })
    }

    /// The tier the next request goes to; `None` when no target is up anywhere (the
    /// balancer then fails open over every target).
    pub fn choose(&self, local: &mut TierLocal, set: &TargetSet) -> Option<u16> {
        self.refresh(local, set);
        let total = *local.cumulative.last()?;
        let r = local.rng.below(total.max(1));
        let tier = local.cumulative.partition_point(|&c| c <= r) as u16;
        Some(self.spill_for_load(local, set, tier))
    }

    /// `tier`, or when it is the proxy's zone and overloaded, for the share of the
    /// excess, its group's other zones (see the module documentation).
    fn spill_for_load(&self, local: &mut TierLocal, set: &TargetSet, tier: u16) -> u16 {
        let (Some(bound), Some(&Some(other))) =
            (self.overload, self.spill_to.get(usize::from(tier)))
        else {
            return tier;
        };
        let up = |t: u16| local.up.get(usize::from(t)).copied().unwrap_or(0);
        let (up_here, up_there) = (up(tier), up(other));
        if up_here == 0 || up_there == 0 {
            return tier;
        }
        // Loads per target up, both multiplied by up_here × up_there to stay integers.
        let load = u64::from(set.tier_active(tier)) * up_there;
        let limit = (bound * up_here * up_there).max(u64::from(set.tier_active(other)) * up_here);
        if load > limit && local.rng.below(load) < load - limit {
            other
        } else {
            tier
        }
    }

    /// Whether target `index`'s tier takes any traffic now (a sticky pin to a target
    /// whose tier has failed back is let go).
    pub fn takes_traffic(&self, local: &mut TierLocal, set: &TargetSet, index: usize) -> bool {
        self.refresh(local, set);
        let Some(&tier) = self.tier_of.get(index) else {
            return false;
        };
        let t = usize::from(tier);
        let before = if t == 0 {
            Some(0)
        } else {
            local.cumulative.get(t - 1).copied()
        };
        matches!((before, local.cumulative.get(t)), (Some(b), Some(&c)) if c > b)
    }

    /// Computes the shares again when a target's health changed or a back-off ended.
    fn refresh(&self, local: &mut TierLocal, set: &TargetSet) {
        let epoch = set.epoch();
        if local.epoch != epoch || (local.stale_at != u64::MAX && super::now_ms() >= local.stale_at)
        {
            self.compute(local, set, epoch);
        }
    }

    fn compute(&self, local: &mut TierLocal, set: &TargetSet, epoch: u64) {
        let now = super::now_ms();
        let mut up = vec![0u64; self.sizes.len()];
        let mut stale_at = u64::MAX;
        for (t, &tier) in set.list.iter().zip(self.tier_of.iter()) {
            if t.is_available(now) {
                if let Some(n) = up.get_mut(usize::from(tier)) {
                    *n += 1;
                }
            } else if let Some(until) = t.back_off_until().filter(|&u| u > now) {
                stale_at = stale_at.min(until);
            }
        }
        let shares = shares(&up, &self.sizes, self.threshold);
        local.up.clone_from(&up);
        local.cumulative.clear();
        let mut sum = 0;
        for s in shares {
            sum += s;
            local.cumulative.push(sum);
        }
        if sum == 0 {
            local.cumulative.clear();
        }
        local.epoch = epoch;
        local.stale_at = stale_at;
    }
}

/// Each tier's share of the requests (in 1/[`SCALE`]), from its targets `up` of
/// `sizes`: see the module documentation.
fn shares(up: &[u64], sizes: &[u32], threshold: u64) -> Vec<u64> {
    let health: Vec<u64> = up
        .iter()
        .zip(sizes)
        .map(|(&u, &n)| {
            let n = u64::from(n).max(1);
            (u * SCALE * 100 / (n * threshold.max(1))).min(SCALE)
        })
        .collect();
    let mut left = SCALE;
    let mut shares: Vec<u64> = health
        .iter()
        .map(|&h| {
            let take = h.min(left);
            left -= take;
            take
        })
        .collect();
    let taken = SCALE - left;
    if taken > 0 && left > 0 {
        for s in &mut shares {
            *s = *s * SCALE / taken;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetConfig;

    fn percent(shares: &[u64]) -> Vec<u64> {
        shares
            .iter()
            .map(|s| (s * 100 + SCALE / 2) / SCALE)
            .collect()
    }

    #[test]
    fn a_healthy_first_tier_takes_everything() {
        assert_eq!(percent(&shares(&[4, 2], &[4, 2], 70)), [100, 0]);
        // 3 of 4 is 75%, above the threshold: still fully healthy.
        assert_eq!(percent(&shares(&[3, 2], &[4, 2], 70)), [100, 0]);
    }

    #[test]
    fn below_the_threshold_the_rest_spills_to_the_next_tier() {
        // 1 of 2 up: health 50/70 = 71%; the next tier takes the other 29%.
        assert_eq!(percent(&shares(&[1, 2], &[2, 2], 70)), [71, 29]);
        assert_eq!(percent(&shares(&[0, 2], &[2, 2], 70)), [0, 100]);
        // Three tiers: the second also degraded, the third takes what is left.
        assert_eq!(percent(&shares(&[1, 1, 4], &[2, 2, 4], 70)), [71, 29, 0]);
        assert_eq!(percent(&shares(&[1, 0, 4], &[4, 2, 4], 100)), [25, 0, 75]);
    }

    #[test]
    fn when_every_tier_is_degraded_the_shares_are_scaled_to_the_whole() {
        // Healths 1/4 and 1/4 at threshold 100: 25% and 25%, scaled to 50/50.
        assert_eq!(percent(&shares(&[1, 1], &[4, 4], 100)), [50, 50]);
        assert_eq!(percent(&shares(&[0, 0], &[4, 4], 100)), [0, 0]);
    }

    fn target(priority: u32, zone: Option<&str>) -> TargetConfig {
        TargetConfig {
            address: "127.0.0.1:9000".into(),
            weight: 1,
            priority,
            labels: zone
                .map(|z| vec![("zone".to_string(), z.to_string())])
                .unwrap_or_default(),
        }
    }

    fn tiers(targets: Vec<TargetConfig>, zone: Option<&str>) -> Option<Tiers> {
        Tiers::new(&UpstreamConfig {
            targets,
            local_zone: zone.map(str::to_string),
            ..UpstreamConfig::default()
        })
    }

    #[test]
    fn tiers_by_priority_then_the_local_zone_first() {
        let t = tiers(
            vec![
                target(1, Some("a")),
                target(0, Some("b")),
                target(0, Some("a")),
                target(1, None),
            ],
            Some("a"),
        )
        .unwrap_or_else(|| panic!("several tiers"));
        assert_eq!(&*t.tier_of, [2, 1, 0, 3]);
        assert_eq!(&*t.members[0], [2]);
        assert_eq!(&*t.sizes, [1, 1, 1, 1]);
        assert_eq!(t.threshold, u64::from(DEFAULT_FAILOVER_THRESHOLD));
    }

    #[test]
    fn a_drawing_policy_picks_within_its_tier_and_leaves_it_only_when_it_is_down() {
        use crate::config::BalanceConfig;
        use crate::upstream::balance::{Balancer, PickRequest};
        use std::sync::atomic::Ordering;

        let t = tiers((0..6).map(|i| target(i % 2, None)).collect(), None)
            .unwrap_or_else(|| panic!("two tiers"));
        let set = TargetSet::with_weights(&[1, 2, 3, 1, 2, 3]);
        let (uri, headers) = (http::Uri::from_static("/"), http::HeaderMap::new());
        let request = PickRequest {
            uri: &uri,
            headers: &headers,
            client: None,
        };
        for policy in ["random", "least_request", "round_robin"] {
            let config = BalanceConfig {
                policy: policy.into(),
                ..BalanceConfig::default()
            };
            let b = Balancer::build("u", &config, &set).unwrap_or_else(|e| panic!("{e:?}"));
            let mut local = b.local();
            let mut seen = [0u32; 6];
            for _ in 0..600 {
                let within = t.within(0).unwrap_or_else(|| panic!("tier 0"));
                if let Some(i) = b.pick_in(&mut local, &set, &request, within) {
                    seen[i] += 1;
                }
            }
            assert_eq!(
                seen[1] + seen[3] + seen[5],
                0,
                "{policy}: tier 0 only: {seen:?}"
            );
            assert!(
                seen[0] > 0 && seen[2] > 0 && seen[4] > 0,
                "{policy}: {seen:?}"
            );
        }
        for i in [0, 2, 4] {
            set.list[i].healthy.store(false, Ordering::Relaxed);
        }
        let config = BalanceConfig {
            policy: "random".into(),
            ..BalanceConfig::default()
        };
        let b = Balancer::build("u", &config, &set).unwrap_or_else(|e| panic!("{e:?}"));
        let mut local = b.local();
        let within = t.within(0).unwrap_or_else(|| panic!("tier 0"));
        let i = b.pick_in(&mut local, &set, &request, within);
        assert!(i.is_some_and(|i| i % 2 == 1), "tier 0 down: another, {i:?}");
    }

    #[test]
    fn an_overloaded_local_zone_spills_the_excess_to_less_loaded_zones() {
        use crate::upstream::target::{InFlight, Target};
        use std::sync::Arc;

        // Targets 0 and 1 in the proxy's zone (tier 0), 2 and 3 elsewhere (tier 1).
        let zones = [Some("a"), Some("a"), Some("b"), None];
        let config = UpstreamConfig {
            targets: zones.iter().map(|&z| target(0, z)).collect(),
            local_zone: Some("a".into()),
            zone_overload: Some(4),
            ..UpstreamConfig::default()
        };
        let t = Tiers::new(&config).unwrap_or_else(|| panic!("two tiers"));
        let counted = t.counted_tiers().unwrap_or_else(|| panic!("counted"));
        let list = (0..4)
            .map(|i| {
                let address = format!("127.0.0.1:{}", 9000 + i);
                Target::new(address.parse().unwrap_or_else(|e| panic!("{e}")), 1)
            })
            .collect();
        let set = Arc::new(TargetSet::with_tiers(list, counted));
        let mut local = t.local();
        let spilled = |local: &mut TierLocal| {
            (0..10_000)
                .filter(|_| t.choose(local, &set) == Some(1))
                .count()
        };
        // 8 in flight on 2 targets: 4 each, at the bound: no spill.
        let mut flights: Vec<InFlight> = (0..8).map(|i| InFlight::start(&set, i % 2)).collect();
        assert_eq!(set.tier_active(0), 8);
        assert_eq!(spilled(&mut local), 0);
        // 16: 8 each, twice the bound: half spills.
        flights.extend((0..8).map(|i| InFlight::start(&set, i % 2)));
        let half = spilled(&mut local);
        assert!((4_500..=5_500).contains(&half), "about half: {half}");
        // The other zones as loaded (8 per target up): nothing spills to them.
        flights.extend((0..16).map(|i| InFlight::start(&set, 2 + i % 2)));
        assert_eq!(spilled(&mut local), 0);
        // One of the other zones' targets down: it counts per target up (16 on one).
        set.list[3]
            .healthy
            .store(false, std::sync::atomic::Ordering::Relaxed);
        set.health_changed();
        assert_eq!(spilled(&mut local), 0);
        drop(flights);
        assert_eq!((set.tier_active(0), set.tier_active(1)), (0, 0));
        // Off: never for load.
        let off = Tiers::new(&UpstreamConfig {
            zone_overload: None,
            ..config
        })
        .unwrap_or_else(|| panic!("two tiers"));
        assert!(off.counted_tiers().is_none());
    }

    #[test]
    fn one_tier_is_none() {
        assert!(tiers(vec![target(0, Some("a")), target(0, Some("b"))], None).is_none());
        assert!(tiers(vec![target(2, Some("a")), target(2, Some("a"))], Some("a")).is_none());
        assert!(tiers(vec![target(0, Some("b"))], Some("a")).is_none());
        assert!(tiers(vec![target(0, None), target(1, None)], None).is_some());
    }
}
