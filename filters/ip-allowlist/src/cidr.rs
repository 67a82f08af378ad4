//! CIDR blocks and IP canonicalisation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 network, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    /// IPv4 network and prefix length.
    V4(u32, u8),
    /// IPv6 network and prefix length.
    V6(u128, u8),
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
    /// An IPv4-mapped IPv6 block (`::ffff:10.0.0.0/104`) becomes its IPv4 block.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (
                a,
                Some(
                    l.parse::<u8>()
                        .map_err(|_| format!("`{text}`: bad prefix length `{l}`"))?,
                ),
            ),
            None => (text, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        match ip {
            IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(format!("`{text}`: an IPv4 prefix is at most /32"));
                }
                Ok(Cidr::V4(u32::from(v4) & mask32(len), len))
            }
            IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(format!("`{text}`: an IPv6 prefix is at most /128"));
                }
                if let Some(v4) = v6.to_ipv4_mapped()
                    && len >= 96
                {
                    return Ok(Cidr::V4(u32::from(v4) & mask32(len - 96), len - 96));
                }
                Ok(Cidr::V6(u128::from(v6) & mask128(len), len))
            }
        }
    }

    /// Whether `ip` (canonicalised first) is inside this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (Cidr::V4(net, len), IpAddr::V4(a)) => u32::from(a) & mask32(*len) == *net,
            (Cidr::V6(net, len), IpAddr::V6(a)) => u128::from(a) & mask128(*len) == *net,
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask128(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as dual-stack sockets report IPv4
/// peers) is the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Parses an address as found in `X-Forwarded-For` entries: a bare IP, `IP:port`,
/// `[v6]` or `[v6]:port`.
pub fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = e.parse::<std::net::SocketAddr>() {
        return Some(sa.ip());
    }
    if let Some(inner) = e.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Some((host, _port)) = e.rsplit_once(':') {
        return host.parse::<Ipv4Addr>().ok().map(IpAddr::V4);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn v4_blocks() {
        let c = Cidr::parse("10.0.0.0/8");
        assert_eq!(c, Ok(Cidr::V4(0x0a00_0000, 8)));
        let Ok(c) = c else { return };
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peer");
        assert!(!c.contains(ip("2001:db8::1")));
    }

    #[test]
    fn edges() {
        assert_eq!(Cidr::parse("0.0.0.0/0"), Ok(Cidr::V4(0, 0)));
        assert!(Cidr::parse("0.0.0.0/0").is_ok_and(|c| c.contains(ip("8.8.8.8"))));
        assert!(Cidr::parse("::/0").is_ok_and(|c| c.contains(ip("2001:db8::1"))));
        assert!(
            Cidr::parse("1.2.3.4")
                .is_ok_and(|c| c.contains(ip("1.2.3.4")) && !c.contains(ip("1.2.3.5")))
        );
        assert_eq!(Cidr::parse("10.1.2.3/8"), Ok(Cidr::V4(0x0a00_0000, 8)));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("::/129").is_err());
        assert!(Cidr::parse("banana").is_err());
        assert!(Cidr::parse("10.0.0.0/x").is_err());
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.0/104"),
            Ok(Cidr::V4(0x0a00_0000, 8))
        );
    }

    #[test]
    fn v6_blocks() {
        let Ok(c) = Cidr::parse("2001:db8::/32") else {
            panic!("valid block refused")
        };
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));
    }

    #[test]
    fn forwarded_entries() {
        assert_eq!(parse_forwarded(" 1.2.3.4 "), Some(ip("1.2.3.4")));
        assert_eq!(parse_forwarded("1.2.3.4:5678"), Some(ip("1.2.3.4")));
        assert_eq!(parse_forwarded("[2001:db8::1]:80"), Some(ip("2001:db8::1")));
        assert_eq!(parse_forwarded("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_forwarded("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_forwarded("unknown"), None);
    }
}
