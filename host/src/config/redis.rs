//! `redis:`: the Redis server that global rate limits (`rate-limit` with
//! `store: redis`) keep their buckets in, shared by every Portcullis that names it, and
//! that filters' own Redis calls reach by its `name`.

use std::time::Duration;

use super::walk::{Cx, Field, Fields};
use super::{ConfigError, FilterConfig, FilterSource, RedisConfig};

/// How long a check waits for Redis before its filter's `on_store_error` decides,
/// when `redis.timeout` does not say: a few round trips on a LAN.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(5);

/// Connections to Redis when `redis.pool` does not say. Each is multiplexed (every
/// worker's checks pipeline on it), so a few carry a whole proxy's load.
pub const REDIS_POOL: usize = 2;

/// The name filters reach the `redis:` block by when `redis.name` does not say.
pub const REDIS_NAME: &str = "redis";

/// Decodes `redis: { url, timeout, pool, name }`.
pub(crate) fn redis(cx: &mut Cx, field: &Field) -> Option<RedisConfig> {
    let mut f = Fields::new(cx, field)?;
    let url = f.require(cx, "url").and_then(|v| {
        let url = v.string(cx)?;
        match check_url(&url) {
            Ok(()) => Some(url),
            Err(why) => {
                v.error(cx, why);
                None
            }
        }
    });
    let timeout = f.take("timeout").map(|v| {
        let d = v.duration(cx)?;
        if d.is_zero() {
            v.error(cx, "must be longer than 0");
            return None;
        }
        Some(d)
    });
    let pool = f.take("pool").map(|v| v.int(cx, 1, 64));
    let name = f.take("name").map(|v| {
        let name = v.string(cx)?;
        if name.is_empty() {
            v.error(cx, "must not be empty");
            return None;
        }
        Some(name)
    });
    f.finish(cx);
    Some(RedisConfig {
        url: url?,
        timeout: timeout.unwrap_or(Some(REDIS_TIMEOUT))?,
        pool: pool.unwrap_or(Some(REDIS_POOL as i64))? as usize,
        name: name.unwrap_or_else(|| Some(REDIS_NAME.into()))?,
        origin: cx.origin(field.line),
    })
}

/// A `redis://` or `rediss://` URL the client can connect with.
fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!(
            "`{}` is not a Redis URL: expected redis://HOST:PORT[/DB] or rediss://HOST:PORT[/DB]",
            redact(url)
        ));
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|e| format!("invalid Redis URL `{}`: {e}", redact(url)))
}

/// `url` without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// A `rate-limit` filter configured `store: redis` needs the `redis:` block: said at
/// the filter, naming its `config.store`.
pub(crate) fn check_stores(
    filters: &[FilterConfig],
    redis: Option<&RedisConfig>,
    errors: &mut Vec<ConfigError>,
) {
    if redis.is_some() {
        return;
    }
    for f in filters {
        if f.source != FilterSource::Builtin("rate-limit".into()) {
            continue;
        }
        let store = serde_json::from_slice::<serde_json::Value>(&f.config)
            .ok()
            .and_then(|c| c.get("store").and_then(|s| s.as_str()).map(str::to_owned));
        if store.as_deref() == Some("redis") {
            errors.push(ConfigError {
                file: f.origin.file.clone(),
                line: f.origin.line,
                path: format!("filters.{}.config.store", f.name),
                message:
                    "`store: redis` needs a top-level `redis: { url: redis://HOST:PORT }` block"
                        .into(),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_url("redis://127.0.0.1:6379").is_ok());
        assert!(check_url("rediss://cache.example:6380/2").is_ok());
        let e = check_url("http://x").unwrap_err();
        assert!(e.contains("not a Redis URL"), "{e}");
        let e = check_url("memcached://u:secret@x").unwrap_err();
        assert!(!e.contains("secret"), "the password is not shown: {e}");
        assert_eq!(redact("redis://u:pw@h:1"), "redis://u:***@h:1");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
