//! `api-key`: requires a known API key, from a header and/or a query parameter, and
//! passes the key's consumer upstream in a header.
//!
//! Keys are configured in clear or as SHA-256 hex; either way the filter keeps only
//! digests and compares the presented key's digest with every one of them in constant
//! time. A key that matched is remembered by a keyed tag (`seen.rs`), so that its next
//! requests skip the hash. Missing or unknown key: 401. See `docs/filters/api-key.md`.

mod seen;

use portcullis_sdk::{Action, ConfigError, Error, Filter, Request};
use seen::Seen;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use portcullis_sdk::query::{param, without_param};

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    header: Option<String>,
    query: Option<String>,
    #[serde(default)]
    hide_credentials: bool,
    #[serde(default = "default_consumer_header")]
    consumer_header: String,
    keys: Vec<KeyConfig>,
}

fn default_consumer_header() -> String {
    "x-consumer".into()
}

/// One key: `{ key: CLEAR, consumer }` or `{ sha256: HEX, consumer }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    key: Option<String>,
    sha256: Option<String>,
    consumer: String,
}

/// The validated filter.
#[derive(Debug)]
pub struct ApiKey {
    header: Option<String>,
    query: Option<String>,
    hide_credentials: bool,
    consumer_header: String,
    keys: Vec<([u8; 32], String)>,
    /// Keys already verified, by tag: a client's next request skips the SHA-256.
    seen: Seen,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No key in the request.
    Missing,
    /// A key no consumer owns.
    Unknown,
}

impl ApiKey {
    /// The consumer owning `presented`: a key verified before is found by its tag
    /// ([`Seen`]), any other compared by digest in constant time against every key.
    pub fn consumer(&self, presented: &[u8]) -> Option<&str> {
        let tag = self.seen.tag(presented);
        let index = match self.seen.get(tag) {
            Some(index) => index,
            None => {
                let digest: [u8; 32] = Sha256::digest(presented).into();
                let mut found = None;
                for (i, (k, _)) in self.keys.iter().enumerate() {
                    // No early exit: the time taken does not depend on which key
                    // matched.
                    if bool::from(k.ct_eq(&digest)) {
                        found = Some(i);
                    }
                }
                let index = found?;
                self.seen.insert(tag, index);
                index
            }
        };
        self.keys.get(index).map(|(_, consumer)| consumer.as_str())
    }

    /// The consumer for a request with header value `header` and `:path` `path`.
    pub fn judge(&self, header: Option<&str>, path: &str) -> Result<&str, Refusal> {
        let from_query = self.query.as_deref().and_then(|q| param(path, q));
        let presented = header
            .map(|h| h.trim().as_bytes().to_vec())
            .or(from_query)
            .filter(|k| !k.is_empty())
            .ok_or(Refusal::Missing)?;
        self.consumer(&presented).ok_or(Refusal::Unknown)
    }
}

fn header_name(field: &str, h: Option<String>) -> Result<Option<String>, ConfigError> {
    match h {
        Some(h) if h.trim().is_empty() => Err(ConfigError::new(field, "must not be empty")),
        h => Ok(h.map(|h| h.trim().to_ascii_lowercase())),
    }
}

