//! `jwt`: requires a valid JSON Web Token and passes chosen claims upstream as headers.
//!
//! The token comes from `Authorization: Bearer`, else the `cookie`, else the `query`
//! parameter. It must name an accepted algorithm (`none` never is), carry a signature
//! one of the keys verifies (a `secret`, a PEM `public_key`, or an inline `jwks`
//! matched by `kid`), and pass `exp`/`nbf` (with `leeway`), `issuer`, `audiences` and
//! `required_claims`. Otherwise: 401 with `WWW-Authenticate: Bearer
//! error="invalid_token"`. A verified token is remembered ([`cache`]), so its signature
//! is checked once, its `exp`/`nbf` on every request. See `docs/filters/jwt.md`.

pub mod cache;
mod keys;
mod verify;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use portcullis_sdk::config::{Duration, OneOrMany};
use portcullis_sdk::query::{cookie, param};
use portcullis_sdk::{Action, ConfigError, Error, Filter, LocalResponse, Request};
use serde::Deserialize;
use serde_json::Value;

pub use cache::{Claims, Lookup, TokenCache};
pub use keys::{Alg, Jwk, Key, Material, from_pem};
pub use verify::{Invalid, Verifier};

/// Verified tokens remembered per VM unless `cache_size` says otherwise.
pub const DEFAULT_CACHE_SIZE: usize = 1024;
/// The largest `cache_size`: every entry holds a token's claims in the filter's memory,
/// which its memory limit bounds.
pub const MAX_CACHE_SIZE: usize = 100_000;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    algorithms: Option<Vec<String>>,
    secret: Option<String>,
    public_key: Option<String>,
    jwks: Option<JwksConfig>,
    issuer: Option<String>,
    #[serde(default)]
    audiences: OneOrMany<String>,
    leeway: Option<Duration>,
    #[serde(default)]
    required_claims: Vec<String>,
    cookie: Option<String>,
    query: Option<String>,
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
    cache_size: Option<usize>,
}

/// `jwks: { keys: [...] }`.
#[derive(Debug, Deserialize)]
pub struct JwksConfig {
    keys: Vec<Value>,
}

/// The validated filter.
#[derive(Debug)]
pub struct Jwt {
    verifier: Verifier,
    cookie: Option<String>,
    query: Option<String>,
    claims_to_headers: Vec<(String, String)>,
    cache: RefCell<TokenCache>,
}

/// The token of a request, from its `Authorization`, `Cookie` and `:path`.
pub fn token<'a>(
    authorization: Option<&'a str>,
    cookies: Option<&'a str>,
    cookie_name: Option<&str>,
    path: &str,
    query_name: Option<&str>,
) -> Option<String> {
    if let Some(a) = authorization
        && let Some((scheme, t)) = a.trim().split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    if let (Some(c), Some(name)) = (cookies, cookie_name)
        && let Some(t) = cookie(c, name)
        && !t.is_empty()
    {
        return Some(t.to_string());
    }
    let q = param(path, query_name?)?;
    String::from_utf8(q).ok().filter(|t| !t.is_empty())
}

/// A claim's value as a header value: strings as they are, anything else as JSON.
pub fn claim_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.chars().filter(|c| !c.is_control()).collect(),
        other => other.to_string(),
    }
}

/// The 401 answer; `why` is `None` when no token was sent (RFC 6750 §3.1: no error code).
pub fn refusal(why: Option<&Invalid>) -> LocalResponse {
    let challenge = match why {
        None => "Bearer".to_string(),
        Some(i) => format!("Bearer error=\"invalid_token\", error_description=\"{i}\""),
    };
    LocalResponse::new(401)
        .body(match why {
            None => "missing bearer token\n".to_string(),
            Some(i) => format!("invalid token: {i}\n"),
        })
        .header("www-authenticate", challenge)
}

fn keys(c: &Config) -> Result<Vec<Key>, ConfigError> {
    let mut keys = Vec::new();
    if let Some(s) = &c.secret {
        if s.is_empty() {
            return Err(ConfigError::new("secret", "must not be empty"));
        }
        keys.push(Key {
            kid: None,
            alg: None,
            material: Material::Hmac(s.as_bytes().to_vec()),
        });
    }
    if let Some(pem) = &c.public_key {
        let material = from_pem(pem).map_err(|m| ConfigError::new("public_key", m))?;
        keys.push(Key {
            kid: None,
            alg: None,
            material,
        });
    }
    if let Some(jwks) = &c.jwks {
        for (i, v) in jwks.keys.iter().enumerate() {
            let field = format!("jwks.keys[{i}]");
            let jwk: Jwk = serde_json::from_value(v.clone())
                .map_err(|e| ConfigError::new(&field, e.to_string()))?;
            if let Some(k) = jwk.to_key().map_err(|m| ConfigError::new(&field, m))? {
                keys.push(k);
            }
        }
    }
    if keys.is_empty() {
        return Err(ConfigError::new(
            "",
            "give at least one of secret, public_key or jwks",
        ));
    }
    Ok(keys)
}

