//! Typed wrappers around Portcullis' foreign functions (`proxy_call_foreign_function`).
//!
//! These are the only Portcullis-only calls in the SDK. On a host without them (Envoy,
//! or a Portcullis without the extension) they fail with
//! [`ForeignError::Unavailable`], never a trap.

use proxy_wasm::types::Status;

/// The foreign function holding the shared rate-limit buckets.
pub const RATE_LIMIT: &str = "portcullis.rate_limit";

/// Why a foreign call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignError {
    /// The host has no such function: this filter needs Portcullis.
    Unavailable(&'static str),
    /// The host refused the call (bad argument, internal failure).
    Failed(&'static str, String),
    /// The host's answer could not be decoded (host and SDK versions disagree).
    BadReply(&'static str),
}

impl std::fmt::Display for ForeignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForeignError::Unavailable(name) => write!(
                f,
                "foreign function {name} is not available: this filter needs Portcullis"
            ),
            ForeignError::Failed(name, why) => write!(f, "foreign function {name} failed: {why}"),
            ForeignError::BadReply(name) => {
                write!(
                    f,
                    "foreign function {name} returned a reply this SDK cannot read"
                )
            }
        }
    }
}

impl std::error::Error for ForeignError {}

/// One rate-limit check: take `cost` tokens from the bucket of `key` in the limiter
/// identified by the calling filter's name and (`rate`, `per`, `burst`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitQuery<'a> {
    /// Tokens added per `per`.
    pub rate: u32,
    /// The refill period.
    pub per: std::time::Duration,
    /// Bucket capacity.
    pub burst: u32,
    /// Tokens this request takes (usually 1).
    pub cost: u32,
    /// Most keys tracked at once (0: the host's default); idle ones are evicted first.
    pub max_keys: u32,
    /// The client's key (an IP, a header value, ...); the host hashes it.
    pub key: &'a [u8],
    /// Where the buckets live: this instance (`None`) or Redis, shared by every
    /// instance (`Some`). A Redis check may be answered later: see [`rate_limit_start`].
    pub global: Option<Global>,
}

/// A limit kept in Redis (the proxy's `redis:` block), shared by every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Global {
    /// What to decide when Redis does not answer within its timeout.
    pub on_store_error: OnStoreError,
    /// Tokens an instance takes from Redis at once and spends locally (≥ 1; 1 asks
    /// Redis on every request).
    pub local_budget: u32,
}

/// The decision when the Redis store fails or is too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// Admit the request.
    Allow,
    /// Refuse it (as over the limit).
    Deny,
    /// Check it against this instance's own buckets instead.
    Local,
}

/// How a [`rate_limit_start`] check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// Decided at once.
    Now(RateLimitVerdict),
    /// The host asked Redis: return [`crate::Action::Wait`]; the verdict comes to
    /// [`crate::Filter::on_foreign_reply`] with this token (decode it with
    /// [`RateLimitVerdict::decode`]).
    Later(u32),
}

/// The host's verdict on a [`RateLimitQuery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitVerdict {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket's capacity (`burst`).
    pub limit: u32,
    /// Tokens left after this request.
    pub remaining: u32,
    /// Time until the bucket is full again.
    pub reset: std::time::Duration,
    /// When denied: time until `cost` tokens are available.
    pub retry_after: std::time::Duration,
}

/// Version byte of the rate-limit encoding.
const VERSION: u8 = 1;
/// Version byte of a query that names its store (`global`).
const VERSION_GLOBAL: u8 = 2;
/// The first byte of a reply that comes later (the host's `foreign::DEFERRED`).
const DEFERRED: u8 = 0xFF;

impl RateLimitQuery<'_> {
    /// The compact binary argument: `[1][rate u32][per_ns u64][burst u32][cost u32]
    /// [max_keys u32][key...]`, little-endian; with a [`Global`] store, version 2 has
    /// `[store u8 = 1][on_store_error u8 (0 allow, 1 deny, 2 local)][local_budget u32]`
    /// before the key.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(31 + self.key.len());
        out.push(match self.global {
            None => VERSION,
            Some(_) => VERSION_GLOBAL,
        });
        out.extend_from_slice(&self.rate.to_le_bytes());
        let per_ns = u64::try_from(self.per.as_nanos()).unwrap_or(u64::MAX);
        out.extend_from_slice(&per_ns.to_le_bytes());
        out.extend_from_slice(&self.burst.to_le_bytes());
        out.extend_from_slice(&self.cost.to_le_bytes());
        out.extend_from_slice(&self.max_keys.to_le_bytes());
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

