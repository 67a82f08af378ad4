//! The foreign function's argument and reply encoding: fixed-layout little-endian,
//! because it is paid on every request (JSON would cost more than the check).
//!
//! Query: `[version=1][rate u32][per_ns u64][burst u32][cost u32][max_keys u32][key..]`;
//! version 2 (a limit kept in Redis) has `[store u8 = 1][on_store_error u8]
//! [local_budget u32]` before the key.
//! Reply: `[version=1][allowed u8][limit u32][remaining u32][reset_ms u64][retry_after_ms u64]`,
//! or, for a check answered later, `[0xFF][token u32]` (`crate::wasm::foreign::DEFERRED`).
//! The guest side is `portcullis_sdk::foreign`.

use super::{Params, Verdict};

const VERSION: u8 = 1;
const HEADER: usize = 25;
const VERSION_GLOBAL: u8 = 2;
const HEADER_GLOBAL: usize = 31;

/// What decides a check whose Redis store failed or did not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Admit it.
    Allow,
    /// Refuse it.
    Deny,
    /// Check it against this instance's own buckets.
    Local,
}

impl OnStoreError {
    /// The name in the configuration and the metric's `policy` label.
    pub fn name(self) -> &'static str {
        match self {
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
            OnStoreError::Local => "local",
        }
    }
}

/// A limit kept in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    /// The policy when Redis fails.
    pub on_store_error: OnStoreError,
    /// Tokens taken from Redis at once and spent locally.
    pub local_budget: u32,
}

/// A malformed query.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed part, or another version: guest SDK and host disagree.
    #[error("rate-limit query of {0} bytes is neither version 1 (at least 25 bytes) nor 2 (31)")]
    Malformed(usize),
    /// A store or `on_store_error` code this host does not know.
    #[error("rate-limit query with an unknown store or on_store_error")]
    UnknownStore,
    /// `rate`, `per` or `burst` is zero.
    #[error("rate-limit query with zero rate, period or burst")]
    Zero,
}

/// A decoded query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query<'a> {
    /// The limiter's parameters.
    pub params: Params,
    /// Tokens to take.
    pub cost: u32,
    /// The client key.
    pub key: &'a [u8],
    /// Kept in Redis (version 2), or in this instance.
    pub global: Option<Global>,
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    b.get(i..i + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    b.get(i..i + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

impl<'a> Query<'a> {
    /// Decodes a guest's argument.
    pub fn decode(b: &'a [u8]) -> Result<Self, WireError> {
        let header = match b.first() {
            Some(&VERSION) => HEADER,
            Some(&VERSION_GLOBAL) => HEADER_GLOBAL,
            _ => return Err(WireError::Malformed(b.len())),
        };
        if b.len() < header {
            return Err(WireError::Malformed(b.len()));
        }
        let params = Params {
            rate: u32_at(b, 1),
            per_ns: u64_at(b, 5),
            burst: u32_at(b, 13),
            max_keys: u32_at(b, 21),
        };
        if params.rate == 0 || params.per_ns == 0 || params.burst == 0 {
            return Err(WireError::Zero);
        }
        let global = if header == HEADER_GLOBAL {
            let on_store_error = match b.get(26) {
                Some(0) => OnStoreError::Allow,
                Some(1) => OnStoreError::Deny,
                Some(2) => OnStoreError::Local,
                _ => return Err(WireError::UnknownStore),
            };
            if b.get(25) != Some(&1) {
                return Err(WireError::UnknownStore);
            }
            Some(Global {
                on_store_error,
                local_budget: u32_at(b, 27).max(1),
            })
        } else {
            None
        };
        Ok(Query {
            params,
            cost: u32_at(b, 17),
            key: b.get(header..).unwrap_or_default(),
            global,
        })
    }

    /// Encodes a query (what the guest SDK sends; used by tests and benches).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_GLOBAL + self.key.len());
        out.push(if self.global.is_some() {
            VERSION_GLOBAL
        } else {
            VERSION
        });
        out.extend_from_slice(&self.params.rate.to_le_bytes());
        out.extend_from_slice(&self.params.per_ns.to_le_bytes());
        out.extend_from_slice(&self.params.burst.to_le_bytes());
        out.extend_from_slice(&self.cost.to_le_bytes());
        out.extend_from_slice(&self.params.max_keys.to_le_bytes());
        if let Some(g) = self.global {
            out.push(1);
            out.push(match g.on_store_error {
                OnStoreError::Allow => 0,
                OnStoreError::Deny => 1,
                OnStoreError::Local => 2,
            });
            out.extend_from_slice(&g.local_budget.to_le_bytes());
        }
        out.extend_from_slice(self.key);
        out
    }
}

/// Encodes a verdict as the reply.
pub fn encode_verdict(v: &Verdict) -> Vec<u8> {
    let ms = |ns: u64| ns.div_ceil(1_000_000);
    let mut out = Vec::with_capacity(26);
    out.push(VERSION);
    out.push(u8::from(v.allowed));
    out.extend_from_slice(&v.limit.to_le_bytes());
    out.extend_from_slice(&v.remaining.to_le_bytes());
    out.extend_from_slice(&ms(v.reset_ns).to_le_bytes());
    out.extend_from_slice(&ms(v.retry_after_ns).to_le_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip() {
        let q = Query {
            params: Params {
                rate: 7,
                per_ns: 3,
                burst: 9,
                max_keys: 11,
            },
            cost: 2,
            key: b"key",
            global: None,
        };
        assert_eq!(Query::decode(&q.encode()), Ok(q));
        let g = Query {
            global: Some(Global {
                on_store_error: OnStoreError::Deny,
                local_budget: 4,
            }),
            ..q
        };
        assert_eq!(Query::decode(&g.encode()), Ok(g));
        let mut bad = g.encode();
        bad[26] = 9;
        assert_eq!(Query::decode(&bad), Err(WireError::UnknownStore));
        let mut zero = q;
        zero.params.rate = 0;
        assert_eq!(Query::decode(&zero.encode()), Err(WireError::Zero));
        let mut v2 = q.encode();
        v2[0] = 2;
        assert_eq!(Query::decode(&v2), Err(WireError::Malformed(28)));
    }
}
