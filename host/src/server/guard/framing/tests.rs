use bytes::BytesMut;

use super::*;

/// Feeds `chunks` one after the other; returns what went on and every event.
fn run(framing: &mut Framing, chunks: &[&[u8]]) -> (Vec<u8>, Vec<Events>) {
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let mut events = Vec::new();
    for c in chunks {
        input.extend_from_slice(c);
        events.push(framing.feed(&mut input, &mut output, false));
    }
    (output.to_vec(), events)
}

fn rejected(events: &[Events]) -> Vec<(u64, Reject)> {
    events.iter().filter_map(|e| e.rejected).collect()
}

#[test]
fn pipelined_requests_with_bodies_pass_through_whole() {
    let stream: &[u8] = b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nhost: x\r\n\r\nPOST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
    // Byte by byte, to exercise every partial state.
    let mut f = Framing::new(64 * 1024, 100);
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    let (out, events) = run(&mut f, &chunks);
    assert_eq!(out, stream, "every byte should reach hyper unchanged");
    let heads: u32 = events.iter().map(|e| e.heads).sum();
    assert_eq!(heads, 4, "expected four heads, events: {events:?}");
    assert!(rejected(&events).is_empty(), "nothing should be rejected");
}

#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    for head in [
        &b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 3, 4\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
    ] {
        let mut f = Framing::new(64 * 1024, 100);
        let (out, events) = run(&mut f, &[head, b"abc"]);
        assert_eq!(
            rejected(&events),
            vec![(0, Reject::BadFraming)],
            "head {:?} should be refused",
            String::from_utf8_lossy(head)
        );
        assert!(out.is_empty(), "a refused head must not reach hyper");
        assert!(f.is_holding());
    }
}

#[test]
fn identical_content_lengths_are_fine() {
    let mut f = Framing::new(64 * 1024, 100);
    let (_, events) = run(
        &mut f,
        &[b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 3, 3\r\n\r\nabc"],
    );
    assert!(rejected(&events).is_empty(), "{events:?}");
    assert_eq!(f.mode, Mode::Head);
}

#[test]
fn oversized_and_overfull_heads_are_rejected() {
    let mut f = Framing::new(100, 100);
    let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "a".repeat(200));
    let (_, events) = run(&mut f, &[big.as_bytes()]);
    assert_eq!(rejected(&events), vec![(0, Reject::HeadersTooLarge)]);

    let mut f = Framing::new(64 * 1024, 3);
    let many = "GET / HTTP/1.1\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\n\r\n";
    let (_, events) = run(&mut f, &[many.as_bytes()]);
    assert_eq!(rejected(&events), vec![(0, Reject::TooManyHeaders)]);
}

#[test]
fn the_second_request_is_rejected_by_its_index() {
    let mut f = Framing::new(64 * 1024, 100);
    let (out, events) = run(
        &mut f,
        &[b"GET /ok HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"],
    );
    assert_eq!(out, b"GET /ok HTTP/1.1\r\n\r\n");
    assert_eq!(rejected(&events), vec![(1, Reject::BadFraming)]);
}

#[test]
fn http2_preface_passes_through() {
    let mut f = Framing::new(64 * 1024, 100);
    let (out, events) = run(&mut f, &[b"PRI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n\x00\x00"]);
    assert!(events.iter().any(|e| e.passthrough), "{events:?}");
    assert_eq!(out, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00");
}

#[test]
fn garbage_passes_through_for_hyper_to_refuse() {
    let mut f = Framing::new(64 * 1024, 100);
    let (out, _) = run(&mut f, &[b"\x16\x03\x01 not http\r\n\r\n"]);
    assert_eq!(out, b"\x16\x03\x01 not http\r\n\r\n");
    assert!(f.is_passthrough());
}
