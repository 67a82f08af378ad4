//! `ip-allowlist`: lets a request through only when its client address is allowed.
//!
//! The client is the peer (`source.address`), or, with `source: x-forwarded-for` and a
//! peer in `trusted_proxies`, the `X-Forwarded-For` entry `depth` places from the
//! right. A `deny` match always refuses; a non-empty `allow` list must match. See
//! `docs/filters/ip-allowlist.md`.

mod cidr;

use std::net::IpAddr;

use portcullis_sdk::{Action, ConfigError, Error, Filter, Request};
use serde::Deserialize;

pub use cidr::{Cidr, canonical, parse_forwarded};

/// Where the client address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The TCP peer.
    #[default]
    Peer,
    /// `X-Forwarded-For`, when the peer is a trusted proxy.
    XForwardedFor,
}

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    source: Source,
    #[serde(default = "one")]
    depth: u32,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default = "forbidden")]
    status: u32,
}

fn one() -> u32 {
    1
}

fn forbidden() -> u32 {
    403
}

/// The validated filter.
#[derive(Debug)]
pub struct IpAllowlist {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    source: Source,
    depth: usize,
    trusted: Vec<Cidr>,
    status: u32,
}

fn blocks(field: &str, list: &[String]) -> Result<Vec<Cidr>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| Cidr::parse(s).map_err(|m| ConfigError::new(format!("{field}[{i}]"), m)))
        .collect()
}

impl IpAllowlist {
    /// Whether `ip` may pass: not denied, and allowed (or no allow list).
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.deny.iter().any(|c| c.contains(ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip))
    }

    /// The address to judge, given the peer and the `X-Forwarded-For` values in order.
    /// Forwarded entries count only from a trusted peer; when the list is too short or
    /// the entry unreadable, the peer itself is judged.
    pub fn client(&self, peer: IpAddr, forwarded: &[String]) -> IpAddr {
        if self.source == Source::Peer || !self.trusted.iter().any(|c| c.contains(peer)) {
            return canonical(peer);
        }
        let entries: Vec<&str> = forwarded.iter().flat_map(|v| v.split(',')).collect();
        entries
            .len()
            .checked_sub(self.depth)
            .and_then(|i| entries.get(i))
            .and_then(|e| parse_forwarded(e))
            .map(canonical)
            .unwrap_or_else(|| canonical(peer))
    }
}

impl Filter for IpAllowlist {
    type Config = Config;
    // No on_response: response headers, if any, are queued in the request phase.
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.depth == 0 {
            return Err(ConfigError::new(
                "depth",
                "must be at least 1 (1 = the rightmost entry)",
            ));
        }
        if !(100..=599).contains(&c.status) {
            return Err(ConfigError::new(
                "status",
                "must be an HTTP status (100-599)",
            ));
        }
        if c.source == Source::XForwardedFor && c.trusted_proxies.is_empty() {
            return Err(ConfigError::new(
                "trusted_proxies",
                "source: x-forwarded-for needs the proxies whose header is believed",
            ));
        }
        Ok(Self {
            allow: blocks("allow", &c.allow)?,
            deny: blocks("deny", &c.deny)?,
            source: c.source,
            depth: c.depth as usize,
            trusted: blocks("trusted_proxies", &c.trusted_proxies)?,
            status: c.status,
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        let Some(peer) = req.client_ip()? else {
            return Ok(Action::deny(self.status, "forbidden: no client address\n"));
        };
        let forwarded: Vec<String> = if self.source == Source::XForwardedFor {
            req.headers()?
                .into_iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|(_, v)| v)
                .collect()
        } else {
            Vec::new()
        };
        let ip = self.client(peer, &forwarded);
        Ok(if self.permits(ip) {
            Action::Continue
        } else {
            Action::deny(self.status, "forbidden\n")
        })
    }
}

portcullis_sdk::export_filter!(IpAllowlist);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Result<IpAllowlist, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(IpAllowlist::new)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_and_deny() {
        let f =
            filter(r#"{"allow":["10.0.0.0/8","2001:db8::/32"],"deny":["10.6.6.0/24"]}"#).unwrap();
        assert!(f.permits(ip("10.1.1.1")));
        assert!(!f.permits(ip("10.6.6.6")), "deny beats allow");
        assert!(!f.permits(ip("192.168.1.1")));
        assert!(f.permits(ip("2001:db8::5")));
        assert!(f.permits(canonical(ip("::ffff:10.1.1.1"))));
    }

    #[test]
    fn deny_only() {
        let f = filter(r#"{"deny":["127.0.0.0/8"]}"#).unwrap();
        assert!(!f.permits(ip("127.0.0.1")));
        assert!(f.permits(ip("8.8.8.8")));
    }

    #[test]
    fn forwarded_for_from_trusted_peers_only() {
        let f = filter(
            r#"{"allow":["1.1.1.1/32"],"source":"x-forwarded-for","depth":2,
                "trusted_proxies":["127.0.0.1/32"]}"#,
        )
        .unwrap();
        let xff = vec!["9.9.9.9, 1.1.1.1".to_string(), "127.0.0.5".to_string()];
        assert_eq!(f.client(ip("127.0.0.1"), &xff), ip("1.1.1.1"));
        assert_eq!(
            f.client(ip("10.0.0.1"), &xff),
            ip("10.0.0.1"),
            "untrusted peer"
        );
        assert_eq!(f.client(ip("127.0.0.1"), &[]), ip("127.0.0.1"), "no header");
        let bad = vec!["junk, x".to_string()];
        assert_eq!(f.client(ip("127.0.0.1"), &bad), ip("127.0.0.1"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = filter(r#"{"allow":["10.0.0.0/8","10.0.0.0/40"]}"#).unwrap_err();
        assert_eq!(e.field, "allow[1]");
        assert_eq!(filter(r#"{"depth":0}"#).unwrap_err().field, "depth");
        assert_eq!(filter(r#"{"status":42}"#).unwrap_err().field, "status");
        assert_eq!(
            filter(r#"{"source":"x-forwarded-for"}"#).unwrap_err().field,
            "trusted_proxies"
        );
        assert_eq!(filter(r#"{"source":"dns"}"#).unwrap_err().field, "source");
        assert!(
            filter(r#"{"alow":[]}"#)
                .unwrap_err()
                .message
                .contains("alow")
        );
    }
}
