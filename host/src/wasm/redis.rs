//! Redis for filters: Higress's host calls `proxy_redis_init` and `proxy_redis_call`,
//! answered with `proxy_on_redis_call_response(root, token, status, size)` and the
//! reply in buffer 9, so that a filter keeps state shared by every instance.
//!
//! The wasm host reaches no Redis by itself: the entry points give the runtime a
//! [`RedisCalls`] (the proxy's `redis:` block, see `crate::extensions`). A call is sent
//! once the guest's callback returns and its answer is delivered as an `http_call`'s
//! is: the stream that made it waits (paused), the VM does not.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The `status` of `proxy_on_redis_call_response` when no reply came (Redis down or
/// unreachable, the timeout passed, the connection broke): proxy-wasm's
/// `INTERNAL_FAILURE`. Higress's SDKs treat every non-zero status as "cannot reach
/// Redis"; here buffer 9 then holds the reason, in words.
pub const FAILED: u32 = 10;

/// What a Redis call came back with: Redis' reply, RESP-encoded as it was sent
/// (an error reply such as `-ERR …` included), or why there is none.
pub type Reply = Result<Vec<u8>, String>;

/// A Redis call on its way.
pub type RedisFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// Why a call was refused at once (the guest's `proxy_redis_call` returns
/// `BAD_ARGUMENT`; the reason is logged).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The Redis servers filters may reach, by the names the configuration gives them.
pub trait RedisCalls: Send + Sync {
    /// Sends `query` — one command, a RESP array of bulk strings as Higress's SDKs
    /// encode it — to the Redis named `cluster`; the reply must come within
    /// `timeout`, or the configured one when `None`.
    fn call(
        &self,
        cluster: &str,
        query: &[u8],
        timeout: Option<Duration>,
    ) -> Result<RedisFuture, Refused>;
}
