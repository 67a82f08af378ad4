//! `consistent_hash`: requests with the same key go to the same target, and adding or
//! removing a target moves only the keys it takes or held.
//!
//! A ring (ketama): every target gets points on a 64-bit circle, 160 per target at
//! equal weights and in proportion to its weight otherwise, each point the hash of the
//! target's address and the point's number, so a target's points do not depend on the
//! others. A key goes to the target of the first point at or after its hash. A ring
//! rather than Maglev: its lookup is a binary search (14 steps at 100 targets), adding
//! a target moves only the keys it takes (Maglev's table reshuffles a few more), and
//! walking on from a point is the natural way to skip a target that is down or full.
//!
//! Bounded load (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded
//! Loads"): a target takes a request only while its requests in flight stay within
//! `load_factor` times the upstream's average (rounded up); otherwise the walk goes on
//! to the next point. So a hot key spills over instead of overloading its target. The
//! average counts every target, up or down.
//!
//! Settings: `key` (required): `header:NAME`, `cookie:NAME`, `client_ip`, `path`,
//! `query:NAME`; `load_factor` (default 1.25, at least 1, or `off`). A request without
//! the key goes to a target drawn by weight.

use std::hash::BuildHasher;

use http::HeaderName;

use super::sample::{Rng, Weighted};
use super::{Balancer, Candidates, PickRequest, Policy, Settings};
use crate::upstream::target::TargetSet;

/// Points per target at equal weights (ketama's figure: shares within a few percent).
const POINTS_PER_TARGET: u64 = 160;

/// The ring's index: the hash space cut into 2^12 slices, each knowing its first
/// point, so a lookup reads one slice's few points instead of binary-searching all
/// (16,000 at 100 targets: 14 dependent loads, most of them cache misses).
const SLICE_BITS: u32 = 12;

/// The default bound on a target's load, as a multiple of the average (the paper's
/// and HAProxy's usual choice).
const DEFAULT_LOAD_FACTOR: f64 = 1.25;

/// Hashes keys and ring points alike; fixed, so every worker and every process of the
/// same build agrees on where a key goes.
const HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x7068_6173_6821);

/// Builds the policy for `set`.
pub fn build(settings: &mut Settings<'_>, set: &TargetSet) -> Option<Balancer> {
    let key = match settings.take("key") {
        Some(option) => match Key::parse(&option.value) {
            Ok(k) => Some(k),
            Err(why) => {
                settings.error(option, why);
                None
            }
        },
        None => {
            settings.missing("key");
            None
        }
    };
    let load_factor = match settings.take("load_factor") {
        None => Some(Some(DEFAULT_LOAD_FACTOR)),
        Some(option) if option.value == "off" => Some(None),
        Some(option) => match option.value.parse::<f64>() {
            Ok(c) if (1.0..=1000.0).contains(&c) => Some(Some(c)),
            _ => {
                let message = format!(
                    "`{}` is not a load factor (a number from 1 to 1000, or off)",
                    option.value
                );
                settings.error(option, message);
                None
            }
        },
    };
    Some(Balancer::new(ConsistentHash {
        key: key?,
        load_factor: load_factor?,
        ring: Ring::new(set),
        fallback: Weighted::new(set),
    }))
}

/// What part of a request is hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
    Path,
    Query(String),
}

impl Key {
    fn parse(text: &str) -> Result<Key, String> {
        let named = |name: &str| {
            if name.is_empty() {
                Err(format!("`{text}` names nothing after the colon"))
            } else {
                Ok(name.to_string())
            }
        };
        match text.split_once(':') {
            None if text == "client_ip" => Ok(Key::ClientIp),
            None if text == "path" => Ok(Key::Path),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(Key::Header)
                .map_err(|_| format!("`{name}` is not a header name")),
            Some(("cookie", name)) => named(name).map(Key::Cookie),
            Some(("query", name)) => named(name).map(Key::Query),
            _ => Err(format!(
                "`{text}` is not a hash key (header:NAME, cookie:NAME, client_ip, path or query:NAME)"
            )),
        }
    }

