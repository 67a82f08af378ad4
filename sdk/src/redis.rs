//! Redis calls: state a filter shares with every instance of the proxy (a global
//! counter, a cache, a session store), in the Redis the proxy's configuration names.
//!
//! The calls are Higress's (`proxy_redis_init`, `proxy_redis_call`, the reply through
//! `proxy_on_redis_call_response`), so the module also runs on Higress. A call never
//! blocks: [`call`] sends the command and returns a token; the phase returns
//! [`crate::Action::Wait`]; the reply (or the reason there is none, within the timeout)
//! comes to [`crate::Filter::on_redis_reply`] with that token, which decides the
//! request.
//!
//! ```no_run
//! use portcullis_sdk::{redis, Action, Error, Request};
//! # struct Counter;
//! # impl Counter {
//! fn on_request(&self, _req: &mut Request) -> Result<Action, Error> {
//!     redis::call(redis::DEFAULT_CLUSTER, &[b"INCR", b"hits"])?;
//!     Ok(Action::Wait)
//! }
//!
//! fn on_redis_reply(
//!     &self,
//!     req: &mut Request,
//!     _token: u32,
//!     reply: Result<redis::Value, redis::RedisError>,
//! ) -> Result<Action, Error> {
//!     match reply.ok().and_then(|v| v.as_int()) {
//!         Some(n) => req.add_response_header("x-hits", &n.to_string()),
//!         None => req.add_response_header("x-hits", "unknown"),
//!     }
//!     Ok(Action::Continue)
//! }
//! # }
//! ```

use std::time::Duration;

/// The name Portcullis gives its `redis:` block unless `redis.name` says otherwise.
pub const DEFAULT_CLUSTER: &str = "redis";

/// The buffer holding the reply being delivered (Higress's `BufferTypeRedisCallResponse`).
#[cfg(target_arch = "wasm32")]
const REPLY_BUFFER: u32 = 9;

/// A Redis reply, RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A nil bulk string or array (a missing key).
    Nil,
    /// An integer (`INCR`, `EXISTS`, ...).
    Int(i64),
    /// A bulk string (`GET`).
    Bulk(Vec<u8>),
    /// A simple string (`+OK`).
    Simple(String),
    /// An error reply (`-ERR ...`): Redis refused the command.
    Error(String),
    /// An array (`MGET`, `EVAL` returning a table).
    Array(Vec<Value>),
}

impl Value {
    /// Parses one RESP2 value that fills `bytes`; `None` when it is not one.
    pub fn parse(bytes: &[u8]) -> Option<Value> {
        match parse_at(bytes, 0)? {
            (v, end) if end == bytes.len() => Some(v),
            _ => None,
        }
    }

    /// The value as an integer: an integer reply, or a bulk or simple string of one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            Value::Simple(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The value as bytes: a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(b) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// The value starting at `at`, and where it ends.
fn parse_at(b: &[u8], at: usize) -> Option<(Value, usize)> {
    let line_end = at + b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(b.get(at + 1..line_end)?).ok()?;
    let next = line_end + 2;
    Some(match b.get(at)? {
        b'+' => (Value::Simple(line.to_string()), next),
        b'-' => (Value::Error(line.to_string()), next),
        b':' => (Value::Int(line.parse().ok()?), next),
        b'$' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some((Value::Nil, next));
            }
            let end = next.checked_add(usize::try_from(n).ok()?)?;
            if b.get(end..end + 2)? != b"\r\n" {
                return None;
            }
            (Value::Bulk(b.get(next..end)?.to_vec()), end + 2)
        }
        b'*' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some((Value::Nil, next));
            }
            let mut items = Vec::new();
            let mut pos = next;
            for _ in 0..n {
                let (v, end) = parse_at(b, pos)?;
                items.push(v);
                pos = end;
            }
            (Value::Array(items), pos)
        }
        _ => return None,
    })
}

/// Why a Redis call gave no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisError {
    /// The host refused the call at once (status named): no Redis by that name in its
    /// configuration, a command it does not allow, or no Redis calls at all.
    Refused(String),
    /// No reply came: Redis down or unreachable, or its timeout passed. The host's
    /// reason, when it gives one.
    NoReply(String),
    /// The reply could not be read as RESP.
    BadReply,
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Refused(why) => write!(f, "redis call refused: {why}"),
            RedisError::NoReply(why) => write!(f, "no reply from redis: {why}"),
            RedisError::BadReply => write!(f, "redis' reply is not RESP"),
        }
    }
}

impl std::error::Error for RedisError {}

