//! The route conditions beyond host, path, method and exact headers: a path regex,
//! header values by regex or presence, query parameters (present, equal, regex), and
//! the client's IP by CIDR (through `X-Forwarded-For` from trusted proxies) — their
//! types and how `routes[].match` writes them.

use std::net::IpAddr;

use super::walk::{Cx, Field, Fields};
use super::yaml::Kind;

/// The largest compiled regex accepted (bytes of its program): a pattern that
/// compiles past it is an error rather than a memory sink.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A regular expression with the text it was written as (which is what two patterns
/// are compared by).
#[derive(Debug, Clone)]
pub struct Pattern {
    /// As written.
    pub source: String,
    /// Compiled: searched anywhere in the value unless anchored with `^`/`$`.
    pub regex: regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    /// `source` compiled, or why it does not compile.
    pub fn new(source: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(source)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(|regex| Pattern {
                source: source.to_string(),
                regex,
            })
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => "the regex is too large".to_string(),
                // The parser's message ends with its one-line reason.
                e => {
                    let text = e.to_string();
                    let last = text.lines().last().unwrap_or("").trim();
                    last.trim_start_matches("error: ").to_string()
                }
            })
    }

    /// Whether `text` holds a match.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// A condition on a header's or a query parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueMatch {
    /// `{ present: true }`: there, whatever its value.
    Present,
    /// `value` (a scalar): exactly this.
    Equals(String),
    /// `{ regex: R }`: a value in which `R` finds a match.
    Regex(Pattern),
}

impl ValueMatch {
    /// Whether `value` satisfies it (`Present` holds for any value).
    pub fn holds(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Present => true,
            ValueMatch::Equals(want) => value == want.as_bytes(),
            ValueMatch::Regex(p) => std::str::from_utf8(value).is_ok_and(|v| p.is_match(v)),
        }
    }
}

/// An IP network: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `2001:db8::/32`, or a lone address (all its bits).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, bits) = match text.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (text, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => match b.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{text}`: the prefix length must be 0–{max}")),
            },
        };
        Ok(Cidr {
            addr: canonical(addr),
            bits,
        })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, width) = match (self.addr, canonical(ip)) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let bits = u32::from(self.bits);
        if bits == 0 {
            return true;
        }
        let shift = width - bits;
        (a >> shift) == (b >> shift)
    }
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as the IPv4 address it carries.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `match.client_ip`: the client's address must be in one of the blocks. The client
/// is the peer, or — when the peer is one of `trusted_proxies` — the
/// `X-Forwarded-For` entry `depth` places from the right (as the `ip-allowlist`
/// filter reads it).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientIpMatch {
    /// The blocks the client must be in.
    pub cidrs: Vec<Cidr>,
    /// Peers whose `X-Forwarded-For` is believed; empty: the peer is the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Which `X-Forwarded-For` entry, from the right (1 = the last).
    pub depth: usize,
}

/// `any`, `all` and `not` under `match`: conditions combined. Each is a `match` of
/// its own (every field it gives must hold), checked in full on the routes the index
/// leaves, so a route without them pays nothing for them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Logic {
    /// At least one of them must hold (empty: not given).
    pub any: Vec<super::RouteMatch>,
    /// Every one of them must hold.
    pub all: Vec<super::RouteMatch>,
    /// It must not hold.
    pub not: Option<super::RouteMatch>,
}

/// `path_regex: R`.
pub(crate) fn path_regex(cx: &mut Cx, field: &Field) -> Option<Pattern> {
    let text = field.string(cx)?;
    pattern(cx, field, &text)
}

fn pattern(cx: &mut Cx, field: &Field, text: &str) -> Option<Pattern> {
    match Pattern::new(text) {
        Ok(p) => Some(p),
        Err(why) => {
            field.error(cx, format!("`{text}` is not a regex: {why}"));
            None
        }
    }
}

/// A value condition: a scalar (equals), `{ present: true }` or `{ regex: R }`.
pub(crate) fn value_match(cx: &mut Cx, field: &Field) -> Option<ValueMatch> {
    if !matches!(field.node.kind, Kind::Map(_)) {
        return field.string(cx).map(ValueMatch::Equals);
    }
    let mut f = Fields::new(cx, field)?;
    let present = f.take("present");
    let regex = f.take("regex");
    f.finish(cx);
    match (present, regex) {
        (Some(p), None) => match p.bool(cx)? {
            true => Some(ValueMatch::Present),
            false => {
                p.error(cx, "only `present: true` is a condition");
                None
            }
        },
        (None, Some(r)) => {
            let text = r.string(cx)?;
            pattern(cx, &r, &text).map(ValueMatch::Regex)
        }
        _ => {
            field.error(
                cx,
                "give a value, or exactly one of `present: true` and `regex: R`",
            );
            None
        }
    }
}

/// `query: { NAME: condition }`.
pub(crate) fn query(cx: &mut Cx, field: &Field) -> Option<Vec<(String, ValueMatch)>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (name, value) in field.entries(cx)? {
        match value_match(cx, &value) {
            Some(m) => out.push((name, m)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `client_ip: [CIDR, ...]`, or `{ cidrs: [...], trusted_proxies: [...], depth: N }`.
pub(crate) fn client_ip(cx: &mut Cx, field: &Field) -> Option<ClientIpMatch> {
    if !matches!(field.node.kind, Kind::Map(_)) {
        return Some(ClientIpMatch {
            cidrs: cidrs(cx, field)?,
            trusted_proxies: Vec::new(),
            depth: 1,
        });
    }
    let mut f = Fields::new(cx, field)?;
    let list = f.require(cx, "cidrs").map(|v| cidrs(cx, &v));
    let trusted = f.take("trusted_proxies").map(|v| cidrs(cx, &v));
    let depth = f
        .take("depth")
        .map(|v| v.int(cx, 1, 64).map(|d| d as usize));
    f.finish(cx);
    Some(ClientIpMatch {
        cidrs: list??,
        trusted_proxies: trusted.unwrap_or(Some(Vec::new()))?,
        depth: depth.unwrap_or(Some(1))?,
    })
}

fn cidrs(cx: &mut Cx, field: &Field) -> Option<Vec<Cidr>> {
    let items = field.string_list(cx)?;
    if items.is_empty() {
        field.error(cx, "names no address");
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (text, line) in items {
        match Cidr::parse(&text) {
            Ok(c) => out.push(c),
            Err(why) => {
                ok = false;
                cx.error(line, &field.path, why);
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let c = |s: &str| Cidr::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(c("10.0.0.0/8").contains(ip("10.200.1.1")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")), "v4-mapped");
        assert!(c("192.168.1.7").contains(ip("192.168.1.7")));
        assert!(!c("192.168.1.7").contains(ip("192.168.1.8")));
        assert!(c("2001:db8::/32").contains(ip("2001:db8:1::5")));
        assert!(!c("2001:db8::/32").contains(ip("10.0.0.1")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
    }

    #[test]
    fn value_conditions() {
        let re = Pattern::new("^v[0-9]+$").unwrap_or_else(|e| panic!("{e}"));
        assert!(ValueMatch::Regex(re.clone()).holds(b"v12"));
        assert!(!ValueMatch::Regex(re).holds(b"v1x"));
        assert!(ValueMatch::Present.holds(b""));
        assert!(ValueMatch::Equals("a".into()).holds(b"a"));
        assert!(!ValueMatch::Equals("a".into()).holds(b"A"));
        assert!(Pattern::new("(").is_err());
        assert!(Pattern::new("a{100000}{100000}").is_err(), "too large");
    }
}
