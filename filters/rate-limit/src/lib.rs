//! `rate-limit`: a token bucket per client key, kept in the host.
//!
//! The buckets live in Portcullis (foreign function `portcullis.rate_limit`), so every
//! worker shares them and they survive a reload that keeps this filter's name, `rate`,
//! `per` and `burst`. Over the limit: 429 with `Retry-After` and the `RateLimit-*`
//! headers; with `headers: true` those headers are on allowed responses too. With
//! `store: redis` the buckets are in Redis, one limit across every instance: a check
//! that must ask Redis pauses the request and is decided when the answer comes
//! (`on_foreign_reply`). See `docs/filters/rate-limit.md`.

use portcullis_sdk::config::Duration;
use portcullis_sdk::foreign::{
    self, Global, OnStoreError, RateLimitQuery, RateLimitVerdict, Started,
};
use portcullis_sdk::{Action, ConfigError, Error, Filter, LocalResponse, Request};
use serde::Deserialize;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    rate: u32,
    #[serde(default = "second")]
    per: Duration,
    burst: Option<u32>,
    #[serde(default = "client_ip")]
    key: String,
    #[serde(default)]
    headers: bool,
    #[serde(default)]
    max_keys: u32,
    #[serde(default = "too_many")]
    status: u32,
    #[serde(default)]
    store: Store,
    on_store_error: Option<String>,
    local_budget: Option<u32>,
}

/// Where the buckets live.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Store {
    /// In this Portcullis: a limit per instance.
    #[default]
    Local,
    /// In Redis (the proxy's `redis:` block): one limit across every instance.
    Redis,
}

fn second() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}

fn client_ip() -> String {
    "client_ip".into()
}

fn too_many() -> u32 {
    429
}

/// What identifies a client's bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// The peer's IP address.
    ClientIp,
    /// A request header's value (requests without it share one bucket).
    Header(String),
    /// The `:authority` without its port.
    Host,
    /// The route's name.
    Route,
    /// One bucket for everything through this filter.
    Global,
}

impl Key {
    /// Parses `client_ip`, `header:NAME`, `host`, `route` or `global`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "client_ip" => Key::ClientIp,
            "host" => Key::Host,
            "route" => Key::Route,
            "global" => Key::Global,
            _ => match text.strip_prefix("header:") {
                Some(name) if !name.trim().is_empty() => {
                    Key::Header(name.trim().to_ascii_lowercase())
                }
                Some(_) => {
                    return Err("`header:` needs a header name, e.g. header:x-api-key".into());
                }
                None => {
                    return Err(format!(
                        "unknown key `{text}`: expected client_ip, header:NAME, host, route or global"
                    ));
                }
            },
        })
    }
}

/// The validated filter.
#[derive(Debug)]
pub struct RateLimit {
    rate: u32,
    per: std::time::Duration,
    burst: u32,
    key: Key,
    headers: bool,
    max_keys: u32,
    status: u32,
    global: Option<Global>,
}

/// The default `local_budget`: 5% of the burst, 1 to 100 tokens. Small enough that
/// tokens an idle instance holds barely dent the limit, large enough that a busy one
/// asks Redis once per several requests.
fn default_budget(burst: u32) -> u32 {
    (burst / 20).clamp(1, 100)
}

fn on_store_error(text: &str) -> Result<OnStoreError, String> {
    match text {
        "allow" => Ok(OnStoreError::Allow),
        "deny" => Ok(OnStoreError::Deny),
        "local" => Ok(OnStoreError::Local),
        _ => Err(format!(
            "unknown policy `{text}`: expected allow, deny or local"
        )),
    }
}

/// Whole seconds, rounded up, so a client that waits that long is let through.
fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `RateLimit-*` headers (IETF draft names) describing `v`.
pub fn limit_headers(v: &RateLimitVerdict) -> Vec<(String, String)> {
    vec![
        ("ratelimit-limit".into(), v.limit.to_string()),
        ("ratelimit-remaining".into(), v.remaining.to_string()),
        ("ratelimit-reset".into(), ceil_secs(v.reset).to_string()),
    ]
}

/// The 429 (or configured status) answer for a denied request.
pub fn denial(status: u32, v: &RateLimitVerdict) -> LocalResponse {
    let mut r = LocalResponse::new(status)
        .body("too many requests\n")
        .header("retry-after", ceil_secs(v.retry_after).max(1).to_string());
    r.headers.extend(limit_headers(v));
    r
}

