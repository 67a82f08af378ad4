//! HTTP/1 request framing, followed byte by byte: where each head starts and ends,
//! and how long each body is (RFC 9112 §6), so the guard can check every head.

use std::mem::MaybeUninit;

use bytes::BytesMut;

use super::Reject;

/// The HTTP/2 prior-knowledge connection preface.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Header slots parsed on the stack; a larger `max_headers` uses the heap.
pub(crate) const STACK_HEADERS: usize = 128;

/// Where in the request stream the guard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Expecting (or inside) a request head.
    Head,
    /// Inside a body of this many more bytes.
    Body(u64),
    /// Inside a chunked body.
    Chunk(Chunk),
    /// No longer parsing: everything goes to hyper as is.
    Passthrough,
    /// A head was rejected: nothing more goes to hyper.
    Hold,
}

/// Where in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// The chunk-size line; `ext` once past the digits (extensions are skipped).
    Size { value: u64, digits: u32, ext: bool },
    /// Chunk data of this many more bytes.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// The trailer section; `len` is the current line's length.
    Trailer { len: usize },
}

const SIZE_START: Chunk = Chunk::Size {
    value: 0,
    digits: 0,
    ext: false,
};

/// What one [`Framing::feed`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Events {
    /// A head has started (bytes of a head are buffered).
    pub head_started: bool,
    /// Heads completed and handed on.
    pub heads: u32,
    /// A head was rejected: its index on the connection and why.
    pub rejected: Option<(u64, Reject)>,
    /// The stream stopped being parsed (HTTP/2, CONNECT, or not HTTP/1 at all).
    pub passthrough: bool,
}

/// The framing state of one connection's request stream.
pub(crate) struct Framing {
    mode: Mode,
    max_bytes: usize,
    max_headers: usize,
    /// Heads handed on (including a rejected one's stand-in).
    heads: u64,
}

enum Parsed {
    Partial,
    Complete(usize, Mode),
    Reject(Reject),
    Unknown,
}

impl Framing {
    pub(crate) fn new(max_bytes: usize, max_headers: usize) -> Self {
        Self {
            mode: Mode::Head,
            max_bytes,
            max_headers,
            heads: 0,
        }
    }

    /// The framing of a connection that resumes after parking, with `heads` heads
    /// handed on before: at the start of a head, and past the HTTP/2 preface check
    /// (a connection that has carried an HTTP/1 request is HTTP/1).
    pub(crate) fn resume(max_bytes: usize, max_headers: usize, heads: u64) -> Self {
        Self {
            heads,
            ..Self::new(max_bytes, max_headers)
        }
    }

    /// Heads handed on so far (including a rejected one's stand-in).
    pub(crate) fn heads(&self) -> u64 {
        self.heads
    }

    /// Whether the stream is between messages: the next byte starts a head.
    pub(crate) fn at_head(&self) -> bool {
        self.mode == Mode::Head
    }

    /// Whether a rejection stopped the stream.
    pub(crate) fn is_holding(&self) -> bool {
        self.mode == Mode::Hold
    }

    /// Whether the stream is passed on unparsed.
    pub(crate) fn is_passthrough(&self) -> bool {
        self.mode == Mode::Passthrough
    }

    /// Stops parsing (after an upgrade).
    pub(crate) fn passthrough(&mut self) {
        if self.mode != Mode::Hold {
            self.mode = Mode::Passthrough;
        }
    }

    /// Moves from `input` to `output` everything that may go on to hyper: whole heads
    /// that pass the checks and body bytes. A partial head stays in `input`.
    pub(crate) fn feed(
        &mut self,
        input: &mut BytesMut,
        output: &mut BytesMut,
        eof: bool,
    ) -> Events {
        let mut ev = Events::default();
        loop {
            match self.mode {
                Mode::Hold => {
                    input.clear();
                    return ev;
                }
                Mode::Passthrough => {
                    output.extend_from_slice(&input.split());
                    return ev;
                }
                Mode::Body(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    output.extend_from_slice(&input.split_to(take));
                    let left = left - take as u64;
                    if left > 0 {
                        self.mode = Mode::Body(left);
                        return ev;
                    }
                    self.mode = Mode::Head;
                }
                Mode::Chunk(chunk) => {
                    if !self.chunked(chunk, input, output) {
                        return ev;
                    }
                }
                Mode::Head => {
                    if input.is_empty() {
                        return ev;
                    }
                    ev.head_started = true;
                    if self.heads == 0 {
                        let n = input.len().min(H2_PREFACE.len());
                        if input[..n] == H2_PREFACE[..n] {
                            if n == H2_PREFACE.len() {
                                self.mode = Mode::Passthrough;
                                ev.passthrough = true;
                                continue;
                            }
                            if !eof {
                                return ev;
                            }
                        }
                    }
                    match self.parse_head(input) {
                        Parsed::Partial if input.len() > self.max_bytes => {
                            return self.reject(Reject::HeadersTooLarge, input, ev);
                        }
                        Parsed::Partial => return ev,
                        Parsed::Complete(len, _) if len > self.max_bytes => {
                            return self.reject(Reject::HeadersTooLarge, input, ev);
                        }
                        Parsed::Complete(len, next) => {
                            output.extend_from_slice(&input.split_to(len));
                            self.heads += 1;
                            ev.heads += 1;
                            self.mode = next;
                            ev.passthrough |= next == Mode::Passthrough;
                        }
                        Parsed::Reject(why) => return self.reject(why, input, ev),
                        Parsed::Unknown => {
                            self.mode = Mode::Passthrough;
                            ev.passthrough = true;
                        }
                    }
                }
            }
        }
    }

