//! `redirect`: answers with a redirect instead of forwarding.
//!
//! Two modes: `scheme` (with an optional `port`) sends a request arriving over another
//! scheme to the same host and path over this one (http→https); `regex` +
//! `replacement` rewrite the full URL `scheme://host[:port]/path?query`. A request
//! already at its target goes on untouched, so there is no redirect loop. `permanent`
//! picks 301/308 over 302/307 (the 30x that keep the method for non-GET/HEAD).
//! See `docs/filters/redirect.md`.

// Public (hidden) for the fuzz target `redirect_literal` (fuzz/).
#[doc(hidden)]
pub mod literal;

use memchr::memmem::Finder;
use portcullis_sdk::{Action, ConfigError, Error, Filter, Request};
use regex_lite::Regex;
use serde::Deserialize;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    scheme: Option<String>,
    port: Option<u16>,
    regex: Option<String>,
    replacement: Option<String>,
    #[serde(default)]
    permanent: bool,
}

/// What to redirect to.
#[derive(Debug)]
pub enum Mode {
    /// Same host and path, this scheme, and this port if given.
    Scheme {
        /// `http` or `https`.
        scheme: String,
        /// Explicit port (omitted from the URL when it is the scheme's default).
        port: Option<u16>,
    },
    /// A rewrite of the full URL: the regex, the replacement, and a searcher for a
    /// literal every match contains (when the pattern shows one), built once.
    Regex(Regex, String, Option<Finder<'static>>),
}

/// The validated filter.
#[derive(Debug)]
pub struct Redirect {
    mode: Mode,
    permanent: bool,
}

/// The host of an authority, without its port (`[v6]` keeps its brackets).
fn host_of(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    }
}

impl Redirect {
    /// The redirect status for `method`.
    pub fn status(&self, method: &str) -> u32 {
        let safe = method.eq_ignore_ascii_case("GET") || method.eq_ignore_ascii_case("HEAD");
        match (self.permanent, safe) {
            (true, true) => 301,
            (true, false) => 308,
            (false, true) => 302,
            (false, false) => 307,
        }
    }

    /// Where a request for `scheme://authority` + `path` (with its query) goes, if
    /// anywhere.
    pub fn location(&self, scheme: &str, authority: &str, path: &str) -> Option<String> {
        match &self.mode {
            Mode::Scheme {
                scheme: target,
                port,
            } => {
                if scheme.eq_ignore_ascii_case(target) {
                    return None;
                }
                let default = if target == "https" { 443 } else { 80 };
                let host = host_of(authority);
                Some(match port {
                    Some(p) if *p != default => format!("{target}://{host}:{p}{path}"),
                    _ => format!("{target}://{host}{path}"),
                })
            }
            Mode::Regex(re, replacement, literal) => {
                // Built by hand and searched with a prepared searcher: `format!` and
                // `str::contains` (which prepares its search anew on every call) were
                // a fifth of the filter's cost for the requests it lets through.
                let mut url =
                    String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
                url.push_str(scheme);
                url.push_str("://");
                url.push_str(authority);
                url.push_str(path);
                if literal
                    .as_ref()
                    .is_some_and(|l| l.find(url.as_bytes()).is_none())
                {
                    return None;
                }
                if !re.is_match(&url) {
                    return None;
                }
                let to = re.replace(&url, replacement.as_str()).into_owned();
                (to != url).then_some(to)
            }
        }
    }
}

