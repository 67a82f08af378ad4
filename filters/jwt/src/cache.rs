//! Verified tokens remembered, so that a client sending the same token again does not
//! pay for its signature again (RS256 and ES256 cost about a millisecond in wasm).
//!
//! Entries are keyed by the SHA-256 of the whole token: a forged token differs in some
//! byte, so it never finds another token's entry (a short non-cryptographic hash could be
//! made to collide). Only tokens that passed every check are remembered, with their
//! claims; `exp` and `nbf` are checked again on every hit, against the time of that
//! request, so a remembered token stops working when it expires. The cache belongs to
//! one configured filter in one VM: a reload (new keys, issuer, …) starts an empty one.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::verify::{Invalid, Verifier};

/// The claims of a verified token, shared between the cache and the request.
pub type Claims = Rc<Map<String, Value>>;

/// A bounded map of verified tokens; the oldest entry goes first when it is full.
#[derive(Debug, Default)]
pub struct TokenCache {
    capacity: usize,
    entries: HashMap<[u8; 32], Entry>,
    /// Insertion order, for eviction: (key, the sequence number it was inserted with).
    /// An entry removed early leaves a stale pair here, skipped when reached.
    order: VecDeque<([u8; 32], u64)>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry {
    claims: Claims,
    seq: u64,
}

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    /// A remembered token, still within `exp` / `nbf`.
    Valid(Claims),
    /// A remembered token that is no longer (or not yet) valid at this time.
    Refused(Invalid),
    /// Not remembered: verify it.
    Miss,
}

/// The SHA-256 of a token, its cache key.
pub fn fingerprint(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// The most tokens it remembers.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The remembered token `key`, with its `exp` / `nbf` checked against `now`. An
    /// expired token is forgotten (it can never be valid again); one not yet valid is
    /// kept.
    pub fn lookup(&mut self, key: &[u8; 32], verifier: &Verifier, now: u64) -> Lookup {
        let Some(entry) = self.entries.get(key) else {
            return Lookup::Miss;
        };
        match verifier.check_time(&entry.claims, now) {
            Ok(()) => Lookup::Valid(Rc::clone(&entry.claims)),
            Err(why) => {
                if why == Invalid::Expired {
                    self.entries.remove(key);
                }
                Lookup::Refused(why)
            }
        }
    }

    /// Remembers the claims of a token that passed every check, evicting the oldest
    /// entries past capacity.
    pub fn insert(&mut self, key: [u8; 32], claims: Claims) {
        if self.capacity == 0 {
            return;
        }
        self.entries.remove(&key);
        while self.entries.len() >= self.capacity {
            let Some((old, seq)) = self.order.pop_front() else {
                // Unreachable while `order` holds a pair for every entry; start over
                // rather than loop.
                self.entries.clear();
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&old);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(key, Entry { claims, seq });
        self.order.push_back((key, seq));
        // Stale pairs (entries removed on expiry or replaced) must not pile up.
        if self.order.len() > 2 * self.capacity.max(1) {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<u64>, nbf: Option<u64>) -> Claims {
        let mut m = Map::new();
        m.insert("sub".into(), Value::String("alice".into()));
        if let Some(e) = exp {
            m.insert("exp".into(), e.into());
        }
        if let Some(n) = nbf {
            m.insert("nbf".into(), n.into());
        }
        Rc::new(m)
    }

    fn verifier(leeway: u64) -> Verifier {
        Verifier {
            leeway,
            ..Verifier::default()
        }
    }

    #[test]
    fn a_hit_is_checked_against_the_time_of_each_request() {
        let v = verifier(0);
        let mut c = TokenCache::new(8);
        let k = fingerprint("t1");
        c.insert(k, claims(Some(2000), Some(1000)));
        assert_eq!(
            c.lookup(&k, &v, 1500),
            Lookup::Valid(claims(Some(2000), Some(1000)))
        );
        assert_eq!(c.lookup(&k, &v, 999), Lookup::Refused(Invalid::NotYetValid));
        assert_eq!(c.len(), 1, "a token not yet valid is kept");
        assert_eq!(c.lookup(&k, &v, 2000), Lookup::Refused(Invalid::Expired));
        assert!(c.is_empty(), "an expired token is forgotten");
        assert_eq!(c.lookup(&k, &v, 1500), Lookup::Miss);
    }

    #[test]
    fn leeway_applies_to_hits() {
        let mut c = TokenCache::new(8);
        let k = fingerprint("t1");
        c.insert(k, claims(Some(2000), None));
        assert!(matches!(
            c.lookup(&k, &verifier(30), 2029),
            Lookup::Valid(_)
        ));
        assert_eq!(
            c.lookup(&k, &verifier(30), 2030),
            Lookup::Refused(Invalid::Expired)
        );
    }

    #[test]
    fn other_tokens_miss() {
        let mut c = TokenCache::new(8);
        c.insert(fingerprint("a.b.c"), claims(None, None));
        assert_eq!(
            c.lookup(&fingerprint("a.b.d"), &verifier(0), 1),
            Lookup::Miss
        );
    }

    #[test]
    fn bounded_and_oldest_out_first() {
        let v = verifier(0);
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert(fingerprint(&format!("t{i}")), claims(None, None));
            assert!(c.len() <= 3, "{} entries with capacity 3", c.len());
            assert!(
                c.order.len() <= 6,
                "{} pairs in the order queue",
                c.order.len()
            );
        }
        for i in 0..7 {
            assert_eq!(
                c.lookup(&fingerprint(&format!("t{i}")), &v, 1),
                Lookup::Miss,
                "t{i}"
            );
        }
        for i in 7..10 {
            assert!(matches!(
                c.lookup(&fingerprint(&format!("t{i}")), &v, 1),
                Lookup::Valid(_)
            ));
        }
    }

    #[test]
    fn reinserting_after_expiry_keeps_the_new_entry() {
        let v = verifier(0);
        let mut c = TokenCache::new(2);
        let (a, b, d) = (fingerprint("a"), fingerprint("b"), fingerprint("d"));
        c.insert(a, claims(Some(10), None));
        assert_eq!(c.lookup(&a, &v, 10), Lookup::Refused(Invalid::Expired));
        c.insert(b, claims(None, None));
        c.insert(a, claims(None, None));
        // Full (b, a): the stale pair of the first `a` must not evict the new one.
        c.insert(d, claims(None, None));
        assert_eq!(c.lookup(&b, &v, 1), Lookup::Miss, "b was the oldest");
        assert!(matches!(c.lookup(&a, &v, 1), Lookup::Valid(_)));
        assert!(matches!(c.lookup(&d, &v, 1), Lookup::Valid(_)));
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut c = TokenCache::new(0);
        c.insert(fingerprint("a"), claims(None, None));
        assert!(c.is_empty());
    }
}
