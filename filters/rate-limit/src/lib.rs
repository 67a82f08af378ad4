//! `rate-limit`: a token bucket per client key, kept in the host.
//!
//! The buckets live in Portcullis (foreign function `portcullis.rate_limit`), so every
//! worker shares them and they survive a reload that keeps this filter's name, `rate`,
//! `per` and `burst`. Over the limit: 429 with `Retry-After` and the `RateLimit-*`
//! headers; with `headers: true` those headers are on allowed responses too. See
//! `docs/filters/rate-limit.md`.

use portcullis_sdk::config::Duration;
use portcullis_sdk::foreign::{self, RateLimitQuery, RateLimitVerdict};
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
        Ok(Self {
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
        let verdict = foreign::rate_limit(&RateLimitQuery {
            rate: self.rate,
            per: self.per,
            burst: self.burst,
            cost: 1,
            max_keys: self.max_keys,
            key,
        })?;
        if !verdict.allowed {
            return Ok(Action::Respond(denial(self.status, &verdict)));
        }
        if self.headers {
            for (n, v) in limit_headers(&verdict) {
                req.add_response_header(n, v);
            }
        }
        Ok(Action::Continue)
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
