//! `admin:`: the admin listener's address, `POST /reload`, who may use it (bearer
//! tokens with roles, read from files or the environment) and its optional TLS with
//! client certificates.

use std::fmt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::walk::{Cx, Field, Fields};
use super::{AdminConfig, CertificatePair, ClientAuth, TlsConfig, TlsVersion};

/// Shorter tokens are refused: a bearer token is the whole credential, and the admin
/// listener answers as fast as anyone can ask.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do on the admin listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AdminRole {
    /// Read: `/status`, `/metrics`, the dashboard and its data (`GET` and `HEAD`).
    Viewer,
    /// Read and change: also `POST /reload` and every other method.
    Operator,
}

impl AdminRole {
    /// The name written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            AdminRole::Viewer => "viewer",
            AdminRole::Operator => "operator",
        }
    }
}

/// Where a token was read from; what `/status` shows in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `token_file:`, resolved against the YAML file naming it.
    File(PathBuf),
    /// `token_env:`, the name of an environment variable of the process.
    Env(String),
}

/// The SHA-256 of a token. Only the digest is kept, so that no configuration dump,
/// log line or `/status` can hold the token itself; requests are compared digest to
/// digest, in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The digest of `token`.
    pub fn of(token: &[u8]) -> Self {
        Self(Sha256::digest(token).into())
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenDigest(<redacted>)")
    }
}

/// `admin.tokens[]`: one bearer token and its role.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminToken {
    /// Who holds it (`ci`, `grafana`): logs and `/status` name the token by this.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// Where it was read from.
    pub source: TokenSource,
    /// The token's digest.
    pub digest: TokenDigest,
    /// Where it was declared.
    pub origin: super::Origin,
}

/// Decodes `admin: { address, reload, tokens, tls }`.
pub(crate) fn admin(cx: &mut Cx, field: &Field) -> Option<AdminConfig> {
    let mut f = Fields::new(cx, field)?;
    let address = f.require(cx, "address").and_then(|v| v.socket_addr(cx));
    let reload = f.take("reload").and_then(|v| v.bool(cx)).unwrap_or(false);
    let tokens = f.take("tokens").map(|v| tokens(cx, &v));
    let tls = f.take("tls").map(|v| tls(cx, &v));
    f.finish(cx);
    Some(AdminConfig {
        address: address?,
        reload,
        tokens: tokens.unwrap_or(Some(Vec::new()))?,
        tls: match tls {
            Some(t) => Some(t?),
            None => None,
        },
        origin: cx.origin(field.line),
    })
}

fn tokens(cx: &mut Cx, field: &Field) -> Option<Vec<AdminToken>> {
    let items = field.list(cx)?;
    let mut out: Vec<AdminToken> = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in &items {
        let Some(token) = token(cx, item) else {
            ok = false;
            continue;
        };
        if let Some(first) = out.iter().find(|t| t.name == token.name) {
            let line = first.origin.line;
            let path = format!("admin.tokens.{}", token.name);
            cx.error(
                item.line,
                &path,
                format!("duplicate name (first at line {line})"),
            );
            ok = false;
        } else if let Some(first) = out.iter().find(|t| t.digest == token.digest) {
            // Which role would it have? Refused rather than guessed.
            let message = format!(
                "the same token as admin.tokens.{} (line {}): give each holder a token of its own",
                first.name, first.origin.line
            );
            cx.error(item.line, &format!("admin.tokens.{}", token.name), message);
            ok = false;
        } else {
            out.push(token);
        }
    }
    ok.then_some(out)
}

