use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::body::WireBody;
use super::head::{self, Parsed};
use super::write::{self, Encoder, Exchange};
use super::*;
use crate::config::ListenerLimits;
use crate::server::conn::TrackedBody;

fn parse(bytes: &[u8]) -> (Parsed, BytesMut) {
    let mut rbuf = BytesMut::from(bytes);
    let parsed = head::parse(&mut rbuf, 16 * 1024, 100);
    (parsed, rbuf)
}

fn parsed(bytes: &[u8]) -> (head::Head, BytesMut) {
    match parse(bytes) {
        (Parsed::Head(head), rest) => (head, rest),
        (Parsed::Partial, _) => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        (Parsed::Elsewhere, _) => panic!("elsewhere: {:?}", String::from_utf8_lossy(bytes)),
    }
}

#[test]
fn a_head_becomes_the_request_and_leaves_what_follows() {
    let (head, rest) = parsed(
        b"POST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Two: 1\r\nx-two: 2\r\ncontent-length: 3\r\ncontent-length: 3\r\n\r\nabcGET",
    );
    assert_eq!(head.parts.method, Method::POST);
    assert_eq!(head.parts.uri, "/a/b?c=d");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "example.com");
    let two: Vec<_> = head.parts.headers.get_all("x-two").iter().collect();
    assert_eq!(two, ["1", "2"], "repeated fields keep their order");
    assert_eq!(
        head.parts.headers.get_all("content-length").iter().count(),
        1,
        "one of identical lengths goes on, as hyper did"
    );
    assert_eq!(head.body, BodyFraming::Length(3));
    assert!(head.keep_alive);
    assert_eq!(&rest[..], b"abcGET");
}

