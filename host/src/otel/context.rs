//! The W3C trace context (`traceparent`, <https://www.w3.org/TR/trace-context/>): read
//! from a request, written on the requests the proxy sends on.

use http::HeaderValue;

/// The `traceparent` header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent`: `00-TRACE_ID-PARENT_ID-FLAGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The caller's span (8 bytes, never all zero).
    pub parent_id: [u8; 8],
    /// Whether the caller sampled (records) this trace: bit 0 of the flags.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a header value; `None` when it is not a valid version-00 traceparent
    /// (or a later version's, read as 00 says a reader must).
    pub fn parse(value: &HeaderValue) -> Option<Self> {
        let b = value.as_bytes();
        // Version 00 is exactly 55 bytes; a later version may append `-…` fields.
        if b.len() < 55 || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_byte(b[0], b[1])?;
        if version == 0xff || (version == 0 && b.len() != 55) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        decode(&b[3..35], &mut trace_id)?;
        let mut parent_id = [0u8; 8];
        decode(&b[36..52], &mut parent_id)?;
        let flags = hex_byte(b[53], b[54])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value, `00-…-…-0x`.
    pub fn to_header(&self) -> HeaderValue {
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        encode(&self.trace_id, &mut out[3..35]);
        out[35] = b'-';
        encode(&self.parent_id, &mut out[36..52]);
        out[52] = b'-';
        out[53] = b'0';
        out[54] = if self.sampled { b'1' } else { b'0' };
        // Only hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// `id` in lower-case hex (the form logs and OTLP/JSON show).
pub fn hex(id: &[u8]) -> String {
    let mut out = vec![0u8; id.len() * 2];
    encode(id, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

fn encode(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn decode(hex: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = hex_byte(hex[2 * i], hex[2 * i + 1])?;
    }
    Some(())
}

/// Two lower-case hex digits (upper case is invalid in a traceparent).
fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    Some(digit(hi)? << 4 | digit(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_writes_back_the_spec_example() {
        let tp = TraceParent::parse(&HeaderValue::from_static(EXAMPLE));
        let Some(tp) = tp else {
            panic!("the spec's example did not parse")
        };
        assert!(tp.sampled);
        assert_eq!(hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&tp.parent_id), "00f067aa0ba902b7");
        assert_eq!(tp.to_header(), EXAMPLE);
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(
                TraceParent::parse(&HeaderValue::from_static(bad)),
                None,
                "{bad:?} was accepted"
            );
        }
        // A later version may carry more fields: read as version 00.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(TraceParent::parse(&HeaderValue::from_static(later)).is_some_and(|t| !t.sampled));
    }
}