fn token(cx: &mut Cx, item: &Field) -> Option<AdminToken> {
    let (mut f, name) = Fields::named(cx, item, "admin.tokens")?;
    let role = f.require(cx, "role").and_then(|v| {
        v.choice(
            cx,
            &[
                ("viewer", AdminRole::Viewer),
                ("operator", AdminRole::Operator),
            ],
        )
    });
    let file = f.take("token_file");
    let env = f.take("token_env");
    let path = f.path().to_string();
    let line = f.line();
    f.finish(cx);
    let (source, secret) = match (file, env) {
        (Some(v), None) => {
            let path = v.existing_file(cx)?;
            match std::fs::read(&path) {
                Ok(bytes) => (TokenSource::File(path), bytes),
                Err(e) => {
                    v.error(cx, format!("cannot read {}: {e}", path.display()));
                    return None;
                }
            }
        }
        (None, Some(v)) => {
            let var = v.string(cx)?;
            match std::env::var_os(&var) {
                Some(value) => (TokenSource::Env(var), value.into_encoded_bytes()),
                None => {
                    v.error(cx, format!("the environment variable `{var}` is not set"));
                    return None;
                }
            }
        }
        (Some(_), Some(v)) => {
            v.error(cx, "give either token_file or token_env, not both");
            return None;
        }
        (None, None) => {
            let message = "needs its token: `token_file: FILE` or `token_env: VARIABLE` \
                           (a token is never written in the configuration itself)";
            cx.error(line, &path, message);
            return None;
        }
    };
    let digest = match check_token(&secret) {
        Ok(token) => TokenDigest::of(token),
        Err(why) => {
            let at = match &source {
                TokenSource::File(p) => format!("the token in {}", p.display()),
                TokenSource::Env(var) => format!("the token in ${var}"),
            };
            cx.error(line, &path, format!("{at} {why}"));
            return None;
        }
    };
    Some(AdminToken {
        name: name?,
        role: role?,
        source,
        digest,
        origin: cx.origin(item.line),
    })
}

/// The token in `raw` (a file's or a variable's bytes), surrounding whitespace and
/// line ends left out; or why it cannot be one. The message never quotes the token.
fn check_token(raw: &[u8]) -> Result<&[u8], String> {
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err("is empty".into());
    }
    // What a client can send after `Bearer ` without quoting (RFC 6750's b64token
    // and more): visible ASCII, no spaces.
    if let Some(pos) = token.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "has a character that cannot be sent in a header at byte {pos}: use visible \
             ASCII without spaces (e.g. `openssl rand -hex 32`)"
        ));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "is {} characters long; at least {MIN_TOKEN_LEN} are needed (e.g. `openssl rand -hex 32`)",
            token.len()
        ));
    }
    Ok(token)
}

/// Decodes `admin.tls: { cert, key, client_ca }` into the listener TLS it stands for:
/// one certificate, and with `client_ca` every client must present a certificate it
/// signed.
fn tls(cx: &mut Cx, field: &Field) -> Option<TlsConfig> {
    let mut f = Fields::new(cx, field)?;
    let cert = f.require(cx, "cert").and_then(|v| v.existing_file(cx));
    let key = f.require(cx, "key").and_then(|v| v.existing_file(cx));
    let client_ca = f.take("client_ca").map(|v| v.existing_file(cx));
    let min_version = f.take("min_version").map(|v| {
        v.choice(
            cx,
            &[("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)],
        )
    });
    f.finish(cx);
    let origin = cx.origin(field.line);
    let client_ca = match client_ca {
        Some(ca) => Some(ca?),
        None => None,
    };
    Some(TlsConfig {
        certificates: vec![CertificatePair {
            cert: cert?,
            key: key?,
            origin: origin.clone(),
        }],
        min_version: min_version.unwrap_or(Some(TlsVersion::Tls12))?,
        client_auth: if client_ca.is_some() {
            ClientAuth::Required
        } else {
            ClientAuth::Off
        },
        client_ca,
        acme: None,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::check_token;

    #[test]
    fn a_token_is_trimmed_and_checked_without_being_quoted() {
        assert_eq!(
            check_token(b"  0123456789abcdef\n"),
            Ok(&b"0123456789abcdef"[..])
        );
        let short = check_token(b"hunter2\n").err().unwrap_or_default();
        assert!(
            short.contains("7 characters") && !short.contains("hunter2"),
            "{short}"
        );
        let spaced = check_token(b"0123456789 abcdef").err().unwrap_or_default();
        assert!(spaced.contains("byte 10"), "{spaced}");
        assert_eq!(check_token(b"\n\n"), Err("is empty".into()));
    }
}