#[test]
fn keep_alive_follows_the_version_and_connection() {
    let cases: [(&[u8], bool); 5] = [
        (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nconnection: close\r\nconnection: keep-alive\r\n\r\n",
            false,
        ),
    ];
    for (bytes, keep) in cases {
        let (head, _) = parsed(bytes);
        assert_eq!(
            head.keep_alive,
            keep,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let (head, _) = parsed(b"GET http://example.com/x HTTP/1.0\r\n\r\n");
    assert_eq!(head.parts.version, Version::HTTP_10);
    assert_eq!(head.parts.uri.host(), Some("example.com"), "absolute form");
}

#[test]
fn what_hyper_serves_is_left_whole_in_the_buffer() {
    for bytes in [
        &b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"[..],
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
        b"PUT /big HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 9\r\n\r\n",
        // Refused by the guard's rules: it answers them again, with their 4xx.
        b"POST / HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"\x16\x03\x01\x02\x00",
    ] {
        let (parsed, rest) = parse(bytes);
        assert!(
            matches!(parsed, Parsed::Elsewhere),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(&rest[..], bytes, "nothing consumed");
    }
}

#[test]
fn limits_send_a_head_elsewhere_and_a_partial_one_waits() {
    let (p, _) = parse(b"GET / HTTP/1.1\r\nhost: x\r\n");
    assert!(matches!(p, Parsed::Partial));
    let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "y".repeat(200));
    let mut rbuf = BytesMut::from(big.as_bytes());
    assert!(matches!(
        head::parse(&mut rbuf, 100, 100),
        Parsed::Elsewhere
    ));
    let mut partial = BytesMut::from(&big.as_bytes()[..150]);
    assert!(
        matches!(head::parse(&mut partial, 100, 100), Parsed::Elsewhere),
        "a partial head past the limit is refused without waiting for its end"
    );
    let mut many = BytesMut::from(&b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n"[..]);
    assert!(matches!(head::parse(&mut many, 1000, 2), Parsed::Elsewhere));
}

fn exchange(method: &Method, version: Version, keep_alive: bool) -> Exchange {
    Exchange {
        head: method == Method::HEAD,
        version,
        keep_alive,
    }
}

/// The head `encode_head` writes, and its encoder and keep-alive verdict.
fn encode(
    status: u16,
    headers: &[(&str, &str)],
    length: Option<Option<u64>>,
    ex: &Exchange,
) -> (String, Encoder, bool) {
    let mut map = HeaderMap::new();
    for (n, v) in headers {
        map.append(
            http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut status = StatusCode::from_u16(status).unwrap();
    let mut wbuf = BytesMut::new();
    let (encoder, keep) = write::encode_head(&mut status, &map, None, length, ex, &mut wbuf);
    let text = String::from_utf8(wbuf.to_vec()).unwrap();
    // The date is the one field that changes: checked, then left out.
    let date = text
        .lines()
        .find(|l| l.starts_with("date: "))
        .unwrap_or_else(|| panic!("no date in {text}"));
    assert_eq!(date.len(), "date: ".len() + 29, "{date}");
    (text.replace(&format!("{date}\r\n"), ""), encoder, keep)
}

#[test]
fn a_response_is_framed_by_its_length_or_chunked() {
    let get11 = exchange(&Method::GET, Version::HTTP_11, true);
    let (h, e, keep) = encode(200, &[("x", "1")], Some(Some(5)), &get11);
    assert_eq!(h, "HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 5\r\n\r\n");
    assert_eq!((e, keep), (Encoder::Length(5), true));
    let (h, e, _) = encode(200, &[("content-length", "5")], Some(None), &get11);
    assert_eq!(h, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    assert_eq!(
        e,
        Encoder::Length(5),
        "a declared length frames a body of no hint"
    );
    let (h, e, _) = encode(404, &[("trailer", "x-sum")], Some(None), &get11);
    assert_eq!(
        h,
        "HTTP/1.1 404 Not Found\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    assert_eq!(
        e,
        Encoder::Chunked(vec![http::HeaderName::from_static("x-sum")])
    );
    let (h, e, _) = encode(200, &[("content-length", "7")], None, &get11);
    assert_eq!(
        h, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        "an empty body is sent as empty, whatever the header said"
    );
    assert_eq!(e, Encoder::Length(0));
}

#[test]
fn head_204_and_304_have_no_body() {
    let head = exchange(&Method::HEAD, Version::HTTP_11, true);
    let (h, e, keep) = encode(200, &[("content-length", "42")], None, &head);
    assert_eq!(
        h, "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n",
        "HEAD keeps the length"
    );
    assert_eq!((e, keep), (Encoder::Length(0), true));
    let (h, e, keep) = encode(200, &[], Some(None), &head);
    assert_eq!(h, "HTTP/1.1 200 OK\r\n\r\n", "nor chunked after HEAD");
    assert_eq!(
        (e, keep),
        (Encoder::Length(0), true),
        "and the connection stays"
    );
    let get = exchange(&Method::GET, Version::HTTP_11, true);
    for status in [204, 304] {
        let (h, e, keep) = encode(
            status,
            &[("transfer-encoding", "chunked")],
            Some(None),
            &get,
        );
        assert!(!h.contains("transfer-encoding"), "{h}");
        assert!(!h.contains("content-length"), "{h}");
        assert_eq!((e, keep), (Encoder::Length(0), true));
    }
}

#[test]
fn http_1_0_is_answered_in_1_0_and_closed_unless_kept_alive() {
    let kept = exchange(&Method::GET, Version::HTTP_10, true);
    let (h, e, keep) = encode(200, &[], Some(Some(2)), &kept);
    assert_eq!(
        h,
        "HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n"
    );
    assert_eq!((e, keep), (Encoder::Length(2), true));
    let (h, e, keep) = encode(200, &[], Some(None), &kept);
    assert_eq!(
        h, "HTTP/1.0 200 OK\r\nconnection: close\r\n\r\n",
        "no chunked coding in 1.0: the body runs to the close"
    );
    assert_eq!((e, keep), (Encoder::Close, false));
    let closing = exchange(&Method::GET, Version::HTTP_10, false);
    let (h, _, keep) = encode(200, &[], Some(Some(2)), &closing);
    assert_eq!(
        h,
        "HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"
    );
    assert!(!keep);
    let get = exchange(&Method::GET, Version::HTTP_11, true);
    let (h, _, keep) = encode(503, &[("connection", "close")], Some(Some(0)), &get);
    assert_eq!(
        h,
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    assert!(!keep, "a response that says close closes");
}

/// A wire over one end of an in-memory stream; the other end is the client.
fn new_wire() -> (Shared<DuplexStream>, DuplexStream, Rc<ConnState>) {
    let (client, server) = tokio::io::duplex(256 * 1024);
    let state = Rc::new(ConnState::new(ListenerLimits::default()));
    let park = Rc::new(RefCell::new(None));
    let wire = Wire::new(server, BytesMut::new(), Rc::clone(&state), park);
    (Rc::new(RefCell::new(wire)), client, state)
}

async fn next_head(wire: &Shared<DuplexStream>) -> head::Head {
    match poll_fn(|cx| wire.borrow_mut().poll_head(cx)).await {
        Ok(Some(head)) => head,
        Ok(None) => panic!("handed to hyper"),
        Err(()) => panic!("closed"),
    }
}

/// Starts the body of `head` on `wire` and reads it whole: data and trailers.
async fn read_body(wire: &Shared<DuplexStream>, head: &head::Head) -> (Vec<u8>, Option<HeaderMap>) {
    let seq = wire.borrow_mut().start(head.body);
    let mut body = WireBody::new(Rc::clone(wire), seq);
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert!(body.is_end_stream());
    (data, trailers)
}

#[tokio::test]
async fn pipelined_bodies_are_read_to_their_end_and_no_further() {
    let (wire, mut client, _state) = new_wire();
    let stream: &[u8] = b"POST /a HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nworld\r\n2\r\n!!\r\n0\r\nx-sum: 7\r\n\r\n\
GET /c HTTP/1.1\r\n\r\n";
    // Byte by byte, from another task, to go through every partial state.
    let writer = tokio::spawn(async move {
        for b in stream {
            client.write_all(&[*b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    });
    let a = next_head(&wire).await;
    assert_eq!(a.parts.uri, "/a");
    assert_eq!(read_body(&wire, &a).await, (b"hello".to_vec(), None));
    let b = next_head(&wire).await;
    assert_eq!(b.parts.uri, "/b");
    let (data, trailers) = read_body(&wire, &b).await;
    assert_eq!(data, b"world!!");
    assert_eq!(trailers.unwrap()["x-sum"], "7");
    let c = next_head(&wire).await;
    assert_eq!((c.parts.uri.path(), c.body), ("/c", BodyFraming::None));
    drop(writer.await.unwrap());
    assert!(
        poll_fn(|cx| wire.borrow_mut().poll_head(cx)).await.is_err(),
        "the client's close between requests ends the connection"
    );
}

#[tokio::test]
async fn a_body_cut_short_or_malformed_fails() {
    let (wire, mut client, _state) = new_wire();
    client
        .write_all(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc")
        .await
        .unwrap();
    drop(client);
    let head = next_head(&wire).await;
    let seq = wire.borrow_mut().start(head.body);
    let mut body = WireBody::new(Rc::clone(&wire), seq);
    assert_eq!(body.size_hint().exact(), Some(10));
    assert_eq!(
        body.frame().await.unwrap().unwrap().into_data().unwrap(),
        "abc"
    );
    let err = body.frame().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("closed"), "{err}");

    let (wire, mut client, _state) = new_wire();
    client
        .write_all(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
        .await
        .unwrap();
    let head = next_head(&wire).await;
    let seq = wire.borrow_mut().start(head.body);
    let mut body = WireBody::new(Rc::clone(&wire), seq);
    assert!(
        body.frame().await.unwrap().is_err(),
        "a chunk size that is not hex"
    );
    assert!(body.frame().await.unwrap().is_err(), "and it stays failed");
}

#[tokio::test]
async fn a_body_left_unread_is_finished_if_it_is_here_and_a_stale_one_reads_nothing() {
    let (wire, mut client, _state) = new_wire();
    client
        .write_all(b"POST /a HTTP/1.1\r\ncontent-length: 4\r\n\r\nbodyGET /b HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let a = next_head(&wire).await;
    let seq = wire.borrow_mut().start(a.body);
    let mut stale = WireBody::new(Rc::clone(&wire), seq);
    // Nobody read it (a filter answered first): it is here, so it is skipped.
    assert!(wire.borrow_mut().finish_body());
    let b = next_head(&wire).await;
    assert_eq!(b.parts.uri, "/b");
    wire.borrow_mut().start(b.body);
    assert!(stale.frame().await.unwrap().is_err(), "request a is over");

    let (wire, mut client, _state) = new_wire();
    client
        .write_all(b"POST /a HTTP/1.1\r\ncontent-length: 100\r\n\r\npart")
        .await
        .unwrap();
    let a = next_head(&wire).await;
    wire.borrow_mut().start(a.body);
    assert!(
        !wire.borrow_mut().finish_body(),
        "a body still coming makes the connection close"
    );
}

#[tokio::test]
async fn the_http2_preface_and_what_hyper_serves_are_handed_over_unread() {
    let (wire, mut client, _state) = new_wire();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00";
    client.write_all(&preface[..5]).await.unwrap();
    let pending = poll_fn(|cx| Poll::Ready(wire.borrow_mut().poll_head(cx).is_pending())).await;
    assert!(pending, "a prefix of the preface waits for more");
    client.write_all(&preface[5..]).await.unwrap();
    assert!(matches!(
        poll_fn(|cx| wire.borrow_mut().poll_head(cx)).await,
        Ok(None)
    ));
    assert_eq!(&wire.borrow_mut().hand_off()[..], preface);

    let (wire, mut client, _state) = new_wire();
    let upgrade = b"GET /ws HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nframes";
    client.write_all(upgrade).await.unwrap();
    assert!(matches!(
        poll_fn(|cx| wire.borrow_mut().poll_head(cx)).await,
        Ok(None)
    ));
    assert_eq!(&wire.borrow_mut().hand_off()[..], upgrade);
}

/// A response body of `frames`, as the proxy hands it over.
fn response(status: u16, frames: Vec<Frame<Bytes>>) -> Response<TrackedBody> {
    let stream = futures_util::stream::iter(frames.into_iter().map(Ok::<_, crate::body::BoxError>));
    let body = crate::body::boxed(http_body_util::StreamBody::new(stream));
    let mut resp = Response::new(TrackedBody::untracked(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp
}

async fn written(client: &mut DuplexStream) -> String {
    let mut buf = vec![0; 64 * 1024];
    let n = client.read(&mut buf).await.unwrap();
    let text = String::from_utf8(buf[..n].to_vec()).unwrap();
    let date = text.find("date: ").unwrap();
    format!("{}{}", &text[..date], &text[date + "date: ".len() + 31..])
}

#[tokio::test]
async fn a_streamed_response_goes_out_chunked_with_its_declared_trailers() {
    let (wire, mut client, _state) = new_wire();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", HeaderValue::from_static("9"));
    trailers.insert("x-undeclared", HeaderValue::from_static("1"));
    let mut resp = response(
        200,
        vec![
            Frame::data(Bytes::from_static(b"hello")),
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from_static(b" world!")),
            Frame::trailers(trailers),
        ],
    );
    resp.headers_mut()
        .insert("trailer", HeaderValue::from_static("x-sum"));
    let ex = exchange(&Method::GET, Version::HTTP_11, true);
    let keep = write::respond(&wire, resp, &ex).await.unwrap();
    assert!(keep);
    assert_eq!(
        written(&mut client).await,
        "HTTP/1.1 200 OK\r\ntrailer: x-sum\r\ntransfer-encoding: chunked\r\n\r\n\
5\r\nhello\r\n7\r\n world!\r\n0\r\nx-sum: 9\r\n\r\n"
    );
}

#[tokio::test]
async fn a_body_longer_than_its_length_fails_the_connection() {
    let (wire, _client, _state) = new_wire();
    let mut resp = response(200, vec![Frame::data(Bytes::from_static(b"toolong"))]);
    resp.headers_mut()
        .insert("content-length", HeaderValue::from_static("3"));
    let ex = exchange(&Method::GET, Version::HTTP_11, true);
    assert!(write::respond(&wire, resp, &ex).await.is_err());
}

#[tokio::test]
async fn a_head_answer_writes_no_body_and_keeps_the_connection() {
    let (wire, mut client, _state) = new_wire();
    let mut resp = response(200, vec![Frame::data(Bytes::from_static(b"body"))]);
    resp.headers_mut()
        .insert("content-length", HeaderValue::from_static("4"));
    let ex = exchange(&Method::HEAD, Version::HTTP_11, true);
    assert!(write::respond(&wire, resp, &ex).await.unwrap());
    assert_eq!(
        written(&mut client).await,
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
    );
}

#[test]
fn the_fuzz_transcript_reads_heads_bodies_and_the_hand_over() {
    let stream: &[u8] = b"POST /a HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi\
POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nx-t: 1\r\n\r\n\
GET /c HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
    let reads = [3, 5, 7].into_iter().cycle();
    let lines = super::fuzz::transcript(stream, reads, ListenerLimits::default());
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert!(
        lines[0].starts_with("head POST /a HTTP/1.1 Length(2)"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1], r#"body b"hi""#);
    assert!(
        lines[2].starts_with("head POST /b HTTP/1.1 Chunked"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], r#"trailers Some({"x-t": "1"})"#);
    assert_eq!(lines[4], r#"body b"x""#);
    assert_eq!(lines[5], "to hyper", "an upgrade is hyper's");
    let whole = super::fuzz::transcript(
        stream,
        std::iter::repeat(usize::MAX),
        ListenerLimits::default(),
    );
    assert_eq!(whole, lines);
}
