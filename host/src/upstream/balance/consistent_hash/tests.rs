use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderValue, Uri};

use crate::config::{BalanceConfig, BalanceOption, Origin};
use crate::upstream::balance::{Balancer, PickRequest};
use crate::upstream::target::{InFlight, Target, TargetSet};

fn set(count: usize) -> Arc<TargetSet> {
    Arc::new(TargetSet::new(
        (0..count)
            .map(|i| {
                let address = format!("10.0.0.{}:8080", i + 1);
                Target::new(address.parse().unwrap_or_else(|e| panic!("{e}")), 1)
            })
            .collect(),
    ))
}

fn config(options: &[(&str, &str)]) -> BalanceConfig {
    BalanceConfig {
        policy: "consistent_hash".into(),
        options: options
            .iter()
            .enumerate()
            .map(|(i, (name, value))| BalanceOption {
                name: (*name).into(),
                value: (*value).into(),
                line: 10 + i,
            })
            .collect(),
        origin: Origin {
            file: "up.yaml".into(),
            line: 9,
        },
    }
}

fn balancer(set: &TargetSet, options: &[(&str, &str)]) -> Balancer {
    Balancer::build("api", &config(options), set)
        .unwrap_or_else(|e| panic!("a valid policy expected, got {e:?}"))
}

/// The target a request with `x-user: user` goes to.
fn pick_user(b: &Balancer, set: &TargetSet, user: &str) -> Option<usize> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-user",
        HeaderValue::from_str(user).unwrap_or_else(|e| panic!("{e}")),
    );
    let uri = Uri::from_static("/");
    let request = PickRequest {
        uri: &uri,
        headers: &headers,
        client: None,
    };
    b.pick(&mut b.local(), set, &request)
}

#[test]
fn the_same_key_goes_to_the_same_target() {
    let set = set(5);
    let b = balancer(&set, &[("key", "header:x-user")]);
    let mut used = [0u32; 5];
    for k in 0..1000 {
        let user = format!("user-{k}");
        let first = pick_user(&b, &set, &user);
        assert_eq!(first, pick_user(&b, &set, &user), "key {user} moved");
        if let Some(i) = first {
            used[i] += 1;
        }
    }
    assert!(
        used.iter().all(|&n| (100..=300).contains(&n)),
        "1000 keys spread over 5 targets, got {used:?}"
    );
}

#[test]
fn adding_a_target_moves_only_the_keys_it_takes() {
    let (four, five) = (set(4), set(5));
    let (b4, b5) = (
        balancer(&four, &[("key", "header:x-user")]),
        balancer(&five, &[("key", "header:x-user")]),
    );
    let mut moved = 0;
    for k in 0..10_000 {
        let user = format!("user-{k}");
        let (before, after) = (pick_user(&b4, &four, &user), pick_user(&b5, &five, &user));
        if before != after {
            moved += 1;
            assert_eq!(after, Some(4), "{user} moved, but not to the new target");
        }
    }
    assert!(
        (1000..=2500).contains(&moved),
        "the fifth target should take about 1/5 of 10000 keys, at most 1/4; {moved} moved"
    );
}

#[test]
fn a_target_down_or_full_passes_its_keys_on_and_gets_them_back() {
    let set = set(4);
    let b = balancer(&set, &[("key", "header:x-user"), ("load_factor", "1.5")]);
    let home = pick_user(&b, &set, "alice").unwrap_or_else(|| panic!("a target"));

    set.list[home].healthy.store(false, Ordering::Relaxed);
    let elsewhere = pick_user(&b, &set, "alice");
    assert!(elsewhere.is_some_and(|i| i != home), "down: {elsewhere:?}");
    set.list[home].healthy.store(true, Ordering::Relaxed);
    assert_eq!(pick_user(&b, &set, "alice"), Some(home), "back up");

    // Two in flight to `home` and none elsewhere: the bound is ceil(1.5 * 3 / 4) = 2,
    // so a third request to it would go past it.
    let flights: Vec<InFlight> = (0..2).map(|_| InFlight::start(&set, home)).collect();
    let spilled = pick_user(&b, &set, "alice");
    assert!(spilled.is_some_and(|i| i != home), "full: {spilled:?}");
    drop(flights);
    assert_eq!(pick_user(&b, &set, "alice"), Some(home), "drained");
}

#[test]
fn without_a_bound_a_full_target_keeps_its_keys() {
    let set = set(4);
    let b = balancer(&set, &[("key", "header:x-user"), ("load_factor", "off")]);
    let home = pick_user(&b, &set, "alice");
    let _flights: Vec<InFlight> = (0..50)
        .map(|_| InFlight::start(&set, home.unwrap_or(0)))
        .collect();
    assert_eq!(pick_user(&b, &set, "alice"), home);
}

#[test]
fn every_key_kind_reads_its_part_of_the_request() {
    let set = set(8);
    let pick = |key: &str, uri: &'static str, headers: &[(&'static str, &'static str)]| {
        let b = balancer(&set, &[("key", key)]);
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(*n, HeaderValue::from_static(v));
        }
        let uri = Uri::from_static(uri);
        let request = PickRequest {
            uri: &uri,
            headers: &map,
            client: Some([192, 0, 2, 7].into()),
        };
        let b = &b;
        (0..20)
            .map(|_| b.pick(&mut b.local(), &set, &request))
            .collect::<Vec<_>>()
    };
    let same = |picks: Vec<Option<usize>>| picks.windows(2).all(|w| w[0] == w[1]);
    assert!(same(pick("path", "/a/b?x=1", &[])));
    assert!(same(pick("client_ip", "/", &[])));
    assert!(same(pick("query:id", "/?a=1&id=42", &[])));
    assert!(same(pick("cookie:sid", "/", &[("cookie", "a=1; sid=xyz")])));
    // Without the key, requests are spread: 20 picks over 8 targets do not all agree
    // (probability 8^-19 of a false failure).
    assert!(!same(pick("cookie:sid", "/", &[("cookie", "a=1")])));
}

#[test]
fn the_slice_index_finds_what_a_binary_search_finds() {
    let ring = super::Ring::new(&set(7));
    let mut h = 0x1234_5678_9abc_def0u64;
    for _ in 0..10_000 {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let expected = ring.points.partition_point(|&p| p < h);
        assert_eq!(ring.position(h), expected, "hash {h:#x}");
    }
    assert_eq!(ring.position(0), 0);
}

#[test]
fn settings_errors_name_the_line_and_field() {
    let set = set(2);
    let errors = |options: &[(&str, &str)]| -> Vec<String> {
        match Balancer::build("api", &config(options), &set) {
            Ok(_) => vec![],
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    };
    assert_eq!(
        errors(&[]),
        vec!["up.yaml:9: upstreams.api.balance.key: missing required field"]
    );
    let bad = errors(&[
        ("key", "header:bad header"),
        ("load_factor", "0.5"),
        ("seed", "1"),
    ]);
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad[0].starts_with("up.yaml:10: upstreams.api.balance.key: "),
        "{bad:?}"
    );
    assert!(
        bad[1].starts_with("up.yaml:11: upstreams.api.balance.load_factor: "),
        "{bad:?}"
    );
    assert!(
        bad[2].starts_with("up.yaml:12: upstreams.api.balance.seed: unknown"),
        "{bad:?}"
    );
}
