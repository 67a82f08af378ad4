//! Filter configurations as `/status` shows them: with every secret replaced by
//! `"<redacted>"`. The rules know the standard filters' secret fields (`api-key`'s
//! keys, `basic-auth`'s password hashes, `jwt`'s secret and symmetric JWKs) and guess
//! the rest by name, since a third-party filter's configuration is free-form: better
//! a harmless field hidden than a secret shown.

use serde_json::Value;

use crate::config::FilterSource;

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// Field names that are secrets whatever holds them (compared lower-case, with `-`
/// read as `_`, and as part of a longer name: `client_secret`, `x-api-key`).
const SECRET_PARTS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "passphrase",
    "token",
    "credential",
    "private",
    "api_key",
    "apikey",
    "access_key",
    "signing_key",
    "hmac",
    "authorization",
    "cookie_value",
];

/// Field names that are secrets when they are the whole name.
const SECRET_NAMES: &[&str] = &["key", "keys", "pass", "pwd", "sha256", "psk"];

/// Fields of a JSON Web Key (RFC 7518 §6) that are private: a symmetric key's `k`,
/// the private parts of RSA and EC keys.
const JWK_PRIVATE: &[&str] = &["k", "d", "p", "q", "dp", "dq", "qi", "oth"];

/// `config` (the bytes `on_configure` gets) of a filter from `source`, ready to show:
/// JSON with its secrets redacted. A configuration that is not JSON (a YAML string
/// handed over as its bytes) is shown as [`REDACTED`] whole: its shape is unknown.
pub fn filter_config(source: &FilterSource, config: &[u8]) -> Value {
    if config.is_empty() {
        return Value::Null;
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(config) else {
        return Value::String(REDACTED.into());
    };
    if !value.is_object() && !value.is_array() {
        // A bare string or number may be the secret itself.
        return Value::String(REDACTED.into());
    }
    let keep = match source {
        // `key: client_ip | header:NAME | …` is how buckets are keyed, not a secret.
        FilterSource::Builtin(name) if name == "rate-limit" => &["key"][..],
        _ => &[],
    };
    redact(&mut value, keep, true);
    value
}

/// Redacts `value` in place; `keep` are top-level names known not to be secrets.
fn redact(value: &mut Value, keep: &[&str], top: bool) {
    match value {
        Value::Object(map) => {
            let jwk = map.contains_key("kty");
            for (name, v) in map.iter_mut() {
                let kept = top && keep.contains(&name.as_str());
                if !kept && (is_secret(name) || (jwk && JWK_PRIVATE.contains(&name.as_str()))) {
                    hide(v);
                } else if name == "users" {
                    users(v);
                } else {
                    redact(v, keep, false);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact(v, keep, false)),
        Value::String(s) => {
            if let Some(shown) = url_without_password(s) {
                *s = shown;
            }
        }
        _ => {}
    }
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    SECRET_NAMES.contains(&name.as_str()) || SECRET_PARTS.iter().any(|p| name.contains(p))
}

/// Replaces a secret: every string in it, so that a list of keys still shows how
/// many there are, and the names of their consumers.
fn hide(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(hide),
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                // A key's holder is who, not what: `{ key, consumer }` keeps `consumer`.
                if matches!(name.as_str(), "consumer" | "name" | "id" | "kid") {
                    continue;
                }
                hide(v);
            }
        }
        Value::Null | Value::Bool(_) => {}
        v => *v = Value::String(REDACTED.into()),
    }
}

/// `users: ["alice:$2y$…"]` (htpasswd lines): the user stays, the hash goes.
fn users(value: &mut Value) {
    let Value::Array(items) = value else {
        return redact(value, &[], false);
    };
    for item in items {
        match item {
            Value::String(line) => {
                let user = line.split_once(':').map_or("", |(u, _)| u);
                *line = format!("{user}:{REDACTED}");
            }
            other => redact(other, &[], false),
        }
    }
}

/// `scheme://user:password@host…` with the password redacted; `None` when `s` has no
/// password.
fn url_without_password(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, host) = authority.rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    Some(format!("{scheme}://{user}:{REDACTED}@{host}{tail}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn shown(builtin: &str, config: Value) -> Value {
        let source = FilterSource::Builtin(builtin.into());
        filter_config(&source, config.to_string().as_bytes())
    }

    #[test]
    fn the_standard_filters_secrets_are_redacted_and_the_rest_shown() {
        let keys = shown(
            "api-key",
            json!({ "header": "x-api-key", "keys": [
                { "key": "s3cret-value", "consumer": "alice" },
                { "sha256": "9f86d081", "consumer": "bob" } ] }),
        );
        assert_eq!(
            keys,
            json!({ "header": "x-api-key", "keys": [
                { "key": REDACTED, "consumer": "alice" },
                { "sha256": REDACTED, "consumer": "bob" } ] })
        );
        let basic = shown(
            "basic-auth",
            json!({ "realm": "staff", "users": ["alice:$2y$05$abc", "bob:{SHA}xyz"] }),
        );
        assert_eq!(
            basic,
            json!({ "realm": "staff", "users": [format!("alice:{REDACTED}"), format!("bob:{REDACTED}")] })
        );
        let jwt = shown(
            "jwt",
            json!({ "secret": "hmac-secret", "issuer": "https://issuer", "cookie": "session",
                    "jwks": { "keys": [ { "kty": "oct", "kid": "a", "k": "c2VjcmV0" },
                                        { "kty": "RSA", "kid": "b", "n": "modulus", "e": "AQAB" } ] } }),
        );
        assert_eq!(jwt["secret"], REDACTED);
        assert_eq!(jwt["issuer"], "https://issuer");
        assert_eq!(jwt["cookie"], "session");
        // `keys` of a JWKS holds keys: each is hidden but its `kid`.
        assert_eq!(jwt["jwks"]["keys"][0]["kid"], "a");
        assert_eq!(jwt["jwks"]["keys"][0]["k"], REDACTED);
        assert_eq!(jwt["jwks"]["keys"][1]["kid"], "b");
        let limit = shown("rate-limit", json!({ "rate": 10, "key": "client_ip" }));
        assert_eq!(limit, json!({ "rate": 10, "key": "client_ip" }));
    }

    #[test]
    fn free_form_configurations_are_redacted_by_name() {
        let source = FilterSource::Wasm("x.wasm".into());
        let config = json!({
            "key": "abc", "client_secret": "def", "X-Api-Key": "ghi",
            "upstream": { "Authorization": "Bearer xyz", "timeout": 5 },
            "redis": "redis://app:hunter2@cache:6379/0",
            "headers": { "set": { "x-env": "prod" } },
        });
        let shown = filter_config(&source, config.to_string().as_bytes());
        assert_eq!(
            shown,
            json!({
                "key": REDACTED, "client_secret": REDACTED, "X-Api-Key": REDACTED,
                "upstream": { "Authorization": REDACTED, "timeout": 5 },
                "redis": format!("redis://app:{REDACTED}@cache:6379/0"),
                "headers": { "set": { "x-env": "prod" } },
            })
        );
        assert_eq!(
            filter_config(&source, b"a raw string"),
            Value::String(REDACTED.into())
        );
        assert_eq!(filter_config(&source, b""), Value::Null);
    }
}
