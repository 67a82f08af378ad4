//! The host extensions of the proxy: the foreign functions every filter may call with
//! `proxy_call_foreign_function`. The wasm host knows none of them; the entry points
//! (`cli` for `run` and `check`, `testkit` for `filter-test`) make their runtime here,
//! so that a new extension is a module of its own and one line below.

use crate::ratelimit::{self, RateLimits};
use crate::wasm::Runtime;

/// The wasm runtime with every host extension of the proxy: the rate limiter's shared
/// buckets ([`ratelimit::FOREIGN_NAME`]) and filters' Redis calls, on the connections
/// of the `redis:` block.
pub fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new()?
        .with_extension(ratelimit::FOREIGN_NAME, RateLimits::shared())
        .with_redis(RateLimits::shared()))
}
