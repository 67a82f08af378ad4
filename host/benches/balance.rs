//! The balancer's cost per pick, for each policy, over an upstream of 100 targets:
//! what a request pays between routing and connecting (the per-worker state lookup
//! included), with every target up and nothing in flight; also with the targets in two
//! failover or locality tiers. Target: ≤ 100 ns.
//!
//! Run: `cargo bench -p portcullis --bench balance`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Uri};
use portcullis::config::{BalanceConfig, BalanceOption, TargetConfig, UpstreamConfig};
use portcullis::upstream::Upstream;
use portcullis::upstream::balance::PickRequest;

const TARGETS: u16 = 100;

/// A case: its label, the policy, its settings, whether the weights differ, and how
/// the targets are grouped.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    bool,
    Tiers,
);

/// How the targets are grouped: not at all, in two priority groups (failover), or in
/// two zones with the proxy in the first (locality).
#[derive(Clone, Copy)]
enum Tiers {
    None,
    Priorities,
    Zones,
}

fn upstream(policy: &str, options: &[(&str, &str)], weighted: bool, tiers: Tiers) -> Upstream {
    let config = UpstreamConfig {
        name: format!("{policy}-bench"),
        targets: (0..TARGETS)
            .map(|i| TargetConfig {
                address: format!("10.0.{}.{}:8080", i / 250, i % 250 + 1),
                weight: if weighted { u32::from(i % 5) + 1 } else { 1 },
                priority: match tiers {
                    Tiers::Priorities => u32::from(i % 2),
                    _ => 0,
                },
                labels: match tiers {
                    Tiers::Zones => vec![("zone".into(), format!("z{}", i % 2))],
                    _ => Vec::new(),
                },
            })
            .collect(),
        local_zone: Some("z0".into()),
        // As a parsed config has it by default: locality checks the zone's load.
        zone_overload: Some(portcullis::config::DEFAULT_ZONE_OVERLOAD),
        balance: BalanceConfig {
            policy: policy.into(),
            options: options
                .iter()
                .map(|(name, value)| BalanceOption {
                    name: (*name).into(),
                    value: (*value).into(),
                    line: 1,
                })
                .collect(),
            origin: Default::default(),
        },
        ..UpstreamConfig::default()
    };
    Upstream::new(&config, None).unwrap_or_else(|e| panic!("bench upstream: {e:?}"))
}

fn picks(c: &mut Criterion) {
    let uri = Uri::from_static("/api/items?id=42");
    let users: Vec<HeaderMap> = (0..1024)
        .map(|i| {
            let mut h = HeaderMap::new();
            let user = HeaderValue::from_str(&format!("user-{i}"))
                .unwrap_or_else(|e| panic!("header: {e}"));
            h.insert("x-user", user);
            h
        })
        .collect();
    let cases: [Case; 9] = [
        ("round_robin", "round_robin", &[], false, Tiers::None),
        (
            "round_robin_weighted",
            "round_robin",
            &[],
            true,
            Tiers::None,
        ),
        ("random", "random", &[], true, Tiers::None),
        ("least_request", "least_request", &[], true, Tiers::None),
        (
            "consistent_hash_header",
            "consistent_hash",
            &[("key", "header:x-user")],
            false,
            Tiers::None,
        ),
        (
            "consistent_hash_client_ip",
            "consistent_hash",
            &[("key", "client_ip")],
            false,
            Tiers::None,
        ),
        // Two tiers of 50, the first all up: a tier drawn, then a pick within it.
        (
            "round_robin_failover",
            "round_robin",
            &[],
            false,
            Tiers::Priorities,
        ),
        (
            "round_robin_locality",
            "round_robin",
            &[],
            false,
            Tiers::Zones,
        ),
        (
            "least_request_locality",
            "least_request",
            &[],
            true,
            Tiers::Zones,
        ),
    ];
    let mut g = c.benchmark_group("balance_100_targets");
    for (label, policy, options, weighted, tiers) in cases {
        let u = upstream(policy, options, weighted, tiers);
        let mut i = 0usize;
        let mut client = 0u32;
        g.bench_function(label, |b| {
            b.iter(|| {
                // A different key on every pick, as distinct clients would bring.
                i = (i + 1) % users.len();
                client = client.wrapping_add(0x9e37_79b9);
                let request = PickRequest {
                    uri: &uri,
                    headers: &users[i],
                    client: Some(std::net::Ipv4Addr::from(client).into()),
                };
                u.pick(black_box(&request))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
