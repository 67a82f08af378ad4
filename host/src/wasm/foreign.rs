//! Foreign functions: host extensions a filter calls with
//! `proxy_call_foreign_function(name, args)`.
//!
//! The wasm host knows none of them: the entry points (`portcullis run` / `check`, the
//! test kit) put each in the [`Extensions`] of the [`Runtime`](super::Runtime) they make
//! (see `crate::extensions`), and every VM of every plugin of that runtime reaches them
//! by name. A call to an unknown name returns `NOT_FOUND` to the guest; an error returns
//! `BAD_ARGUMENT` or `INTERNAL_FAILURE` and is logged with the filter's name.
//!
//! A function whose answer needs the network (the rate limiter's Redis store) answers
//! [later](Answer::Later): the guest gets [`DEFERRED`] and a token at once, returns
//! `Pause`, and the host delivers the answer with `proxy_on_foreign_function(context,
//! token, size)` once it arrives (readable as buffer `CallData`), as an `http_call`'s
//! response is delivered. No guest call ever waits on the network.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::redis::RedisCalls;

/// The first byte of the reply to a call answered later; four bytes follow, the token
/// (little-endian u32) that `proxy_on_foreign_function` will carry.
pub const DEFERRED: u8 = 0xFF;

/// An answer on its way: its bytes, as [`ForeignFunction::call`] would have returned.
pub type ForeignFuture = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// What a foreign function answered.
pub enum Answer {
    /// The reply, at once.
    Now(Vec<u8>),
    /// The reply once this future resolves: the stream waits for it, the guest does not.
    Later(ForeignFuture),
}

/// Why a foreign function refused a call.
#[derive(Debug, thiserror::Error)]
pub enum ForeignError {
    /// The arguments could not be understood (the guest gets `BAD_ARGUMENT`).
    #[error("bad arguments: {0}")]
    BadArgument(String),
    /// The function failed (the guest gets `INTERNAL_FAILURE`).
    #[error("{0}")]
    Failed(String),
}

/// A host extension. It runs on the worker thread inside the guest's callback, so it
/// must be quick and must not block. State that must outlive reloads (the rate
/// limiter's buckets) lives in the extension, which every snapshot shares.
pub trait ForeignFunction: Send + Sync {
    /// Answers a call from `filter` (the filter's config name) with `args`.
    fn call(&self, filter: &str, args: &[u8]) -> Result<Vec<u8>, ForeignError>;

    /// Answers a call that may need to wait (the network): at once, or later. By
    /// default, [`ForeignFunction::call`] at once.
    fn answer(&self, filter: &str, args: &[u8]) -> Result<Answer, ForeignError> {
        self.call(filter, args).map(Answer::Now)
    }
}

/// The host extensions of one runtime: foreign functions by the name guests call them
/// with, and the Redis servers `proxy_redis_call` reaches. Fixed once the runtime is
/// made; each VM holds a handle (`Arc` clones).
#[derive(Clone, Default)]
pub struct Extensions {
    functions: Arc<HashMap<String, Arc<dyn ForeignFunction>>>,
    redis: Option<Arc<dyn RedisCalls>>,
}

impl Extensions {
    /// These extensions and `f` under `name` (replacing one of the same name).
    pub fn with(mut self, name: &str, f: Arc<dyn ForeignFunction>) -> Self {
        Arc::make_mut(&mut self.functions).insert(name.to_string(), f);
        self
    }

    /// These extensions, with `redis` answering filters' Redis calls.
    pub fn with_redis(mut self, redis: Arc<dyn RedisCalls>) -> Self {
        self.redis = Some(redis);
        self
    }

    /// The extension registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ForeignFunction>> {
        self.functions.get(name)
    }

    /// What answers filters' Redis calls, if anything does.
    pub fn redis(&self) -> Option<&Arc<dyn RedisCalls>> {
        self.redis.as_ref()
    }

    /// The names registered, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.functions.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}