impl Filter for ApiKey {
    type Config = Config;
    // No on_response: response headers, if any, are queued in the request phase.
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let mut header = header_name("header", c.header)?;
        if header.is_none() && c.query.is_none() {
            header = Some("x-api-key".into());
        }
        if c.query.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::new("query", "must not be empty"));
        }
        let consumer_header =
            header_name("consumer_header", Some(c.consumer_header))?.unwrap_or_default();
        if c.keys.is_empty() {
            return Err(ConfigError::new("keys", "needs at least one key"));
        }
        let mut keys = Vec::with_capacity(c.keys.len());
        for (i, k) in c.keys.into_iter().enumerate() {
            let field = |f: &str| format!("keys[{i}].{f}");
            let digest: [u8; 32] = match (k.key, k.sha256) {
                (Some(clear), None) if !clear.is_empty() => Sha256::digest(clear.as_bytes()).into(),
                (Some(_), None) => return Err(ConfigError::new(field("key"), "must not be empty")),
                (None, Some(hex)) => hex::decode(hex.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        ConfigError::new(field("sha256"), "must be 64 hex digits (a SHA-256)")
                    })?,
                _ => {
                    return Err(ConfigError::new(
                        format!("keys[{i}]"),
                        "give exactly one of `key` or `sha256`",
                    ));
                }
            };
            if k.consumer.is_empty() {
                return Err(ConfigError::new(field("consumer"), "must not be empty"));
            }
            keys.push((digest, k.consumer));
        }
        Ok(Self {
            header,
            query: c.query,
            hide_credentials: c.hide_credentials,
            consumer_header,
            keys,
            seen: Seen::default(),
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        let header = match &self.header {
            Some(h) => req.header(h)?,
            None => None,
        };
        let path = if self.query.is_some() {
            req.path()?
        } else {
            String::new()
        };
        let consumer = match self.judge(header.as_deref(), &path) {
            Ok(c) => c.to_string(),
            Err(Refusal::Missing) => return Ok(Action::deny(401, "no API key found in request\n")),
            Err(Refusal::Unknown) => return Ok(Action::deny(401, "invalid API key\n")),
        };
        if self.hide_credentials {
            if let Some(h) = &self.header {
                req.remove_header(h)?;
            }
            if let Some(q) = &self.query {
                let stripped = without_param(&path, q);
                if stripped != path {
                    req.set_path(&stripped)?;
                }
            }
        }
        req.set_header(&self.consumer_header, &consumer)?;
        Ok(Action::Continue)
    }
}

portcullis_sdk::export_filter!(ApiKey);

#[cfg(test)]
mod tests {
    use super::*;

    // echo -n test | sha256sum
    const TEST_SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn filter(json: &str) -> Result<ApiKey, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(ApiKey::new)
    }

    #[test]
    fn keys_and_consumers() {
        let f = filter(&format!(
            r#"{{"header":"X-Api-Key","query":"api_key","keys":[{{"key":"s3cret","consumer":"alice"}},{{"sha256":"{TEST_SHA}","consumer":"bob"}}]}}"#
        ))
        .unwrap();
        assert_eq!(f.judge(Some("s3cret"), "/"), Ok("alice"));
        assert_eq!(f.judge(Some("test"), "/"), Ok("bob"));
        assert_eq!(f.judge(None, "/x?api_key=test"), Ok("bob"));
        assert_eq!(
            f.judge(Some("nope"), "/x?api_key=test"),
            Err(Refusal::Unknown),
            "header first"
        );
        assert_eq!(f.judge(None, "/x"), Err(Refusal::Missing));
        // Verified once, then found by its tag: same answer; a near miss still refused.
        assert_eq!(f.judge(Some("s3cret"), "/"), Ok("alice"));
        assert_eq!(f.judge(Some("s3creT"), "/"), Err(Refusal::Unknown));
        assert_eq!(f.judge(Some("test"), "/"), Ok("bob"));
        assert_eq!(f.judge(Some(""), "/x"), Err(Refusal::Missing));
        assert_eq!(f.header.as_deref(), Some("x-api-key"));
    }

    #[test]
    fn defaults() {
        let f = filter(r#"{"keys":[{"key":"k","consumer":"c"}]}"#).unwrap();
        assert_eq!(f.header.as_deref(), Some("x-api-key"));
        assert_eq!(f.consumer_header, "x-consumer");
        let f = filter(r#"{"query":"k","keys":[{"key":"k","consumer":"c"}]}"#).unwrap();
        assert_eq!(f.header, None, "query only");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |j: &str| filter(j).unwrap_err().field;
        assert_eq!(e(r#"{"keys":[]}"#), "keys");
        assert_eq!(
            e(r#"{"keys":[{"key":"k","consumer":"c"},{"sha256":"abc","consumer":"d"}]}"#),
            "keys[1].sha256"
        );
        assert_eq!(
            e(r#"{"keys":[{"key":"k","sha256":"ab","consumer":"c"}]}"#),
            "keys[0]"
        );
        assert_eq!(e(r#"{"keys":[{"consumer":"c"}]}"#), "keys[0]");
        assert_eq!(
            e(r#"{"keys":[{"key":"k","consumer":""}]}"#),
            "keys[0].consumer"
        );
        assert_eq!(
            e(r#"{"header":" ","keys":[{"key":"k","consumer":"c"}]}"#),
            "header"
        );
        assert_eq!(
            e(r#"{"keys":[{"key":"k","consumer":"c","x":1}]}"#),
            "keys[0].x"
        );
    }
}