impl Filter for Redirect {
    type Config = Config;
    // No on_response: response headers, if any, are queued in the request phase.
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let mode = match (c.scheme, c.regex) {
            (Some(s), None) => {
                let scheme = s.to_ascii_lowercase();
                if scheme != "http" && scheme != "https" {
                    return Err(ConfigError::new("scheme", "must be http or https"));
                }
                if c.replacement.is_some() {
                    return Err(ConfigError::new(
                        "replacement",
                        "goes with regex, not scheme",
                    ));
                }
                if c.port == Some(0) {
                    return Err(ConfigError::new("port", "must be 1-65535"));
                }
                Mode::Scheme {
                    scheme,
                    port: c.port,
                }
            }
            (None, Some(pattern)) => {
                let re =
                    Regex::new(&pattern).map_err(|e| ConfigError::new("regex", e.to_string()))?;
                let Some(rep) = c.replacement else {
                    return Err(ConfigError::new(
                        "replacement",
                        "regex needs a replacement URL",
                    ));
                };
                if c.port.is_some() {
                    return Err(ConfigError::new("port", "goes with scheme, not regex"));
                }
                Mode::Regex(
                    re,
                    rep,
                    literal::required(&pattern).map(|l| Finder::new(&l).into_owned()),
                )
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "regex",
                    "give either scheme or regex, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "",
                    "give `scheme` (http→https) or `regex` + `replacement`",
                ));
            }
        };
        Ok(Self {
            mode,
            permanent: c.permanent,
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        // One host call for the three (on Portcullis), not one each.
        let [scheme, authority, path] = req.header_values([":scheme", ":authority", ":path"])?;
        let scheme = scheme.unwrap_or_else(|| "http".to_string());
        let (authority, path) = (authority.unwrap_or_default(), path.unwrap_or_default());
        Ok(match self.location(&scheme, &authority, &path) {
            Some(to) => Action::redirect(self.status(&req.method()?), to),
            None => Action::Continue,
        })
    }
}

portcullis_sdk::export_filter!(Redirect);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Result<Redirect, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(Redirect::new)
    }

    #[test]
    fn to_https() {
        let f = filter(r#"{"scheme":"https","port":443,"permanent":true}"#).unwrap();
        assert_eq!(
            f.location("http", "example.com:8080", "/a?b=1").as_deref(),
            Some("https://example.com/a?b=1")
        );
        assert_eq!(f.location("https", "example.com", "/a"), None, "no loop");
        assert_eq!(f.status("GET"), 301);
        assert_eq!(f.status("head"), 301);
        assert_eq!(f.status("POST"), 308);
        let f = filter(r#"{"scheme":"https","port":8443}"#).unwrap();
        assert_eq!(
            f.location("http", "[::1]:8080", "/").as_deref(),
            Some("https://[::1]:8443/")
        );
        assert_eq!(f.status("GET"), 302);
        assert_eq!(f.status("PUT"), 307);
    }

    #[test]
    fn by_regex() {
        let f = filter(
            r#"{"regex":"^https?://old\\.example\\.com/(.*)","replacement":"https://new.example.com/${1}"}"#,
        )
        .unwrap();
        assert_eq!(
            f.location("http", "old.example.com", "/a/b?c=d").as_deref(),
            Some("https://new.example.com/a/b?c=d")
        );
        assert_eq!(f.location("http", "other.example.com", "/a"), None);
        let same = filter(r#"{"regex":"^(.*)$","replacement":"${1}"}"#).unwrap();
        assert_eq!(
            same.location("http", "h", "/"),
            None,
            "a no-op rewrite does not loop"
        );
        let port =
            filter(r#"{"regex":"^http://h:8080/(.*)","replacement":"http://h/${1}"}"#).unwrap();
        assert_eq!(
            port.location("http", "h:8080", "/x").as_deref(),
            Some("http://h/x")
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |j: &str| filter(j).unwrap_err().field;
        assert_eq!(e(r#"{"scheme":"ftp"}"#), "scheme");
        assert_eq!(e(r#"{"regex":"("," replacement":"x"}"#), " replacement");
        assert_eq!(e(r#"{"regex":"(","replacement":"x"}"#), "regex");
        assert_eq!(e(r#"{"regex":"x"}"#), "replacement");
        assert_eq!(
            e(r#"{"scheme":"https","regex":"x","replacement":"y"}"#),
            "regex"
        );
        assert_eq!(e(r#"{"scheme":"https","port":70000}"#), "port");
        assert_eq!(e(r#"{}"#), "");
    }
}