impl RateLimit {
    /// The bucket key of a request, from its parts (`host` with any port).
    pub fn key_of<'a>(
        &self,
        client_ip: &'a str,
        header: Option<&'a str>,
        host: &'a str,
        route: &'a str,
    ) -> &'a [u8] {
        match self.key {
            Key::ClientIp => client_ip.as_bytes(),
            Key::Header(_) => header.unwrap_or("").as_bytes(),
            Key::Host => strip_port(host).as_bytes(),
            Key::Route => route.as_bytes(),
            Key::Global => b"",
        }
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    }
}

impl Filter for RateLimit {
    type Config = Config;
    // No on_response: response headers, if any, are queued in the request phase.
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.rate == 0 {
            return Err(ConfigError::new("rate", "must be at least 1"));
        }
        if c.per.0.is_zero() {
            return Err(ConfigError::new("per", "must be longer than 0"));
        }
        let burst = c.burst.unwrap_or(c.rate);
        if burst == 0 {
            return Err(ConfigError::new(
                "burst",
                "must be at least 1 (the bucket's capacity)",
            ));
        }
        if !(100..=599).contains(&c.status) {
            return Err(ConfigError::new(
                "status",
                "must be an HTTP status (100-599)",
            ));
        }
        let global = match c.store {
            Store::Local => {
                if c.on_store_error.is_some() {
                    return Err(ConfigError::new(
                        "on_store_error",
                        "applies only with `store: redis`",
                    ));
                }
                if c.local_budget.is_some() {
                    return Err(ConfigError::new(
                        "local_budget",
                        "applies only with `store: redis`",
                    ));
                }
                None
            }
            Store::Redis => Some(Global {
                on_store_error: on_store_error(c.on_store_error.as_deref().unwrap_or("local"))
                    .map_err(|m| ConfigError::new("on_store_error", m))?,
                local_budget: match c.local_budget {
                    Some(0) => {
                        return Err(ConfigError::new(
                            "local_budget",
                            "must be at least 1 (1 asks Redis on every request)",
                        ));
                    }
                    Some(n) if n > burst => {
                        return Err(ConfigError::new(
                            "local_budget",
                            format!("must not exceed the burst ({burst})"),
                        ));
                    }
                    Some(n) => n,
                    None => default_budget(burst),
                },
            }),
        };
        Ok(Self {
            global,
            rate: c.rate,
            per: c.per.0,
            burst,
            key: Key::parse(&c.key).map_err(|m| ConfigError::new("key", m))?,
            headers: c.headers,
            max_keys: c.max_keys,
            status: c.status,
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        let (ip, header, host, route);
        let key: &[u8] = match &self.key {
            Key::ClientIp => {
                // The peer's address as the host writes it (`ip:port`, `[v6]:port`)
                // with the port cut off: one client, one key, without parsing the
                // address and formatting it back on every request.
                ip = req
                    .property_str(&["source", "address"])?
                    .unwrap_or_default();
                strip_port(&ip).as_bytes()
            }
            Key::Header(name) => {
                header = req.header(name)?.unwrap_or_default();
                header.as_bytes()
            }
            Key::Host => {
                host = req.authority()?;
                strip_port(&host).as_bytes()
            }
            Key::Route => {
                route = req.route_name()?;
                route.as_bytes()
            }
            Key::Global => b"",
        };
        let query = RateLimitQuery {
            rate: self.rate,
            per: self.per,
            burst: self.burst,
            cost: 1,
            max_keys: self.max_keys,
            key,
            global: self.global,
        };
        let verdict = match self.global {
            // The local store answers at once, by the same call as always.
            None => foreign::rate_limit(&query)?,
            Some(_) => match foreign::rate_limit_start(&query)? {
                Started::Now(v) => v,
                Started::Later(_) => return Ok(Action::Wait),
            },
        };
        Ok(self.decide(req, &verdict))
    }

    fn on_foreign_reply(
        &self,
        req: &mut Request,
        _token: u32,
        reply: &[u8],
    ) -> Result<Action, Error> {
        let verdict = RateLimitVerdict::decode(reply)
            .ok_or(foreign::ForeignError::BadReply(foreign::RATE_LIMIT))?;
        Ok(self.decide(req, &verdict))
    }
}

impl RateLimit {
    /// Refuses the request, or lets it go on with the `RateLimit-*` headers if asked.
    fn decide(&self, req: &mut Request, verdict: &RateLimitVerdict) -> Action {
        if !verdict.allowed {
            return Action::Respond(denial(self.status, verdict));
        }
        if self.headers {
            for (n, v) in limit_headers(verdict) {
                req.add_response_header(n, v);
            }
        }
        Action::Continue
    }
}

portcullis_sdk::export_filter!(RateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as D;

    fn filter(json: &str) -> Result<RateLimit, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(RateLimit::new)
    }