    /// The hash of this key in `request`, if the request has it.
    fn hash(&self, request: &PickRequest<'_>) -> Option<u64> {
        match self {
            Key::Header(name) => request
                .headers
                .get(name)
                .map(|v| HASHER.hash_one(v.as_bytes())),
            Key::Cookie(name) => {
                super::cookie(request.headers, name).map(|v| HASHER.hash_one(v.as_bytes()))
            }
            Key::ClientIp => request.client.map(|ip| match ip {
                std::net::IpAddr::V4(v4) => HASHER.hash_one(v4.octets()),
                std::net::IpAddr::V6(v6) => HASHER.hash_one(v6.octets()),
            }),
            Key::Path => Some(HASHER.hash_one(request.uri.path().as_bytes())),
            Key::Query(name) => request.uri.query()?.split('&').find_map(|pair| {
                let (n, value) = pair.split_once('=').unwrap_or((pair, ""));
                (n == name).then(|| HASHER.hash_one(value.as_bytes()))
            }),
        }
    }
}

/// Every target's points on the circle, sorted, and an index of them by slice.
struct Ring {
    points: Box<[u64]>,
    /// `owners[k]`: the target of `points[k]`.
    owners: Box<[u32]>,
    /// `slices[s]`: the first point at or after the start of slice `s`.
    slices: Box<[u32]>,
}

impl Ring {
    fn new(set: &TargetSet) -> Ring {
        let count = set.list.len() as u64;
        let total_weight: u64 = set.list.iter().map(|t| u64::from(t.weight)).sum();
        let budget = POINTS_PER_TARGET * count;
        let mut ring = Vec::with_capacity(budget as usize + set.list.len());
        for (i, t) in set.list.iter().enumerate() {
            let points = (budget * u64::from(t.weight) / total_weight.max(1)).max(1);
            for p in 0..points {
                ring.push((HASHER.hash_one((t.address.as_str(), p)), i as u32));
            }
        }
        ring.sort_unstable();
        let points: Box<[u64]> = ring.iter().map(|&(p, _)| p).collect();
        let slices = (0..1u64 << SLICE_BITS)
            .map(|s| points.partition_point(|&p| p < s << (64 - SLICE_BITS)) as u32)
            .collect();
        Ring {
            owners: ring.iter().map(|&(_, o)| o).collect(),
            points,
            slices,
        }
    }

    /// The position of the first point at or after `hash` (`len` past the last).
    fn position(&self, hash: u64) -> usize {
        let slice = (hash >> (64 - SLICE_BITS)) as usize;
        let mut k = self.slices.get(slice).map_or(0, |&k| k as usize);
        while self.points.get(k).is_some_and(|&p| p < hash) {
            k += 1;
        }
        k
    }
}

struct ConsistentHash {
    key: Key,
    /// `None`: no bound.
    load_factor: Option<f64>,
    ring: Ring,
    /// For requests without the key.
    fallback: Weighted,
}

impl Policy for ConsistentHash {
    type Local = Rng;

    fn local(&self) -> Rng {
        Rng::new()
    }

    fn pick(
        &self,
        rng: &mut Rng,
        targets: &Candidates<'_>,
        request: &PickRequest<'_>,
    ) -> Option<usize> {
        let Some(hash) = self.key.hash(request) else {
            return self.fallback.draw_eligible(rng, targets);
        };
        self.walk(hash, targets)
    }
}

impl ConsistentHash {
    /// The first eligible target at or after `hash` on the ring whose load stays within
    /// the bound; the first eligible one if all are full.
    fn walk(&self, hash: u64, targets: &Candidates<'_>) -> Option<usize> {
        // Computed on first need: a target with nothing in flight is always within
        // the bound (it is at least 1), the common case at light load.
        let mut capacity = None;
        let start = self.ring.position(hash);
        let (before, after) = self.ring.owners.split_at(start.min(self.ring.owners.len()));
        let mut first = None;
        for &i in after.iter().chain(before) {
            let i = i as usize;
            if !targets.eligible(i) {
                continue;
            }
            let Some(c) = self.load_factor else {
                return Some(i);
            };
            let active = targets.active(i);
            if active == 0 {
                return Some(i);
            }
            let cap = *capacity.get_or_insert_with(|| {
                let average = f64::from(targets.total_active()) + 1.0;
                (c * average / targets.len().max(1) as f64).ceil()
            });
            if f64::from(active) + 1.0 <= cap {
                return Some(i);
            }
            first.get_or_insert(i);
        }
        first
    }
}

#[cfg(test)]
mod tests;