impl RateLimitVerdict {
    /// Decodes the reply: `[1][allowed u8][limit u32][remaining u32][reset_ms u64]
    /// [retry_after_ms u64]`, little-endian.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 26 || bytes[0] != VERSION {
            return None;
        }
        let u32_at = |i: usize| bytes.get(i..i + 4)?.try_into().ok().map(u32::from_le_bytes);
        let u64_at = |i: usize| bytes.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
        Some(Self {
            allowed: bytes[1] == 1,
            limit: u32_at(2)?,
            remaining: u32_at(6)?,
            reset: std::time::Duration::from_millis(u64_at(10)?),
            retry_after: std::time::Duration::from_millis(u64_at(18)?),
        })
    }
}

/// Checks a rate limit in the host's shared buckets (foreign function
/// [`RATE_LIMIT`]).
pub fn rate_limit(query: &RateLimitQuery) -> Result<RateLimitVerdict, ForeignError> {
    match crate::landing::foreign(RATE_LIMIT, &query.encode(), |r| {
        RateLimitVerdict::decode(&r)
    }) {
        Ok(verdict) => verdict.ok_or(ForeignError::BadReply(RATE_LIMIT)),
        Err(Status::NotFound) => Err(ForeignError::Unavailable(RATE_LIMIT)),
        Err(status) => Err(ForeignError::Failed(RATE_LIMIT, format!("{status:?}"))),
    }
}

/// Checks a rate limit that may live in Redis: decided at once (this instance's
/// buckets, its local budget of a global limit, or a denial it already knows), or
/// answered later when the host must ask Redis.
pub fn rate_limit_start(query: &RateLimitQuery) -> Result<Started, ForeignError> {
    let read = |reply: std::borrow::Cow<'_, [u8]>| match &*reply {
        [DEFERRED, t @ ..] => <[u8; 4]>::try_from(t)
            .map(|t| Started::Later(u32::from_le_bytes(t)))
            .map_err(|_| ForeignError::BadReply(RATE_LIMIT)),
        _ => RateLimitVerdict::decode(&reply)
            .map(Started::Now)
            .ok_or(ForeignError::BadReply(RATE_LIMIT)),
    };
    match crate::landing::foreign(RATE_LIMIT, &query.encode(), read) {
        Ok(started) => started,
        Err(Status::NotFound) => Err(ForeignError::Unavailable(RATE_LIMIT)),
        Err(status) => Err(ForeignError::Failed(RATE_LIMIT, format!("{status:?}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn query_layout() {
        let q = RateLimitQuery {
            rate: 100,
            per: std::time::Duration::from_secs(1),
            burst: 20,
            cost: 1,
            max_keys: 0,
            key: b"1.2.3.4",
            global: None,
        };
        let b = q.encode();
        assert_eq!(b.len(), 25 + 7);
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..5], &100u32.to_le_bytes());
        assert_eq!(&b[5..13], &1_000_000_000u64.to_le_bytes());
        assert_eq!(&b[25..], b"1.2.3.4");
        let g = RateLimitQuery {
            global: Some(Global {
                on_store_error: OnStoreError::Local,
                local_budget: 7,
            }),
            ..q
        }
        .encode();
        assert_eq!(g[0], 2);
        assert_eq!(&g[25..27], &[1, 2], "redis store, local fallback");
        assert_eq!(&g[27..31], &7u32.to_le_bytes());
        assert_eq!(&g[31..], b"1.2.3.4");
    }

    #[test]
    fn verdict_layout() {
        let mut b = vec![1u8, 0];
        b.extend_from_slice(&20u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1500u64.to_le_bytes());
        b.extend_from_slice(&10u64.to_le_bytes());
        let v = RateLimitVerdict::decode(&b);
        assert_eq!(
            v,
            Some(RateLimitVerdict {
                allowed: false,
                limit: 20,
                remaining: 0,
                reset: std::time::Duration::from_millis(1500),
                retry_after: std::time::Duration::from_millis(10),
            })
        );
        assert_eq!(RateLimitVerdict::decode(&b[..20]), None);
    }
}