    #[test]
    fn config_shapes() {
        let f = filter(r#"{"rate":100,"per":"1s","burst":20,"key":"client_ip","headers":true}"#)
            .unwrap();
        assert_eq!(
            (f.rate, f.per, f.burst, f.headers),
            (100, D::from_secs(1), 20, true)
        );
        let f = filter(r#"{"rate":5,"per":"1m","key":"header:X-Api-Key"}"#).unwrap();
        assert_eq!(f.burst, 5, "burst defaults to rate");
        assert_eq!(f.key, Key::Header("x-api-key".into()));
        assert_eq!(
            filter(r#"{"rate":5,"key":"global"}"#).unwrap().key,
            Key::Global
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert_eq!(filter(r#"{"rate":0}"#).unwrap_err().field, "rate");
        assert_eq!(
            filter(r#"{"rate":1,"burst":0}"#).unwrap_err().field,
            "burst"
        );
        assert_eq!(filter(r#"{"rate":1,"per":"0s"}"#).unwrap_err().field, "per");
        assert_eq!(
            filter(r#"{"rate":1,"per":"soon"}"#).unwrap_err().field,
            "per"
        );
        assert_eq!(
            filter(r#"{"rate":1,"key":"cookie"}"#).unwrap_err().field,
            "key"
        );
        assert_eq!(
            filter(r#"{"rate":1,"key":"header:"}"#).unwrap_err().field,
            "key"
        );
        assert_eq!(filter(r#"{"rate":"lots"}"#).unwrap_err().field, "rate");
        assert!(filter(r#"{}"#).unwrap_err().message.contains("rate"));
    }

    #[test]
    fn stores() {
        let f = filter(r#"{"rate":200,"store":"redis"}"#).unwrap();
        assert_eq!(
            f.global,
            Some(Global {
                on_store_error: OnStoreError::Local,
                local_budget: 10
            })
        );
        let f = filter(r#"{"rate":5,"store":"redis","on_store_error":"deny","local_budget":1}"#)
            .unwrap();
        assert_eq!(
            f.global,
            Some(Global {
                on_store_error: OnStoreError::Deny,
                local_budget: 1
            })
        );
        assert_eq!(filter(r#"{"rate":5}"#).unwrap().global, None);
        for (json, field) in [
            (r#"{"rate":5,"store":"etcd"}"#, "store"),
            (r#"{"rate":5,"on_store_error":"deny"}"#, "on_store_error"),
            (r#"{"rate":5,"local_budget":2}"#, "local_budget"),
            (
                r#"{"rate":5,"store":"redis","on_store_error":"maybe"}"#,
                "on_store_error",
            ),
            (
                r#"{"rate":5,"store":"redis","local_budget":0}"#,
                "local_budget",
            ),
            (
                r#"{"rate":5,"store":"redis","local_budget":6}"#,
                "local_budget",
            ),
        ] {
            assert_eq!(filter(json).unwrap_err().field, field, "{json}");
        }
    }

    #[test]
    fn keys() {
        let f = filter(r#"{"rate":1,"key":"host"}"#).unwrap();
        assert_eq!(
            f.key_of("1.2.3.4", None, "Example.com:8080", "r"),
            b"Example.com"
        );
        assert_eq!(f.key_of("1.2.3.4", None, "[::1]:80", "r"), b"[::1]");
        assert_eq!(f.key_of("1.2.3.4", None, "[::1]", "r"), b"[::1]");
        let f = filter(r#"{"rate":1,"key":"header:x-k"}"#).unwrap();
        assert_eq!(f.key_of("1.2.3.4", None, "h", "r"), b"");
        assert_eq!(f.key_of("1.2.3.4", Some("k1"), "h", "r"), b"k1");
    }

    #[test]
    fn denial_headers() {
        let v = RateLimitVerdict {
            allowed: false,
            limit: 20,
            remaining: 0,
            reset: D::from_millis(1500),
            retry_after: D::from_millis(10),
        };
        let r = denial(429, &v);
        assert_eq!(r.status, 429);
        assert_eq!(r.header_value("retry-after"), Some("1"));
        assert_eq!(r.header_value("ratelimit-limit"), Some("20"));
        assert_eq!(r.header_value("ratelimit-remaining"), Some("0"));
        assert_eq!(r.header_value("ratelimit-reset"), Some("2"));
    }
}
