//! Who may use the admin listener: bearer tokens with roles (`admin.tokens`), checked
//! in front of every endpoint, so that an endpoint added to the router is covered
//! without a line of its own. Reading (`GET`, `HEAD`) needs a `viewer` token, any other
//! method an `operator` one; the probes (`/ready`, `/live`) need none, since load
//! balancers and kubelets call them without credentials. With no tokens configured
//! everything is open, as before tokens existed.

use std::net::SocketAddr;

use http::{HeaderValue, Method, StatusCode, header};
use subtle::ConstantTimeEq;

use super::AdminResponse;
use crate::config::{AdminConfig, AdminRole, TokenDigest};

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "portcullis-admin";

/// Who a request was let in as. Put in the request's extensions, so that an endpoint
/// (the dashboard) can show or hide what the caller's role may not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No tokens are configured: whoever can connect may do everything.
    Open,
    /// A probe endpoint, which needs no token.
    Probe,
    /// A configured token: its name (never the token) and role.
    Token {
        /// `admin.tokens[].name`.
        name: String,
        /// What it may do.
        role: AdminRole,
    },
}

impl Access {
    /// Whether this caller may use `method`s that change something.
    pub fn may_change(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Probe => false,
            Access::Token { role, .. } => *role >= AdminRole::Operator,
        }
    }
}

/// Paths served to anyone: health probes carry no credentials.
fn is_probe(path: &str) -> bool {
    matches!(path, "/ready" | "/live")
}

/// The role `method` needs: reading is a viewer's, anything else an operator's.
pub fn role_needed(method: &Method) -> AdminRole {
    if matches!(*method, Method::GET | Method::HEAD) {
        AdminRole::Viewer
    } else {
        AdminRole::Operator
    }
}

/// Why a request was refused; [`Refusal::response`] is what its client gets.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// No bearer token: 401.
    NoToken,
    /// A token that is not configured: 401.
    UnknownToken,
    /// The token's role does not allow the method: 403, with this body.
    Forbidden(String),
}

impl Refusal {
    /// 401 or 403 with a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3) and a
    /// body that says what is missing.
    pub(super) fn response(self) -> AdminResponse {
        let (status, error, body) = match self {
            Refusal::NoToken => (
                StatusCode::UNAUTHORIZED,
                None,
                "unauthorized: this admin endpoint needs a token: send `Authorization: Bearer \
                 TOKEN` with a token of admin.tokens\n"
                    .to_string(),
            ),
            Refusal::UnknownToken => (
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "unauthorized: the token is not one of admin.tokens\n".to_string(),
            ),
            Refusal::Forbidden(body) => (StatusCode::FORBIDDEN, Some("insufficient_scope"), body),
        };
        let mut resp = super::text(status, body);
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge(error));
        resp
    }
}

/// Lets `req` in, saying as whom, or says why not.
pub(super) fn check<B>(
    admin: Option<&AdminConfig>,
    req: &http::Request<B>,
    peer: SocketAddr,
) -> Result<Access, Refusal> {
    let tokens = admin.map(|a| a.tokens.as_slice()).unwrap_or_default();
    let path = req.uri().path();
    if is_probe(path) {
        return Ok(Access::Probe);
    }
    if tokens.is_empty() {
        return Ok(Access::Open);
    }
    let Some(presented) = bearer(req.headers()) else {
        tracing::debug!(%peer, path, "admin: request without a bearer token refused");
        return Err(Refusal::NoToken);
    };
    let presented = TokenDigest::of(presented);
    // Every token is compared, each in constant time: neither the time taken nor
    // where the loop stops tells anything about a configured token.
    let mut found = None;
    for t in tokens {
        let equal: bool = t.digest.0.ct_eq(&presented.0).into();
        if equal && found.is_none() {
            found = Some(t);
        }
    }
    let Some(token) = found else {
        tracing::info!(%peer, path, "admin: request with an unknown token refused");
        return Err(Refusal::UnknownToken);
    };
    let needed = role_needed(req.method());
    if token.role < needed {
        tracing::info!(%peer, token = %token.name, method = %req.method(), path,
            "admin: request refused: the token's role is {}", token.role.name());
        let body = format!(
            "forbidden: token `{}` has the {} role; {} {path} needs the {} role\n",
            token.name,
            token.role.name(),
            req.method(),
            needed.name()
        );
        return Err(Refusal::Forbidden(body));
    }
    if needed == AdminRole::Operator {
        // What changed the proxy, and on whose token.
        tracing::info!(%peer, token = %token.name, method = %req.method(), path, "admin: request");
    }
    Ok(Access::Token {
        name: token.name.clone(),
        role: token.role,
    })
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in any case).
fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// `Bearer realm="…"[, error="…"]` (RFC 6750 §3).
fn challenge(error: Option<&str>) -> HeaderValue {
    let value = match error {
        Some(e) => format!("Bearer realm=\"{REALM}\", error=\"{e}\""),
        None => format!("Bearer realm=\"{REALM}\""),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(header::AUTHORIZATION, v);
        }
        h
    }

    #[test]
    fn the_bearer_token_is_read_in_any_case_of_the_scheme() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer   abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic YWxpY2U6eA==")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&http::HeaderMap::new()), None);
    }

    #[test]
    fn reading_is_a_viewers_and_the_rest_an_operators() {
        assert_eq!(role_needed(&Method::GET), AdminRole::Viewer);
        assert_eq!(role_needed(&Method::HEAD), AdminRole::Viewer);
        for m in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            assert_eq!(role_needed(&m), AdminRole::Operator, "{m}");
        }
    }
}
