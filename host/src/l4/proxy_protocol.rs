//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy sends first on
//! a connection to tell the next hop who the client is. Parsed from trusted
//! downstreams; written to upstreams that ask for it.
//!
//! Parsing checks every length against what is there: a malformed header is an
//! error for its connection alone, never a panic.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The version 2 signature, the first 12 bytes of a v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The most a v2 header may take that the proxy reads (its addresses and TLVs).
pub const V2_MAX: usize = 16 + 536;

/// What the first bytes of a connection from a trusted peer say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    /// Too few bytes to tell: read more.
    Incomplete,
    /// A whole header of `length` bytes; `source` is the client it names (`None` for
    /// v1 `UNKNOWN` and v2 `LOCAL`: the connection's own peer stands).
    Done {
        /// Bytes the header takes.
        length: usize,
        /// The original client.
        source: Option<SocketAddr>,
        /// The address the client connected to.
        destination: Option<SocketAddr>,
    },
}

/// Reads a v1 or v2 header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Header, String> {
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] == V2_SIGNATURE[..sig_len] {
        return if sig_len < V2_SIGNATURE.len() {
            Ok(Header::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    let v1_len = buf.len().min(6);
    if buf[..v1_len] == b"PROXY "[..v1_len] {
        return parse_v1(buf);
    }
    Err("the connection does not start with a PROXY protocol header".into())
}

fn parse_v1(buf: &[u8]) -> Result<Header, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("a PROXY v1 header longer than 107 bytes".into())
        } else {
            Ok(Header::Incomplete)
        };
    };
    if end + 2 > V1_MAX {
        return Err("a PROXY v1 header longer than 107 bytes".into());
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| "a PROXY v1 header not in ASCII")?;
    let mut parts = line.split(' ');
    let _proxy = parts.next();
    let length = end + 2;
    match parts.next() {
        Some("UNKNOWN") => Ok(Header::Done {
            length,
            source: None,
            destination: None,
        }),
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, dst, sport, dport] = fields[..] else {
                return Err(format!("a PROXY v1 header of {} fields", fields.len() + 2));
            };
            let ip = |s: &str| -> Result<IpAddr, String> {
                let ip: IpAddr = s.parse().map_err(|_| format!("`{s}` is not an address"))?;
                if ip.is_ipv4() != (family == "TCP4") {
                    return Err(format!("`{s}` is not a {family} address"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, String> {
                // No sign, no leading zero (the specification's form).
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || s.starts_with('+') {
                    return Err(format!("`{s}` is not a port"));
                }
                s.parse().map_err(|_| format!("`{s}` is not a port"))
            };
            Ok(Header::Done {
                length,
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            })
        }
        other => Err(format!(
            "a PROXY v1 header of protocol {:?}",
            other.unwrap_or_default()
        )),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Header, String> {
    let Some(&[ver_cmd, family, a, b]) = buf.get(12..16) else {
        return Ok(Header::Incomplete);
    };
    if ver_cmd >> 4 != 2 {
        return Err(format!("a PROXY v2 header of version {}", ver_cmd >> 4));
    }
    let len = usize::from(u16::from_be_bytes([a, b]));
    if 16 + len > V2_MAX {
        return Err(format!("a PROXY v2 header of {len} bytes of addresses"));
    }
    let Some(body) = buf.get(16..16 + len) else {
        return Ok(Header::Incomplete);
    };
    let length = 16 + len;
    let local = Header::Done {
        length,
        source: None,
        destination: None,
    };
    match ver_cmd & 0x0f {
        0 => return Ok(local), // LOCAL: the proxy's own connection (a health check)
        1 => {}
        cmd => return Err(format!("a PROXY v2 header with command {cmd}")),
    }
    // High nibble: address family; low: transport (1 stream, 2 datagram).
    let addresses = match family >> 4 {
        1 => body.get(..12).map(|b| {
            let ip = |o: usize| IpAddr::from([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }),
        2 => body.get(..36).map(|b| {
            let ip = |o: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&b[o..o + 16]);
                IpAddr::from(Ipv6Addr::from(octets))
            };
            let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }),
        // AF_UNSPEC and AF_UNIX: no address the proxy can use; the peer stands.
        0 | 3 => return Ok(local),
        f => return Err(format!("a PROXY v2 header of address family {f}")),
    };
    match addresses {
        Some((source, destination)) => Ok(Header::Done {
            length,
            source: Some(source),
            destination: Some(destination),
        }),
        None => Err("a PROXY v2 header too short for its addresses".into()),
    }
}

/// The v1 header naming `source` connected to `destination`. Of two families the
/// IPv4 one is written as IPv4-mapped IPv6.
pub fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let family = if s.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        s.ip(),
        d.ip(),
        s.port(),
        d.port()
    )
    .into_bytes()
}

/// The v2 header (`PROXY` command, stream transport) naming `source` connected to
/// `destination`.
pub fn v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (s, d) = same_family(source, destination);
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&si.octets());
            out.extend_from_slice(&di.octets());
        }
        (si, di) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(si).octets());
            out.extend_from_slice(&v6(di).octets());
        }
    }
    out.extend_from_slice(&s.port().to_be_bytes());
    out.extend_from_slice(&d.port().to_be_bytes());
    out
}

/// Both addresses in one family: IPv4 ones mapped to IPv6 when the other is IPv6.
fn same_family(s: SocketAddr, d: SocketAddr) -> (SocketAddr, SocketAddr) {
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    let map = |a: SocketAddr| match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (map(s), map(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn what_is_written_reads_back() {
        let cases = [
            ("203.0.113.7:51000", "10.0.0.1:443"),
            ("[2001:db8::1]:51000", "[2001:db8::2]:443"),
        ];
        for (s, d) in cases {
            for header in [v1(addr(s), addr(d)), v2(addr(s), addr(d))] {
                let mut with_data = header.clone();
                with_data.extend_from_slice(b"GET / HTTP/1.1\r\n");
                assert_eq!(
                    parse(&with_data),
                    Ok(Header::Done {
                        length: header.len(),
                        source: Some(addr(s)),
                        destination: Some(addr(d)),
                    })
                );
                for n in 0..header.len() {
                    assert_eq!(parse(&header[..n]), Ok(Header::Incomplete), "{n} bytes");
                }
            }
        }
        assert_eq!(
            v1(addr("203.0.113.7:1"), addr("10.0.0.1:2")),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 1 2\r\n"
        );
    }

    #[test]
    fn mixed_families_go_as_ipv6() {
        let h = v1(addr("203.0.113.7:1"), addr("[::1]:2"));
        assert_eq!(h, b"PROXY TCP6 ::ffff:203.0.113.7 ::1 1 2\r\n");
    }

    #[test]
    fn unknown_and_local_leave_the_peer() {
        let done = |length| {
            Ok(Header::Done {
                length,
                source: None,
                destination: None,
            })
        };
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), done(15));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), done(16));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let bad: [&[u8]; 8] = [
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n",
        ];
        for b in bad {
            assert!(parse(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let mut endless = b"PROXY TCP4 ".to_vec();
        endless.resize(200, b'1');
        assert!(parse(&endless).is_err(), "no CRLF within 107 bytes");
        // v2: wrong version, command, family, and addresses shorter than the family's.
        for (byte, value) in [(12, 0x31u8), (12, 0x22), (13, 0x41)] {
            let mut h = v2(addr("1.2.3.4:1"), addr("5.6.7.8:2"));
            h[byte] = value;
            assert!(parse(&h).is_err(), "byte {byte} = {value:#x}");
        }
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(parse(&short).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(parse(&huge).is_err());
    }
}