const ALL: [Alg; 9] = [
    Alg::HS256,
    Alg::HS384,
    Alg::HS512,
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::ES256,
    Alg::ES384,
    Alg::EdDSA,
];

impl Jwt {
    /// The claims of `token` at `now` (Unix seconds): from the cache when this token was
    /// verified before (its `exp`/`nbf` checked again), else verified in full and then
    /// remembered.
    pub fn authenticate(&self, token: &str, now: u64) -> Result<Claims, Invalid> {
        let token = token.trim();
        let key = match self.cache.try_borrow_mut() {
            Ok(mut cache) if cache.capacity() > 0 => {
                let key = cache::fingerprint(token);
                match cache.lookup(&key, &self.verifier, now) {
                    Lookup::Valid(claims) => return Ok(claims),
                    Lookup::Refused(why) => return Err(why),
                    Lookup::Miss => Some(key),
                }
            }
            _ => None,
        };
        let claims = Rc::new(self.verifier.verify(token, now)?);
        if let (Some(key), Ok(mut cache)) = (key, self.cache.try_borrow_mut()) {
            cache.insert(key, Rc::clone(&claims));
        }
        Ok(claims)
    }
}

impl Filter for Jwt {
    type Config = Config;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let keys = keys(&c)?;
        let algorithms = match &c.algorithms {
            None => ALL
                .into_iter()
                .filter(|a| keys.iter().any(|k| k.fits(*a)))
                .collect(),
            Some(list) => {
                let mut algs = Vec::new();
                for (i, name) in list.iter().enumerate() {
                    let field = format!("algorithms[{i}]");
                    let alg = Alg::from_name(name).ok_or_else(|| {
                        ConfigError::new(&field, format!("unsupported algorithm `{name}`: use HS256/384/512, RS256/384/512, ES256/384 or EdDSA"))
                    })?;
                    if !keys.iter().any(|k| k.fits(alg)) {
                        return Err(ConfigError::new(
                            field,
                            format!("no configured key can verify {name}"),
                        ));
                    }
                    algs.push(alg);
                }
                if algs.is_empty() {
                    return Err(ConfigError::new("algorithms", "must not be empty"));
                }
                algs
            }
        };
        let mut claims_to_headers = Vec::new();
        for (claim, header) in c.claims_to_headers {
            let ok = !header.is_empty()
                && header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !ok {
                return Err(ConfigError::new(
                    format!("claims_to_headers.{claim}"),
                    format!("`{header}` is not a header name"),
                ));
            }
            claims_to_headers.push((claim, header.to_ascii_lowercase()));
        }
        let cache_size = c.cache_size.unwrap_or(DEFAULT_CACHE_SIZE);
        if cache_size > MAX_CACHE_SIZE {
            return Err(ConfigError::new(
                "cache_size",
                format!(
                    "at most {MAX_CACHE_SIZE} (each entry holds a token's claims in the filter's memory)"
                ),
            ));
        }
        for (field, v) in [("cookie", &c.cookie), ("query", &c.query)] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::new(field, "must not be empty"));
            }
        }
        Ok(Self {
            verifier: Verifier {
                algorithms,
                keys,
                issuer: c.issuer,
                audiences: c.audiences.0,
                leeway: c.leeway.map(|d| d.0.as_secs()).unwrap_or(0),
                required_claims: c.required_claims,
            },
            cookie: c.cookie,
            query: c.query,
            claims_to_headers,
            cache: RefCell::new(TokenCache::new(cache_size)),
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        // One host call for every header the token may come from.
        let [authorization, cookies, path] =
            req.header_values(["authorization", "cookie", ":path"])?;
        let cookies = cookies.filter(|_| self.cookie.is_some());
        let path = path.filter(|_| self.query.is_some()).unwrap_or_default();
        let Some(token) = token(
            authorization.as_deref(),
            cookies.as_deref(),
            self.cookie.as_deref(),
            &path,
            self.query.as_deref(),
        ) else {
            return Ok(Action::Respond(refusal(None)));
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = match self.authenticate(&token, now) {
            Ok(c) => c,
            Err(why) => return Ok(Action::Respond(refusal(Some(&why)))),
        };
        for (claim, header) in &self.claims_to_headers {
            // A client-sent header of that name never reaches the upstream.
            match claims.get(claim) {
                Some(v) => req.set_header(header, &claim_value(v))?,
                None => req.remove_header(header)?,
            }
        }
        Ok(Action::Continue)
    }
}

portcullis_sdk::export_filter!(Jwt);

#[cfg(test)]
mod tests;
