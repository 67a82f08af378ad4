//! [`H2Raw`]: HTTP/2 written frame by frame, for what a well-behaved client never
//! sends (rapid resets, too many streams, endless header blocks).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Frame types (RFC 9113 §6).
pub const DATA: u8 = 0;
/// HEADERS.
pub const HEADERS: u8 = 1;
/// RST_STREAM.
pub const RST_STREAM: u8 = 3;
/// SETTINGS.
pub const SETTINGS: u8 = 4;
/// GOAWAY.
pub const GOAWAY: u8 = 7;
/// CONTINUATION.
pub const CONTINUATION: u8 = 9;
/// END_STREAM flag.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS flag.
pub const END_HEADERS: u8 = 0x4;
/// Error codes (RFC 9113 §7).
pub const CANCEL: u32 = 0x8;
/// REFUSED_STREAM.
pub const REFUSED_STREAM: u32 = 0x7;
/// ENHANCE_YOUR_CALM.
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// A frame read from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream id.
    pub stream: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Whether a HEADERS frame's block starts with `:status` `code` (the encodings
    /// hyper uses: indexed for 200, else a literal, Huffman-coded, of name 8).
    pub fn has_status(&self, code: u16) -> bool {
        if self.kind != HEADERS {
            return false;
        }
        if code == 200 {
            return self.payload.first() == Some(&0x88);
        }
        let coded = huffman_digits(&code.to_string());
        let mut want = vec![0x48, 0x80 | coded.len() as u8];
        want.extend(coded);
        self.payload.starts_with(&want)
    }
}

/// One HTTP/2 connection driven by hand.
pub struct H2Raw {
    stream: tokio::net::TcpStream,
    input: Vec<u8>,
}

impl H2Raw {
    /// Connects and sends the preface, empty SETTINGS, and an ACK of the server's.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        let mut raw = H2Raw {
            stream,
            input: Vec::new(),
        };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        hello.extend(frame(SETTINGS, 0x1, 0, &[]));
        raw.send(&hello)
            .await
            .unwrap_or_else(|e| panic!("send preface: {e}"));
        raw
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads frames until `timeout` passes, `until` holds for the frames so far, or
    /// the server closes; returns them and whether the server closed.
    pub async fn read_frames(
        &mut self,
        timeout: Duration,
        until: impl Fn(&[Frame]) -> bool,
    ) -> (Vec<Frame>, bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            while self.input.len() >= 9 {
                let len =
                    u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]]) as usize;
                if self.input.len() < 9 + len {
                    break;
                }
                let head: Vec<u8> = self.input.drain(..9 + len).collect();
                frames.push(Frame {
                    kind: head[3],
                    flags: head[4],
                    stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                    payload: head[9..].to_vec(),
                });
            }
            if until(&frames) {
                return (frames, false);
            }
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Err(_) => return (frames, false),
                Ok(Ok(0)) | Ok(Err(_)) => return (frames, true),
                Ok(Ok(n)) => self.input.extend_from_slice(&buf[..n]),
            }
        }
    }
}

/// A frame of `kind` with `flags` on `stream`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK block for `GET path` with `extra` headers (no Huffman, no indexing).
pub fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![0x82, 0x86]; // :method GET, :scheme http
    literal_indexed_name(&mut out, 4, path); // :path
    literal_indexed_name(&mut out, 1, "h2.test"); // :authority
    for (name, value) in extra {
        out.push(0x00);
        string(&mut out, name);
        string(&mut out, value);
    }
    out
}

/// A HEADERS frame opening `stream` with `GET path`, ending the stream.
pub fn get(stream: u32, path: &str) -> Vec<u8> {
    frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &request_block(path, &[]),
    )
}

/// RST_STREAM on `stream` with `code`.
pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

fn literal_indexed_name(out: &mut Vec<u8>, index: u8, value: &str) {
    out.push(index); // 0000 + 4-bit index: literal without indexing
    string(out, value);
}

fn string(out: &mut Vec<u8>, s: &str) {
    integer(out, 7, 0, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, n: u32, flags: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// The HPACK Huffman code (RFC 7541 appendix B) of a string of digits.
fn huffman_digits(digits: &str) -> Vec<u8> {
    let (mut bits, mut n) = (0u64, 0u32);
    for d in digits.bytes() {
        let (code, len) = match d {
            b'0'..=b'2' => (u64::from(d - b'0'), 5),
            _ => (u64::from(d - b'3') + 0b011001, 6),
        };
        bits = (bits << len) | code;
        n += len;
    }
    let pad = (8 - n % 8) % 8;
    bits = (bits << pad) | ((1 << pad) - 1);
    n += pad;
    (0..n / 8).rev().map(|i| (bits >> (i * 8)) as u8).collect()
}