    fn reject(&mut self, why: Reject, input: &mut BytesMut, mut ev: Events) -> Events {
        ev.rejected = Some((self.heads, why));
        self.heads += 1;
        self.mode = Mode::Hold;
        input.clear();
        ev
    }

    fn parse_head(&self, input: &[u8]) -> Parsed {
        // The common limits fit on the stack: no allocation per request head. The slots
        // stay uninitialised (httparse fills what it uses): initialising 128 of them
        // was 4 KiB of stores per head, as much as the parse itself.
        let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        let mut on_heap = Vec::new();
        let headers = if self.max_headers <= STACK_HEADERS {
            &mut on_stack[..self.max_headers]
        } else {
            on_heap.resize_with(self.max_headers, MaybeUninit::uninit);
            &mut on_heap[..]
        };
        let mut req = httparse::Request::new(&mut []);
        match req.parse_with_uninit_headers(input, headers) {
            Ok(httparse::Status::Partial) => Parsed::Partial,
            Ok(httparse::Status::Complete(len)) => match body_of(&req) {
                Ok(next) => Parsed::Complete(len, next),
                Err(why) => Parsed::Reject(why),
            },
            Err(httparse::Error::TooManyHeaders) => Parsed::Reject(Reject::TooManyHeaders),
            Err(_) => Parsed::Unknown,
        }
    }

    /// Follows a chunked body; true once it has ended (the mode is `Head` again),
    /// false when more input is needed (or the stream turned to passthrough).
    fn chunked(&mut self, mut chunk: Chunk, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        let mut i = 0;
        let mut done = false;
        while i < input.len() && !done {
            let b = input[i];
            chunk = match chunk {
                Chunk::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    i += take;
                    let left = left - take as u64;
                    if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    }
                }
                Chunk::Size { value, digits, ext } => {
                    i += 1;
                    match (b, hex(b)) {
                        (b'\n', _) if digits == 0 => return self.give_up(input, output),
                        (b'\n', _) if value == 0 => Chunk::Trailer { len: 0 },
                        (b'\n', _) => Chunk::Data(value),
                        (b'\r', _) => chunk,
                        (_, _) if ext => chunk,
                        (b';' | b' ' | b'\t', _) => Chunk::Size {
                            value,
                            digits,
                            ext: true,
                        },
                        (_, Some(d)) if digits < 16 => Chunk::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                            ext,
                        },
                        _ => return self.give_up(input, output),
                    }
                }
                Chunk::DataEnd => {
                    i += 1;
                    match b {
                        b'\r' => chunk,
                        b'\n' => SIZE_START,
                        _ => return self.give_up(input, output),
                    }
                }
                Chunk::Trailer { len } => {
                    i += 1;
                    match b {
                        b'\n' if len == 0 => {
                            done = true;
                            chunk
                        }
                        b'\n' => Chunk::Trailer { len: 0 },
                        b'\r' => chunk,
                        _ if len >= self.max_bytes => return self.give_up(input, output),
                        _ => Chunk::Trailer { len: len + 1 },
                    }
                }
            };
        }
        output.extend_from_slice(&input.split_to(i));
        self.mode = if done { Mode::Head } else { Mode::Chunk(chunk) };
        done
    }

    /// Malformed chunked framing: let hyper see it and fail the request itself.
    fn give_up(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> bool {
        output.extend_from_slice(&input.split());
        self.mode = Mode::Passthrough;
        false
    }
}

/// How the body after a request head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// What follows is no longer HTTP/1 (`CONNECT`).
    Tunnel,
}

/// The framing of the body that follows the head `req` (RFC 9112 §6.3), or why the
/// head must be refused: the guard's rules, for the server's own connection.
pub(crate) fn body_framing(req: &httparse::Request<'_, '_>) -> Result<BodyFraming, Reject> {
    Ok(match body_of(req)? {
        Mode::Head => BodyFraming::None,
        Mode::Body(n) => BodyFraming::Length(n),
        Mode::Chunk(_) => BodyFraming::Chunked,
        Mode::Passthrough | Mode::Hold => BodyFraming::Tunnel,
    })
}

/// The framing of the body that follows a request head (RFC 9112 §6.3), or why the
/// head must be refused.
fn body_of(req: &httparse::Request<'_, '_>) -> Result<Mode, Reject> {
    let mut content_length: Option<u64> = None;
    let mut has_content_length = false;
    let mut transfer_encoding: Option<&[u8]> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            has_content_length = true;
            // A list of identical values is allowed; anything else is ambiguous.
            for part in h.value.split(|b| *b == b',') {
                let n = decimal(trim(part)).ok_or(Reject::BadFraming)?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(Reject::BadFraming);
                }
                content_length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(h.value);
        }
    }
    if let Some(te) = transfer_encoding {
        if has_content_length || req.version == Some(0) {
            return Err(Reject::BadFraming);
        }
        let last = te
            .rsplit(|b| *b == b',')
            .next()
            .map(trim)
            .unwrap_or_default();
        return if last.eq_ignore_ascii_case(b"chunked") {
            Ok(Mode::Chunk(SIZE_START))
        } else {
            Err(Reject::BadFraming)
        };
    }
    if req.method == Some("CONNECT") {
        return Ok(Mode::Passthrough);
    }
    Ok(match content_length {
        Some(n) if n > 0 => Mode::Body(n),
        _ => Mode::Head,
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
