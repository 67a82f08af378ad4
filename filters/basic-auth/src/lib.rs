//! `basic-auth`: HTTP Basic authentication against htpasswd lines.
//!
//! A request without valid credentials gets 401 with
//! `WWW-Authenticate: Basic realm="..."`. A successful bcrypt or apr1 verification is
//! remembered (by a SHA-256 of the credentials, never the password) for `cache_ttl`,
//! so the slow hash is not paid on every request. See `docs/filters/basic-auth.md`.

mod htpasswd;

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_sdk::config::Duration as ConfigDuration;
use portcullis_sdk::{Action, ConfigError, Error, Filter, LocalResponse, Request};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use htpasswd::{Hash, apr1, parse_line};

/// Most remembered verifications per VM; the cache is emptied when full.
const CACHE_CAPACITY: usize = 4096;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_realm")]
    realm: String,
    users: Vec<String>,
    #[serde(default)]
    remove_header: bool,
    user_header: Option<String>,
    cache_ttl: Option<ConfigDuration>,
}

fn default_realm() -> String {
    "portcullis".into()
}

/// The validated filter.
#[derive(Debug)]
pub struct BasicAuth {
    users: HashMap<String, Hash>,
    challenge: String,
    remove_header: bool,
    user_header: Option<String>,
    ttl: Duration,
    /// SHA-256 of the `Authorization` value → (user, valid until).
    cache: RefCell<HashMap<[u8; 32], (String, SystemTime)>>,
}

/// Splits `Basic <base64>` into user and password.
pub fn credentials(authorization: &str) -> Option<(String, Vec<u8>)> {
    let (scheme, b64) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(b64.trim()).ok()?;
    let colon = raw.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(raw.get(..colon)?.to_vec()).ok()?;
    Some((user, raw.get(colon + 1..)?.to_vec()))
}

impl BasicAuth {
    /// The user `authorization` authenticates at `now`, if any.
    pub fn authenticate(&self, authorization: &str, now: SystemTime) -> Option<String> {
        let fingerprint: [u8; 32] = Sha256::digest(authorization.as_bytes()).into();
        if let Ok(cache) = self.cache.try_borrow()
            && let Some((user, until)) = cache.get(&fingerprint)
            && *until > now
        {
            return Some(user.clone());
        }
        let (user, password) = credentials(authorization)?;
        let hash = self.users.get(&user)?;
        if !hash.verify(&password) {
            return None;
        }
        if hash.is_slow()
            && !self.ttl.is_zero()
            && let Ok(mut cache) = self.cache.try_borrow_mut()
        {
            if cache.len() >= CACHE_CAPACITY {
                cache.retain(|_, (_, until)| *until > now);
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
            }
            cache.insert(fingerprint, (user.clone(), now + self.ttl));
        }
        Some(user)
    }

    /// The 401 answer.
    pub fn challenge(&self) -> LocalResponse {
        LocalResponse::new(401)
            .body("unauthorized\n")
            .header("www-authenticate", self.challenge.clone())
    }
}

impl Filter for BasicAuth {
    type Config = Config;
    // No on_response: response headers, if any, are queued in the request phase.
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.realm
            .chars()
            .any(|ch| ch == '"' || ch == '\\' || ch.is_control())
        {
            return Err(ConfigError::new(
                "realm",
                "must not contain quotes, backslashes or control characters",
            ));
        }
        if c.users.is_empty() {
            return Err(ConfigError::new(
                "users",
                "needs at least one `user:hash` line",
            ));
        }
        let mut users = HashMap::new();
        for (i, line) in c.users.iter().enumerate() {
            let (user, hash) =
                parse_line(line).map_err(|m| ConfigError::new(format!("users[{i}]"), m))?;
            if users.insert(user.clone(), hash).is_some() {
                return Err(ConfigError::new(
                    format!("users[{i}]"),
                    format!("user `{user}` appears twice"),
                ));
            }
        }
        let user_header = match c.user_header {
            Some(h) if h.trim().is_empty() => {
                return Err(ConfigError::new("user_header", "must be a header name"));
            }
            h => h.map(|h| h.trim().to_ascii_lowercase()),
        };
        Ok(Self {
            users,
            challenge: format!("Basic realm=\"{}\"", c.realm),
            remove_header: c.remove_header,
            user_header,
            ttl: c.cache_ttl.map(|d| d.0).unwrap_or(Duration::from_secs(60)),
            cache: RefCell::new(HashMap::new()),
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        let user = match req.header("authorization")? {
            Some(value) => self.authenticate(&value, SystemTime::now()),
            None => None,
        };
        let Some(user) = user else {
            return Ok(Action::Respond(self.challenge()));
        };
        if self.remove_header {
            req.remove_header("authorization")?;
        }
        if let Some(h) = &self.user_header {
            req.set_header(h, &user)?;
        }
        Ok(Action::Continue)
    }
}

portcullis_sdk::export_filter!(BasicAuth);

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