/// Sets how long calls to `cluster` wait for a reply (`proxy_redis_init`; Portcullis
/// otherwise uses its `redis.timeout`). Call it from [`crate::Filter::new`]. The
/// credentials are the proxy's: Portcullis logs in with its `redis.url`.
pub fn init(cluster: &str, timeout: Duration) -> Result<(), RedisError> {
    let ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    match host::init(cluster, ms) {
        0 => Ok(()),
        status => Err(RedisError::Refused(status_name(status))),
    }
}

/// Sends one command (`args[0]` is its name) to `cluster`; returns the token the reply
/// will come with to [`crate::Filter::on_redis_reply`]. Return
/// [`crate::Action::Wait`] from the phase.
pub fn call(cluster: &str, args: &[&[u8]]) -> Result<u32, RedisError> {
    let query = encode(args);
    let mut token = 0u32;
    match host::call(cluster, &query, &mut token) {
        0 => {
            crate::dispatch::waits_for(token);
            Ok(token)
        }
        status => Err(RedisError::Refused(status_name(status))),
    }
}

/// `args` as a RESP array of bulk strings, the form Redis reads commands in.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads the reply being delivered: `size` bytes of buffer 9, a value when `status` is
/// 0, else the reason there is none.
pub(crate) fn reply(status: u32, size: usize) -> Result<Value, RedisError> {
    let bytes = host::reply_bytes(size);
    if status != 0 {
        return Err(RedisError::NoReply(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    Value::parse(&bytes).ok_or(RedisError::BadReply)
}

fn status_name(status: u32) -> String {
    match status {
        1 => "NOT_FOUND".into(),
        2 => "BAD_ARGUMENT (see the proxy's log)".into(),
        12 => "UNIMPLEMENTED".into(),
        n => format!("status {n}"),
    }
}

#[cfg(target_arch = "wasm32")]
mod host {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_redis_init(
            cluster: *const u8,
            cluster_size: usize,
            username: *const u8,
            username_size: usize,
            password: *const u8,
            password_size: usize,
            timeout_ms: u32,
        ) -> u32;
        fn proxy_redis_call(
            cluster: *const u8,
            cluster_size: usize,
            query: *const u8,
            query_size: usize,
            token: *mut u32,
        ) -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
    }

    pub fn init(cluster: &str, ms: u32) -> u32 {
        // SAFETY: each pointer/length pair describes a live slice for the call.
        unsafe {
            proxy_redis_init(
                cluster.as_ptr(),
                cluster.len(),
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                ms,
            )
        }
    }

    pub fn call(cluster: &str, query: &[u8], token: &mut u32) -> u32 {
        // SAFETY: as above; `token` is a live u32 the host writes.
        unsafe {
            proxy_redis_call(
                cluster.as_ptr(),
                cluster.len(),
                query.as_ptr(),
                query.len(),
                token,
            )
        }
    }

    pub fn reply_bytes(size: usize) -> Vec<u8> {
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len: usize = 0;
        // SAFETY: the host writes a pointer it allocated with this module's
        // `proxy_on_memory_allocate` (a Vec's buffer of `len` bytes) and its length.
        unsafe {
            if proxy_get_buffer_bytes(super::REPLY_BUFFER, 0, size, &mut data, &mut len) != 0
                || data.is_null()
            {
                return Vec::new();
            }
            Vec::from_raw_parts(data, len, len)
        }
    }
}

/// Native builds (unit tests of filter logic): there is no host to call.
#[cfg(not(target_arch = "wasm32"))]
mod host {
    pub fn init(_cluster: &str, _ms: u32) -> u32 {
        12
    }
    pub fn call(_cluster: &str, _query: &[u8], _token: &mut u32) -> u32 {
        12
    }
    pub fn reply_bytes(_size: usize) -> Vec<u8> {
        Vec::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays_and_replies_parse() {
        assert_eq!(
            encode(&[b"INCR", b"hits"]),
            b"*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n"
        );
        assert_eq!(Value::parse(b":42\r\n"), Some(Value::Int(42)));
        assert_eq!(Value::parse(b"$-1\r\n"), Some(Value::Nil));
        assert_eq!(
            Value::parse(b"*3\r\n$2\r\n17\r\n+OK\r\n-ERR no\r\n"),
            Some(Value::Array(vec![
                Value::Bulk(b"17".to_vec()),
                Value::Simple("OK".into()),
                Value::Error("ERR no".into()),
            ]))
        );
        assert_eq!(
            Value::parse(b"$2\r\n17\r\n").and_then(|v| v.as_int()),
            Some(17)
        );
        assert_eq!(Value::parse(b"$5\r\nab\r\n"), None, "short bulk");
        assert_eq!(Value::parse(b":1\r\n:2\r\n"), None, "trailing bytes");
    }
}
