//! Token verification: structure, algorithm, signature, then the registered claims.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::keys::{Alg, Key};

/// Everything a token is checked against.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Algorithms accepted; a token naming another is refused before any key is used.
    pub algorithms: Vec<Alg>,
    /// Candidate keys.
    pub keys: Vec<Key>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// `aud` must contain one of these (when non-empty).
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Claims that must be present.
    pub required_claims: Vec<String>,
}

/// Why a token was refused; the text goes into `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not three base64url parts of JSON.
    Malformed,
    /// An algorithm not accepted here (or `none`).
    Algorithm(String),
    /// No key verifies the signature.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// `iss` differs.
    Issuer,
    /// `aud` names none of the audiences.
    Audience,
    /// A required claim is absent.
    MissingClaim(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Malformed => f.write_str("malformed token"),
            Invalid::Algorithm(a) => write!(f, "algorithm {a} not accepted"),
            Invalid::Signature => f.write_str("signature verification failed"),
            Invalid::Expired => f.write_str("token expired"),
            Invalid::NotYetValid => f.write_str("token not yet valid"),
            Invalid::Issuer => f.write_str("issuer not accepted"),
            Invalid::Audience => f.write_str("audience not accepted"),
            Invalid::MissingClaim(c) => write!(f, "missing claim {c}"),
        }
    }
}

fn decode_json(part: &str) -> Result<Map<String, Value>, Invalid> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Invalid::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Invalid::Malformed),
    }
}

fn seconds(v: &Value) -> Option<f64> {
    v.as_f64()
}

impl Verifier {
    /// Verifies `token` at `now` (Unix seconds) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Map<String, Value>, Invalid> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Invalid::Malformed);
        };
        let header = decode_json(h)?;
        let alg_name = header.get("alg").and_then(Value::as_str).unwrap_or("none");
        let alg = Alg::from_name(alg_name)
            .filter(|a| self.algorithms.contains(a))
            .ok_or_else(|| Invalid::Algorithm(alg_name.to_string()))?;
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| Invalid::Malformed)?;
        let kid = header.get("kid").and_then(Value::as_str);
        let signed = token
            .trim()
            .get(..h.len() + 1 + p.len())
            .ok_or(Invalid::Malformed)?;
        let ok = self
            .keys
            .iter()
            .filter(|k| match (kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .any(|k| k.verify(alg, signed.as_bytes(), &sig));
        if !ok {
            return Err(Invalid::Signature);
        }
        let claims = decode_json(p)?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    /// Checks `exp` and `nbf` (with the leeway) at `now`: the only checks whose outcome
    /// changes over time, so the ones a remembered token must pass again.
    pub fn check_time(&self, c: &Map<String, Value>, now: u64) -> Result<(), Invalid> {
        let now = now as f64;
        let leeway = self.leeway as f64;
        if let Some(exp) = c.get("exp") {
            let exp = seconds(exp).ok_or(Invalid::Malformed)?;
            if now >= exp + leeway {
                return Err(Invalid::Expired);
            }
        }
        if let Some(nbf) = c.get("nbf") {
            let nbf = seconds(nbf).ok_or(Invalid::Malformed)?;
            if now + leeway < nbf {
                return Err(Invalid::NotYetValid);
            }
        }
        Ok(())
    }

    fn check_claims(&self, c: &Map<String, Value>, now: u64) -> Result<(), Invalid> {
        self.check_time(c, now)?;
        if let Some(iss) = &self.issuer
            && c.get("iss").and_then(Value::as_str) != Some(iss.as_str())
        {
            return Err(Invalid::Issuer);
        }
        if !self.audiences.is_empty() {
            let ok = match c.get("aud") {
                Some(Value::String(a)) => self.audiences.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audiences.iter().any(|w| w == a)),
                _ => false,
            };
            if !ok {
                return Err(Invalid::Audience);
            }
        }
        for r in &self.required_claims {
            if !c.contains_key(r) {
                return Err(Invalid::MissingClaim(r.clone()));
            }
        }
        Ok(())
    }
}