    fn filter(json: &str) -> Result<BasicAuth, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(BasicAuth::new)
    }

    fn basic(user: &str, pw: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{pw}")))
    }

    #[test]
    fn authenticates_and_caches() {
        let f = filter(&format!(
            r#"{{"realm":"staff","users":["alice:{BCRYPT}","bob:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ="]}}"#
        ))
        .unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(
            f.authenticate(&basic("alice", "U*U"), now).as_deref(),
            Some("alice")
        );
        assert_eq!(f.cache.borrow().len(), 1, "bcrypt success remembered");
        assert_eq!(
            f.authenticate(&basic("alice", "U*U"), now).as_deref(),
            Some("alice")
        );
        assert_eq!(f.authenticate(&basic("alice", "wrong"), now), None);
        assert_eq!(
            f.authenticate(&basic("bob", "secret"), now).as_deref(),
            Some("bob")
        );
        assert_eq!(f.cache.borrow().len(), 1, "fast hashes are not cached");
        assert_eq!(f.authenticate(&basic("carol", "x"), now), None);
        assert_eq!(f.authenticate("Bearer abc", now), None);
        assert_eq!(f.authenticate("Basic !!!", now), None);
        assert_eq!(
            f.challenge().header_value("www-authenticate"),
            Some("Basic realm=\"staff\"")
        );
        assert_eq!(f.challenge().status, 401);
    }

    #[test]
    fn expired_cache_entries_verify_again() {
        let f = filter(&format!(
            r#"{{"users":["alice:{BCRYPT}"],"cache_ttl":"1s"}}"#
        ))
        .unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert!(f.authenticate(&basic("alice", "U*U"), t0).is_some());
        // Poison the cached entry's user to see whether the cache is used.
        if let Some(e) = f.cache.borrow_mut().values_mut().next() {
            e.0 = "cached".into();
        }
        assert_eq!(
            f.authenticate(&basic("alice", "U*U"), t0).as_deref(),
            Some("cached")
        );
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            f.authenticate(&basic("alice", "U*U"), later).as_deref(),
            Some("alice")
        );
    }

    #[test]
    fn credentials_parsing() {
        assert_eq!(
            credentials(&basic("a", "b:c")),
            Some(("a".into(), b"b:c".to_vec()))
        );
        assert_eq!(credentials("basic YTpi"), Some(("a".into(), b"b".to_vec())));
        assert_eq!(credentials("Basic YWJj"), None, "no colon");
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert_eq!(
            filter(r#"{"users":["a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=","b:plain"]}"#)
                .unwrap_err()
                .field,
            "users[1]"
        );
        assert_eq!(filter(r#"{"users":[]}"#).unwrap_err().field, "users");
        assert_eq!(
            filter(r#"{"realm":"a\"b","users":["a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="]}"#)
                .unwrap_err()
                .field,
            "realm"
        );
        let dup = r#"{"users":["a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=","a:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="]}"#;
        assert_eq!(filter(dup).unwrap_err().field, "users[1]");
        assert!(filter(r#"{}"#).unwrap_err().message.contains("users"));
    }
}
