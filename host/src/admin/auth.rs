//! Who may use the admin listener: bearer tokens with roles (`admin.tokens`), checked
//! in front of every endpoint, so that an endpoint added to the router is covered
//! without a line of its own. Reading (`GET`, `HEAD`) needs a `viewer` token, any other
//! method an `operator` one; the probes (`/ready`, `/live`) need none, since load
//! balancers and kubelets call them without credentials. With no tokens configured
//! everything is open, as before tokens existed. A token comes as a bearer token, or
//! from a browser as the password of HTTP Basic.

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
        let headers = resp.headers_mut();
        headers.insert(header::WWW_AUTHENTICATE, challenge(error));
        if status == StatusCode::UNAUTHORIZED {
            // Second, so that API clients read the bearer challenge first; a browser
            // picks the one it can answer and asks for a user name and password.
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"portcullis-admin\", charset=\"UTF-8\""),
            );
        }
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
    let Some(presented) = presented(req.headers()) else {
        tracing::debug!(%peer, path, "admin: request without a bearer token refused");
        return Err(Refusal::NoToken);
    };
    let presented = TokenDigest::of(&presented);
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

/// The token a request presents: `Authorization: Bearer TOKEN`, or, for browsers
/// (the dashboard), HTTP Basic with the token as the password and any user name: a
/// browser asks for those on a `Basic` challenge and then sends them with every
/// request, page and data alike, where it cannot be made to send a bearer token.
fn presented(headers: &http::HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let rest = rest.trim_ascii();
    let token = if scheme.eq_ignore_ascii_case(b"bearer") {
        rest.to_vec()
    } else if scheme.eq_ignore_ascii_case(b"basic") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        decoded[colon + 1..].to_vec()
    } else {
        return None;
    };
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
    fn the_token_is_read_from_bearer_or_a_basic_password() {
        let token = |v: &str| presented(&headers(v));
        assert_eq!(token("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(token("bearer   abc "), Some(b"abc".to_vec()));
        // `alice:x:y`: the password is everything after the first colon.
        assert_eq!(token("Basic YWxpY2U6eDp5"), Some(b"x:y".to_vec()));
        assert_eq!(token("basic OnRvaw=="), Some(b"tok".to_vec()));
        assert_eq!(token("Basic YWxpY2U6"), None, "an empty password");
        assert_eq!(token("Basic not-base64!"), None);
        assert_eq!(token("Digest abc"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(presented(&http::HeaderMap::new()), None);
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
