//! The server name (SNI) of a TLS ClientHello, read from the first bytes of a
//! connection without terminating TLS: SNI routing with passthrough.
//!
//! Every length is checked against what is there: garbage, a truncated hello or one
//! that lies about its lengths is "not TLS" or "not yet complete", never a panic.

/// The most a ClientHello may take before the proxy stops waiting for its end: the
/// largest TLS record (16 KiB) plus its header, and a little for a hello split over
/// two records.
pub const MAX_HELLO: usize = 16 * 1024 + 5 + 1024;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Too few bytes to tell: read more.
    Incomplete,
    /// Not a TLS ClientHello (or a malformed one).
    NotTls,
    /// A whole ClientHello, with the server name it asks for, if any.
    Tls(Option<String>),
}

/// Reads the ClientHello at the start of `buf`.
pub fn parse(buf: &[u8]) -> Hello {
    // The handshake message may span records: gather their payloads first.
    let mut handshake = Vec::new();
    let mut rest = buf;
    loop {
        let Some(header) = rest.get(..5) else {
            return Hello::Incomplete;
        };
        // Content type 22 (handshake), protocol version 3.x.
        if header[0] != 22 || header[1] != 3 {
            return Hello::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > 16 * 1024 + 256 {
            return Hello::NotTls;
        }
        let Some(payload) = rest.get(5..5 + len) else {
            return Hello::Incomplete;
        };
        handshake.extend_from_slice(payload);
        rest = &rest[5 + len..];
        match hello_body(&handshake) {
            Body::Incomplete if handshake.len() < MAX_HELLO => continue,
            Body::Incomplete | Body::Bad => return Hello::NotTls,
            Body::Whole(body) => return server_name(body).map_or(Hello::NotTls, Hello::Tls),
        }
    }
}

enum Body<'a> {
    Incomplete,
    Bad,
    Whole(&'a [u8]),
}

/// The ClientHello body within the gathered handshake bytes.
fn hello_body(handshake: &[u8]) -> Body<'_> {
    let Some(&[kind, a, b, c]) = handshake.get(..4) else {
        return Body::Incomplete;
    };
    if kind != 1 {
        return Body::Bad;
    }
    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
    match handshake.get(4..4 + len) {
        Some(body) => Body::Whole(body),
        None => Body::Incomplete,
    }
}

/// A cursor over a message whose every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a length prefix of one byte.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    /// A vector with a length prefix of two bytes.
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

/// The `server_name` extension's host name in a ClientHello body: `Some(None)` when
/// it has none, `None` when the body is malformed.
fn server_name(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions at all (TLS 1.2 may omit them)
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                // A host name is ASCII (RFC 6066 §3); anything else is refused.
                let name = std::str::from_utf8(name).ok()?;
                if name.is_empty() || !name.is_ascii() {
                    return None;
                }
                return Some(Some(name.to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first bytes a real rustls client sends, asking for `name`.
    fn real_hello(name: &str, sni: bool) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|e| panic!("{e}"))
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::tls::client::NoVerification))
            .with_no_client_auth();
        config.enable_sni = sni;
        let server = rustls::pki_types::ServerName::try_from(name.to_owned())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap_or_else(|e| panic!("{e}"));
        }
        out
    }

    #[test]
    fn a_real_hello_names_its_server() {
        let hello = real_hello("Db.Example.com", true);
        assert_eq!(parse(&hello), Hello::Tls(Some("db.example.com".into())));
        assert_eq!(
            parse(&real_hello("db.example.com", false)),
            Hello::Tls(None)
        );
    }

    #[test]
    fn every_prefix_of_a_hello_asks_for_more() {
        let hello = real_hello("a.example.com", true);
        for n in 0..hello.len() {
            assert_eq!(parse(&hello[..n]), Hello::Incomplete, "after {n} bytes");
        }
    }

    #[test]
    fn garbage_is_not_tls_and_never_panics() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Hello::NotTls);
        assert_eq!(parse(b"SSH-2.0-OpenSSH_9.6\r\n"), Hello::NotTls);
        let hello = real_hello("a.example.com", true);
        // Every single-byte corruption of a real hello, and random bytes after a
        // handshake header: whatever comes out, it comes out without a panic.
        for i in 0..hello.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = hello.clone();
                bad[i] ^= flip;
                let _ = parse(&bad);
            }
        }
        for _ in 0..2000 {
            let len = rand::random_range(0..600);
            let mut junk: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            if junk.len() > 2 {
                junk[0] = 22;
                junk[1] = 3;
            }
            let _ = parse(&junk);
        }
    }

    #[test]
    fn lengths_that_lie_are_refused() {
        // A record that says 5 bytes, holding a handshake that says far more, then a
        // second record that is not a handshake.
        let bytes = [22, 3, 1, 0, 5, 1, 0xff, 0xff, 0xff, 0, 23, 3, 3, 0, 1, 0];
        assert_eq!(parse(&bytes), Hello::NotTls);
        // A ClientHello whose SNI list claims more than it holds.
        let mut hello = real_hello("a.example.com", true);
        let at = hello
            .windows(13)
            .position(|w| w == b"a.example.com")
            .unwrap_or_else(|| panic!("no name in the hello"));
        hello[at - 2] = 0xff; // the name's length
        assert_eq!(parse(&hello), Hello::NotTls);
    }
}
