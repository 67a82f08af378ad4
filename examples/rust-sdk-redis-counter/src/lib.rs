//! A request counter shared by every proxy: `INCR` in Redis, written with
//! `portcullis-sdk`'s Redis calls.
//!
//! ```yaml
//! config: { key: "portcullis:example:hits", timeout: 200ms, header: x-hits, cluster: redis }
//! ```
//!
//! Each request increments `key` in the Redis the proxy's `redis:` block names and goes
//! on once Redis answered; the response carries the count after it in `header`. The
//! request waits for the reply (paused, not blocking the proxy). When no reply comes
//! within `timeout` (Redis down, unreachable or slow) the request still goes on, with
//! `header: unavailable` and the reason in `<header>-error`: a counter is not worth
//! refusing traffic for.

use std::time::Duration;

use portcullis_sdk::config::Duration as ConfigDuration;
use portcullis_sdk::redis::{self, RedisError, Value};
use portcullis_sdk::{Action, ConfigError, Error, Filter, Request};
use serde::Deserialize;

/// The configuration as users write it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The Redis key counted up.
    key: String,
    /// How long a request waits for Redis at most.
    #[serde(default = "default_timeout")]
    timeout: ConfigDuration,
    /// The response header that carries the count.
    #[serde(default = "default_header")]
    header: String,
    /// The name of the Redis in the proxy's configuration.
    #[serde(default = "default_cluster")]
    cluster: String,
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(200))
}

fn default_header() -> String {
    "x-hits".into()
}

fn default_cluster() -> String {
    redis::DEFAULT_CLUSTER.into()
}

struct Counter {
    key: Vec<u8>,
    header: String,
    cluster: String,
}

impl Filter for Counter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if config.key.is_empty() {
            return Err(ConfigError::new("key", "must not be empty"));
        }
        if config.timeout.0.is_zero() {
            return Err(ConfigError::new("timeout", "must be longer than 0"));
        }
        redis::init(&config.cluster, config.timeout.0)
            .map_err(|e| ConfigError::new("cluster", e.to_string()))?;
        Ok(Self {
            key: config.key.into_bytes(),
            header: config.header.to_ascii_lowercase(),
            cluster: config.cluster,
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        match redis::call(&self.cluster, &[b"INCR", &self.key]) {
            Ok(_) => Ok(Action::Wait),
            // Refused at once (say, no Redis by that name): counted as unavailable.
            Err(e) => Ok(self.unavailable(req, &e)),
        }
    }

    fn on_redis_reply(
        &self,
        req: &mut Request,
        _token: u32,
        reply: Result<Value, RedisError>,
    ) -> Result<Action, Error> {
        match reply {
            Ok(Value::Int(n)) => {
                req.add_response_header(self.header.clone(), n.to_string());
                Ok(Action::Continue)
            }
            Ok(Value::Error(e)) => Ok(self.unavailable(req, &RedisError::Refused(e))),
            Ok(other) => Ok(self.unavailable(
                req,
                &RedisError::Refused(format!("INCR answered {other:?}")),
            )),
            Err(e) => Ok(self.unavailable(req, &e)),
        }
    }
}

impl Counter {
    fn unavailable(&self, req: &mut Request, e: &RedisError) -> Action {
        req.add_response_header(self.header.clone(), "unavailable");
        req.add_response_header(format!("{}-error", self.header), e.to_string());
        Action::Continue
    }
}

portcullis_sdk::export_filter!(Counter);
