//! `listeners[].tls.acme`: certificates ordered from an ACME CA (RFC 8555) instead of,
//! or beside, certificate files.

use std::path::PathBuf;
use std::time::Duration;

use super::walk::{Cx, Field, Fields};
use super::{ConfigError, HostMatch, ListenerConfig, ListenerProtocol, Origin, RouteConfig};

/// How long before expiry a certificate is renewed when `renew_before` is not given
/// (Let's Encrypt's certificates last 90 days; certbot renews at 30 days left).
pub const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `listeners[].tls.acme`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// The CA's directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory: String,
    /// The account's contact address, if given.
    pub email: Option<String>,
    /// Which names get a certificate.
    pub domains: AcmeDomains,
    /// How the CA checks that the proxy answers for a name.
    pub challenge: AcmeChallenge,
    /// The directory the account key and the certificates are kept in.
    pub storage: PathBuf,
    /// How long before expiry a certificate is renewed.
    pub renew_before: Duration,
    /// A CA bundle the directory's own HTTPS certificate is verified against (a
    /// private CA); the Mozilla roots without it.
    pub ca_roots: Option<PathBuf>,
    /// Where it was declared.
    pub origin: Origin,
}

/// The names an ACME issuer orders certificates for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcmeDomains {
    /// `domains: [...]`, lower-case.
    List(Vec<String>),
    /// `from_routes: true`: the exact hosts of the routes on the listener.
    FromRoutes,
}

/// The ACME challenge answered for each name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `http-01`: `GET /.well-known/acme-challenge/TOKEN` on a plain-text listener.
    Http01,
    /// `tls-alpn-01`: a handshake offering `acme-tls/1` on the TLS listener itself.
    TlsAlpn01,
}

impl AcmeChallenge {
    /// The name as configured (and as `/status` shows it).
    pub fn name(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

impl AcmeConfig {
    /// The names listener `listener` orders certificates for under `routes`: the
    /// configured list, or the exact hosts of the routes that serve on it (sorted, no
    /// duplicates; wildcards are left out, which HTTP-01 and TLS-ALPN-01 cannot prove).
    pub fn names(&self, listener: &str, routes: &[RouteConfig]) -> Vec<String> {
        let mut names = match &self.domains {
            AcmeDomains::List(names) => names.clone(),
            AcmeDomains::FromRoutes => routes
                .iter()
                .filter(|r| {
                    r.listeners
                        .as_ref()
                        .is_none_or(|ls| ls.iter().any(|l| l == listener))
                })
                .filter_map(|r| match &r.matcher.host {
                    Some(HostMatch::Exact(host)) => Some(host.clone()),
                    _ => None,
                })
                .collect(),
        };
        names.sort();
        names.dedup();
        names
    }
}

/// Decodes `acme: { directory, email, domains | from_routes, challenge, storage,
/// renew_before, ca_roots }`.
pub(crate) fn acme(cx: &mut Cx, field: &Field) -> Option<AcmeConfig> {
    let mut f = Fields::new(cx, field)?;
    let directory = f.require(cx, "directory").and_then(|v| directory(cx, &v));
    let email = f.take("email").map(|v| email(cx, &v));
    let domains = f.take("domains");
    let from_routes = f.take("from_routes");
    let challenge = f.take("challenge").map(|v| {
        v.choice(
            cx,
            &[
                ("http-01", AcmeChallenge::Http01),
                ("tls-alpn-01", AcmeChallenge::TlsAlpn01),
            ],
        )
    });
    // Not `existing_file`: the directory is created when missing, and what is
    // written into it must not trigger a reload.
    let storage = f
        .require(cx, "storage")
        .and_then(|v| v.string(cx))
        .map(|s| cx.base.join(s));
    let renew_before = f.take("renew_before").map(|v| v.duration(cx));
    let ca_roots = f.take("ca_roots").map(|v| v.existing_file(cx));
    f.finish(cx);

    let domains = match (domains, from_routes) {
        (Some(list), None) => domain_list(cx, &list).map(AcmeDomains::List),
        (None, Some(v)) => match v.bool(cx)? {
            true => Some(AcmeDomains::FromRoutes),
            false => {
                v.error(
                    cx,
                    "from_routes: false names no domain; list them in `domains` instead",
                );
                None
            }
        },
        (Some(_), Some(v)) => {
            v.error(cx, "give either `domains` or `from_routes: true`, not both");
            None
        }
        (None, None) => {
            let path = format!("{}.domains", field.path);
            cx.error(
                field.line,
                &path,
                "missing required field (or `from_routes: true` for the hosts of this listener's routes)",
            );
            None
        }
    };
    Some(AcmeConfig {
        directory: directory?,
        email: match email {
            Some(e) => Some(e?),
            None => None,
        },
        domains: domains?,
        challenge: challenge.unwrap_or(Some(AcmeChallenge::Http01))?,
        storage: storage?,
        renew_before: renew_before.unwrap_or(Some(DEFAULT_RENEW_BEFORE))?,
        ca_roots: match ca_roots {
            Some(p) => Some(p?),
            None => None,
        },
        origin: cx.origin(field.line),
    })
}

fn directory(cx: &mut Cx, v: &Field) -> Option<String> {
    let text = v.string(cx)?;
    match text.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("https" | "http")) && uri.host().is_some() => {
            Some(text)
        }
        _ => {
            v.error(
                cx,
                format!("`{text}` is not an http(s) URL (the CA's directory, e.g. https://acme-v02.api.letsencrypt.org/directory)"),
            );
            None
        }
    }
}

fn email(cx: &mut Cx, v: &Field) -> Option<String> {
    let text = v.string(cx)?;
    let ok = text
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !text.contains(' '));
    if !ok {
        v.error(cx, format!("`{text}` is not an email address"));
        return None;
    }
    Some(text)
}

fn domain_list(cx: &mut Cx, v: &Field) -> Option<Vec<String>> {
    let items = v.list(cx)?;
    if items.is_empty() {
        v.error(cx, "needs at least one domain");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        let Some(name) = item.string(cx) else {
            ok = false;
            continue;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.starts_with("*.") {
            item.error(
                cx,
                format!("`{name}`: a wildcard needs the DNS-01 challenge, which is not supported; list the names"),
            );
            ok = false;
        } else if !is_dns_name(&name) {
            item.error(cx, format!("`{name}` is not a DNS name"));
            ok = false;
        } else {
            out.push(name);
        }
    }
    ok.then_some(out)
}

/// Whether `name` is a DNS name a CA can issue for (letters, digits and hyphens in
/// dot-separated labels; not an IP address).
fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks what only the whole configuration can tell: ACME on an `http` listener, and
/// for HTTP-01 a plain-text `http` listener the CA can reach.
pub(crate) fn check(listeners: &[ListenerConfig], errors: &mut Vec<ConfigError>) {
    let plain_http = listeners
        .iter()
        .any(|l| l.protocol == ListenerProtocol::Http && l.tls.is_none());
    for l in listeners {
        let Some(acme) = l.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
            continue;
        };
        let path = format!("listeners.{}.tls.acme", l.name);
        if l.protocol != ListenerProtocol::Http {
            let msg =
                "ACME certificates are for http listeners; a tcp listener takes certificate files";
            errors.push(ConfigError::at(&acme.origin, path, msg));
        } else if acme.challenge == AcmeChallenge::Http01 && !plain_http {
            let msg = "http-01 is answered on a plain-text http listener (the CA connects to port 80), and none is configured; add one or use challenge: tls-alpn-01";
            errors.push(ConfigError::at(
                &acme.origin,
                format!("{path}.challenge"),
                msg,
            ));
        }
    }
}
