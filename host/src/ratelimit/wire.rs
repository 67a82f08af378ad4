//! The foreign function's argument and reply encoding: fixed-layout little-endian,
//! because it is paid on every request (JSON would cost more than the check).
//!
//! Query: `[version=1][rate u32][per_ns u64][burst u32][cost u32][max_keys u32][key..]`.
//! Reply: `[version=1][allowed u8][limit u32][remaining u32][reset_ms u64][retry_after_ms u64]`.
//! The guest side is `portcullis_sdk::foreign`.

use super::{Params, Verdict};

const VERSION: u8 = 1;
const HEADER: usize = 25;

/// A malformed query.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the fixed part, or another version: guest SDK and host disagree.
    #[error("rate-limit query of {0} bytes is not version-1 (expected at least 25 bytes)")]
    Malformed(usize),
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
        if b.len() < HEADER || b.first() != Some(&VERSION) {
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
        Ok(Query {
            params,
            cost: u32_at(b, 17),
            key: b.get(HEADER..).unwrap_or_default(),
        })
    }

    /// Encodes a query (what the guest SDK sends; used by tests and benches).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.key.len());
        out.push(VERSION);
        out.extend_from_slice(&self.params.rate.to_le_bytes());
        out.extend_from_slice(&self.params.per_ns.to_le_bytes());
        out.extend_from_slice(&self.params.burst.to_le_bytes());
        out.extend_from_slice(&self.cost.to_le_bytes());
        out.extend_from_slice(&self.params.max_keys.to_le_bytes());
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
        };
        assert_eq!(Query::decode(&q.encode()), Ok(q));
        let mut zero = q;
        zero.params.rate = 0;
        assert_eq!(Query::decode(&zero.encode()), Err(WireError::Zero));
        let mut v2 = q.encode();
        v2[0] = 2;
        assert_eq!(Query::decode(&v2), Err(WireError::Malformed(28)));
    }
}
