//! The entry points of the fuzz targets (`fuzz/`, run by `benches/fuzz`; see
//! docs/fuzzing.md). Each takes the fuzzer's bytes, drives one parser of untrusted
//! input as the proxy does, and panics only where an invariant of that parser breaks.
//!
//! Not part of the API: compiled only with the `fuzzing` feature (which the fuzz crate
//! turns on) and for the unit tests, which replay the seed corpora and every input a
//! fuzzer found through the same functions, on the stable toolchain.

use bytes::BytesMut;

use crate::server::guard::{Framing, Reject};

/// The request-head guard's framing over the bytes of one HTTP/1 connection.
///
/// The first byte picks how the stream is cut into reads. Run once with limits no
/// input reaches, the framing must find the same heads, bodies and verdict however the
/// bytes are cut (TCP may deliver them in any pieces); run again with small limits
/// (picked by the next bytes), it must not fail. In both, what goes on to hyper is the
/// connection's bytes in order, never more.
pub fn request_stream(data: &[u8]) {
    let [cuts, small_bytes, small_headers, stream @ ..] = data else {
        return;
    };
    let unlimited = stream.len() + 1;
    let whole = frame(stream, std::iter::repeat(usize::MAX), unlimited, 100);
    let split = frame(stream, pieces(*cuts), unlimited, 100);
    assert_eq!(
        whole, split,
        "the framing depends on how the reads cut the stream"
    );
    let max_bytes = usize::from(*small_bytes) * 4 + 1;
    let max_headers = usize::from(*small_headers % 160) + 1;
    frame(stream, pieces(*cuts), max_bytes, max_headers);
}

/// Our HTTP/1.1 server connection (`server::h1`, the common path since it parses each
/// head once) reading one connection's bytes: heads, `Content-Length` and chunked
/// bodies, trailers, and where it hands the rest to hyper.
///
/// The bytes are framed as for [`request_stream`]. With limits no input reaches, what
/// the connection reads must not depend on how the reads cut the stream; with small
/// limits, it must not fail, and no head it takes has more fields than the limit.
pub fn h1_stream(data: &[u8]) {
    let [cuts, small_bytes, small_headers, stream @ ..] = data else {
        return;
    };
    let limits = |max_header_bytes, max_headers| crate::config::ListenerLimits {
        max_header_bytes,
        max_headers,
        ..Default::default()
    };
    let unlimited = stream.len() + 1;
    let whole = crate::server::h1_transcript(
        stream,
        std::iter::repeat(usize::MAX),
        limits(unlimited, 100),
    );
    let split = crate::server::h1_transcript(stream, pieces(*cuts), limits(unlimited, 100));
    assert_eq!(
        whole, split,
        "what the connection read depends on how the reads cut the stream"
    );
    let max_bytes = usize::from(*small_bytes) * 4 + 1;
    let max_headers = usize::from(*small_headers % 160) + 1;
    crate::server::h1_transcript(stream, pieces(*cuts), limits(max_bytes, max_headers));
}

/// What the framing made of one stream.
#[derive(Debug, PartialEq, Eq)]
struct Framed {
    /// The bytes handed to hyper.
    output: Vec<u8>,
    heads: u64,
    rejected: Option<(u64, Reject)>,
    passthrough: bool,
    /// Bytes left unexamined at the end (a partial head).
    left: usize,
    holding: bool,
}

/// Read sizes from 1 to 64 bytes, from a small generator seeded by `seed`.
fn pieces(seed: u8) -> impl Iterator<Item = usize> {
    let mut x = u32::from(seed) | 0x100;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        Some((x % 64) as usize + 1)
    })
}

/// Feeds `stream` to a new framing in reads of the sizes `reads` gives, then ends it.
fn frame(
    stream: &[u8],
    mut reads: impl Iterator<Item = usize>,
    max_bytes: usize,
    max_headers: usize,
) -> Framed {
    let mut framing = Framing::new(max_bytes, max_headers);
    let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
    let mut framed = Framed {
        output: Vec::new(),
        heads: 0,
        rejected: None,
        passthrough: false,
        left: 0,
        holding: false,
    };
    let mut rest = stream;
    let mut eof = false;
    while !eof {
        let n = reads.next().unwrap_or(usize::MAX).min(rest.len());
        let (read, tail) = rest.split_at(n);
        input.extend_from_slice(read);
        rest = tail;
        eof = rest.is_empty();
        let held = framing.is_holding();
        let before = output.len();
        let ev = framing.feed(&mut input, &mut output, eof);
        if held {
            assert_eq!(output.len(), before, "bytes went on after a rejection");
        }
        if let Some((index, _)) = ev.rejected {
            assert!(framed.rejected.is_none(), "rejected twice");
            assert_eq!(
                index,
                framed.heads + u64::from(ev.heads),
                "rejected head's index"
            );
            framed.rejected = ev.rejected;
        }
        framed.heads += u64::from(ev.heads);
        framed.passthrough |= ev.passthrough;
    }
    assert!(
        stream.starts_with(&output),
        "the framing handed on bytes the client did not send in that order"
    );
    assert_eq!(
        framing.heads(),
        framed.heads + u64::from(framed.rejected.is_some()),
        "heads counted"
    );
    framed.output = output.to_vec();
    framed.left = input.len();
    framed.holding = framing.is_holding();
    framed
}

/// The configuration loader on one file's text, as `portcullis` loads a directory
/// holding only that file (relative paths resolve under a directory that does not
/// exist). Every error must name the file (or the directory) and a line of it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = std::path::Path::new("/nonexistent/portcullis-fuzz");
    let Err(errors) = crate::config::load_text("fuzz.yaml", text, base) else {
        return;
    };
    assert!(!errors.0.is_empty(), "a failed load reports no error");
    // YAML breaks lines at CR LF, LF and a lone CR.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
    for e in &errors.0 {
        match e.file.as_str() {
            "fuzz.yaml" => assert!(
                (1..=lines).contains(&e.line),
                "{e}: line {} of a {lines}-line file",
                e.line
            ),
            _ => assert_eq!(e.file, base.display().to_string(), "{e}: which file"),
        }
    }
    let _ = errors.to_string();
}

/// A script of host calls on one stream's header maps and properties, with the
/// arguments as a guest hands them over in its memory (see `wasm::abi::fuzz`).
pub fn host_calls(data: &[u8]) {
    crate::wasm::fuzz_host_calls(data);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
