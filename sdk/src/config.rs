//! Configuration parsing with errors that name the field, and value types that filters'
//! configurations share.
//!
//! Portcullis hands a filter its `config:` as compact JSON (a YAML string as its raw
//! bytes); Envoy hands over whatever the `configuration` field holds. [`parse`] reads
//! either JSON or nothing at all (as `{}`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A configuration the filter refuses: the field (a dotted path such as
/// `request.set.x-env`, or empty for the whole) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field's path inside the filter's `config`.
    pub field: String,
    /// What is wrong, and ideally what would be right.
    pub message: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "config: {}", self.message)
        } else {
            write!(f, "config.{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a plugin configuration: JSON, or empty (read as `{}`). A serde error names
/// the path of the field it is about.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            let mut message = e.into_inner().to_string();
            // serde_json appends " at line 1 column 42": meaningless for YAML users.
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            Err(ConfigError::new(field, message))
        }
    }
}

/// A duration written as `250ms`, `2s`, `1m`, `1h`, or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `250ms`, `2s`, `1.5s`, `1m`, `1h`, `1d` or a bare number of seconds.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{text}` is not a duration (e.g. 250ms, 2s, 1m)"))?;
        let scale = match unit.trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => return Err(format!("unknown duration unit `{other}` in `{text}`")),
        };
        let secs = value * scale;
        if !secs.is_finite() || !(0.0..=1e12).contains(&secs) {
            return Err(format!("`{text}` is out of range"));
        }
        Ok(Duration(std::time::Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => Duration::parse(&s.to_string()).map_err(serde::de::Error::custom),
            Raw::Text(t) => Duration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// A value that may be written as one item or a list of them (`x: a` or `x: [a, b]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OneOrMany<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<T> {
            Many(Vec<T>),
            One(T),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Many(v) => OneOrMany(v),
            Raw::One(v) => OneOrMany(vec![v]),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        rate: u32,
        per: Option<Duration>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[test]
    fn durations() {
        let d = |s| Duration::parse(s).map(|d| d.0.as_millis());
        assert_eq!(d("250ms"), Ok(250));
        assert_eq!(d("2s"), Ok(2000));
        assert_eq!(d("1m"), Ok(60000));
        assert_eq!(d("1.5s"), Ok(1500));
        assert_eq!(d("3"), Ok(3000));
        assert!(d("3 parsecs").is_err());
        assert!(d("").is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse::<Outer>(br#"{"inner":{"rate":"x"}}"#).unwrap_err();
        assert_eq!(e.field, "inner.rate", "{e}");
        let e = parse::<Outer>(br#"{"inner":{"rate":1,"per":"1 fortnight"}}"#).unwrap_err();
        assert_eq!(e.field, "inner.per", "{e}");
        let e = parse::<Outer>(br#"{"inner":{"rate":1,"bogus":1}}"#).unwrap_err();
        assert!(e.message.contains("bogus"), "{e}");
        assert!(!e.message.contains("line"), "{e}");
        let e = parse::<Outer>(b"").unwrap_err();
        assert!(e.message.contains("inner"), "{e}");
    }
}
