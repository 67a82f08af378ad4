//! The client against a real socket whose server side writes what each test says,
//! byte for byte, and records what the client wrote.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::body::{self, BoxError, ProxyBody};
use crate::tls::connector::UpstreamConnector;
use crate::upstream::pool::{Pool, PoolError, PooledBody};

/// An upstream that answers each request on each connection with the next of
/// `answers`, and reports what it read and which connection it read it on.
struct Upstream {
    address: Authority,
    /// (connection number, request bytes) per request.
    seen: mpsc::UnboundedReceiver<(usize, Vec<u8>)>,
}

/// One answer: the bytes, written in pieces of `piece` bytes (0: at once); then
/// whether the server closes the connection.
#[derive(Clone)]
struct Answer {
    bytes: &'static [u8],
    piece: usize,
    close: bool,
}

fn answer(bytes: &'static [u8]) -> Answer {
    Answer {
        bytes,
        piece: 0,
        close: false,
    }
}

async fn upstream(answers: Vec<Answer>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string().parse().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let answers = Arc::new(tokio::sync::Mutex::new(answers.into_iter()));
        for n in 0.. {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (answers, tx) = (Arc::clone(&answers), tx.clone());
            tokio::spawn(async move { serve(n, stream, answers, tx).await });
        }
    });
    Upstream { address, seen }
}

async fn serve(
    n: usize,
    mut stream: TcpStream,
    answers: Arc<tokio::sync::Mutex<std::vec::IntoIter<Answer>>>,
    tx: mpsc::UnboundedSender<(usize, Vec<u8>)>,
) {
    loop {
        let request = read_request(&mut stream).await;
        if request.is_empty() {
            return;
        }
        let _ = tx.send((n, request));
        let Some(a) = answers.lock().await.next() else {
            return;
        };
        if a.piece == 0 {
            stream.write_all(a.bytes).await.unwrap();
        } else {
            for piece in a.bytes.chunks(a.piece) {
                stream.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if a.close {
            return;
        }
    }
}

/// Reads one request: its head, then a body by `content-length` or chunked.
async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return buf;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    if let Some(len) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.unwrap();
        buf.extend(body);
    } else if head.contains("transfer-encoding: chunked") {
        while !has_last_chunk(&buf) {
            if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            buf.push(byte[0]);
        }
    }
    buf
}

/// Whether a chunked request ended: a `0` chunk line, then its (possibly empty)
/// trailer section's blank line.
fn has_last_chunk(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (body.starts_with("0\r\n") || body.contains("\r\n0\r\n")) && body.ends_with("\r\n\r\n")
}

fn pool() -> Arc<Pool> {
    let connector = UpstreamConnector::new(HttpConnector::new(), None, Duration::from_secs(5));
    Arc::new(Pool::new(connector, 1, false, None))
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::get(path)
        .header("host", "up.test")
        .body(body::empty())
        .unwrap()
}

async fn send(
    pool: &Arc<Pool>,
    up: &Upstream,
    req: Request<ProxyBody>,
) -> Result<Response<PooledBody>, PoolError> {
    pool.request(0, &up.address, req).await
}

async fn whole(resp: Response<PooledBody>) -> Result<(Vec<u8>, Option<http::HeaderMap>), BoxError> {
    let collected = resp.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes().to_vec(), trailers))
}

fn text(seen: &[u8]) -> String {
    String::from_utf8_lossy(seen).into_owned()
}

/// A body fed by the test, frame by frame.
struct Fed(mpsc::UnboundedReceiver<Frame<Bytes>>);

impl Body for Fed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

#[tokio::test]
async fn a_length_response_comes_whole_and_the_connection_is_used_again() {
    let ok = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello");
    let mut up = upstream(vec![ok.clone(), ok]).await;
    let pool = pool();
    for _ in 0..2 {
        let resp = send(&pool, &up, get("/a?b=c")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-a"], "1");
        assert_eq!(resp.body().size_hint().exact(), Some(5));
        assert_eq!(whole(resp).await.unwrap().0, b"hello");
    }
    let (first, req) = up.seen.recv().await.unwrap();
    assert_eq!(text(&req), "GET /a?b=c HTTP/1.1\r\nhost: up.test\r\n\r\n");
    let (second, _) = up.seen.recv().await.unwrap();
    assert_eq!(
        first, second,
        "the second request went on the first connection"
    );
}

#[tokio::test]
async fn a_chunked_response_in_small_pieces_keeps_its_data_and_trailers() {
    let chunked = Answer {
        bytes: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                 5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-sum: 42\r\n\r\n",
        piece: 3,
        close: false,
    };
    let ok = answer(b"HTTP/1.1 204 No Content\r\n\r\n");
    let mut up = upstream(vec![chunked, ok]).await;
    let pool = pool();
    let resp = send(&pool, &up, get("/")).await.unwrap();
    let (data, trailers) = whole(resp).await.unwrap();
    assert_eq!(data, b"hello, world");
    assert_eq!(trailers.unwrap()["x-sum"], "42");
    let resp = send(&pool, &up, get("/")).await.unwrap();
    assert!(resp.body().is_end_stream());
    let (first, _) = up.seen.recv().await.unwrap();
    let (second, _) = up.seen.recv().await.unwrap();
    assert_eq!(first, second, "a chunked body's end frees the connection");
}

#[tokio::test]
async fn a_body_to_the_close_ends_with_the_connection_which_is_not_used_again() {
    let close = Answer {
        bytes: b"HTTP/1.1 200 OK\r\n\r\nall of it",
        piece: 4,
        close: true,
    };
    let ok = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let mut up = upstream(vec![close, ok]).await;
    let pool = pool();
    let resp = send(&pool, &up, get("/")).await.unwrap();
    assert_eq!(whole(resp).await.unwrap().0, b"all of it");
    let resp = send(&pool, &up, get("/")).await.unwrap();
    assert_eq!(whole(resp).await.unwrap().0, b"ok");
    let (first, _) = up.seen.recv().await.unwrap();
    let (second, _) = up.seen.recv().await.unwrap();
    assert_ne!(first, second);
}

#[tokio::test]
async fn head_and_interim_responses_have_no_body_and_the_connection_goes_on() {
    let head = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n");
    let interim = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nyes");
    let mut up = upstream(vec![head, interim]).await;
    let pool = pool();
    let req = Request::head("/").body(body::empty()).unwrap();
    let resp = send(&pool, &up, req).await.unwrap();
    assert_eq!(resp.headers()["content-length"], "1000");
    assert!(resp.body().is_end_stream());
    drop(resp);
    let resp = send(&pool, &up, get("/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        !resp.headers().contains_key("link"),
        "the interim head's fields are not the final one's"
    );
    assert_eq!(whole(resp).await.unwrap().0, b"yes");
    let (first, req) = up.seen.recv().await.unwrap();
    // The target's authority, as `Host`, when the request has none.
    assert_eq!(
        text(&req),
        format!("HEAD / HTTP/1.1\r\nhost: {}\r\n\r\n", up.address)
    );
    let (second, _) = up.seen.recv().await.unwrap();
    assert_eq!(first, second);
}

#[tokio::test]
async fn a_reason_phrase_of_its_own_is_kept() {
    let mut up = upstream(vec![answer(
        b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 0\r\n\r\n",
    )])
    .await;
    let resp = send(&pool(), &up, get("/")).await.unwrap();
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"Fine Thanks");
    up.seen.recv().await.unwrap();
}

#[tokio::test]
async fn request_bodies_are_framed_by_their_length_or_chunked() {
    let ok = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let mut up = upstream(vec![ok.clone(), ok.clone(), ok.clone(), ok]).await;
    let pool = pool();

    // A whole body: its length is known.
    let req = Request::post("/w")
        .header("host", "h")
        .body(body::full("abc"))
        .unwrap();
    send(&pool, &up, req).await.unwrap();
    let (_, seen) = up.seen.recv().await.unwrap();
    assert_eq!(
        text(&seen),
        "POST /w HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc"
    );

    // A streamed one with trailers: chunked.
    let (tx, rx) = mpsc::unbounded_channel();
    let req = Request::post("/s")
        .header("host", "h")
        .body(body::boxed(Fed(rx)))
        .unwrap();
    tx.send(Frame::data(Bytes::from_static(b"hello"))).unwrap();
    tx.send(Frame::data(Bytes::from(vec![b'x'; 300]))).unwrap();
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-t", "1".parse().unwrap());
    tx.send(Frame::trailers(trailers)).unwrap();
    drop(tx);
    send(&pool, &up, req).await.unwrap();
    let (_, seen) = up.seen.recv().await.unwrap();
    let expected = format!(
        "POST /s HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n12c\r\n{}\r\n0\r\nx-t: 1\r\n\r\n",
        "x".repeat(300)
    );
    assert_eq!(text(&seen), expected);

    // A GET's body of unknown length is not sent (hyper's rule): here one that will
    // turn out empty, as an HTTP/3 GET whose stream end comes late.
    let (tx, rx) = mpsc::unbounded_channel::<Frame<Bytes>>();
    let req = Request::get("/g")
        .header("host", "h")
        .body(body::boxed(Fed(rx)))
        .unwrap();
    send(&pool, &up, req).await.unwrap();
    drop(tx);
    let (_, seen) = up.seen.recv().await.unwrap();
    assert_eq!(text(&seen), "GET /g HTTP/1.1\r\nhost: h\r\n\r\n");

    // A declared length is sent as declared; a client's `Transfer-Encoding` is not.
    let (tx, rx) = mpsc::unbounded_channel();
    let req = Request::put("/d")
        .header("host", "h")
        .header("content-length", "4")
        .header("transfer-encoding", "gzip")
        .body(body::boxed(Fed(rx)))
        .unwrap();
    tx.send(Frame::data(Bytes::from_static(b"ab"))).unwrap();
    tx.send(Frame::data(Bytes::from_static(b"cd"))).unwrap();
    drop(tx);
    send(&pool, &up, req).await.unwrap();
    let (_, seen) = up.seen.recv().await.unwrap();
    assert_eq!(
        text(&seen),
        "PUT /d HTTP/1.1\r\nhost: h\r\ncontent-length: 4\r\n\r\nabcd"
    );
}

#[tokio::test]
async fn a_body_longer_than_its_declared_length_fails_the_exchange() {
    let up = upstream(vec![answer(
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
    )])
    .await;
    let req = Request::post("/")
        .header("host", "h")
        .header("content-length", "2")
        .body(body::full("abc"))
        .unwrap();
    let err = send(&pool(), &up, req).await.unwrap_err();
    assert!(format!("{err:?}").contains("longer"), "{err:?}");
}

#[tokio::test]
async fn an_early_answer_streams_while_the_body_is_still_sent_and_the_connection_is_not_reused() {
    // The upstream answers once it has the head (it reads the body after).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: Authority = listener.local_addr().unwrap().to_string().parse().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!")
            .await
            .unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        got.extend(rest);
        got
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let req = Request::post("/")
        .header("host", "h")
        .body(body::boxed(Fed(rx)))
        .unwrap();
    tx.send(Frame::data(Bytes::from_static(b"first"))).unwrap();
    let pool = pool();
    let resp = pool.request(0, &address, req).await.unwrap();
    assert_eq!(resp.status(), 413);
    // The response ends while the body has more to come.
    assert_eq!(whole(resp).await.unwrap().0, b"big!");
    // Not pooled: the body was still being written when the response ended, so the
    // connection closes and the server's read ends.
    let got = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    assert!(text(&got).contains("5\r\nfirst\r\n"), "{}", text(&got));
    drop(tx);
}

#[tokio::test]
async fn broken_responses_are_errors_not_bodies() {
    let cases: [(&'static [u8], &str); 4] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
            "conflicting",
        ),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "Content-Length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncont",
            "closed before the response head",
        ),
    ];
    for (bytes, says) in cases {
        let up = upstream(vec![Answer {
            bytes,
            piece: 0,
            close: true,
        }])
        .await;
        let err = send(&pool(), &up, get("/")).await.unwrap_err();
        let PoolError::Exchange(e) = err else {
            panic!("{err:?}")
        };
        assert!(e.to_string().contains(says), "{} for {:?}", e, text(bytes));
    }

    let body_cases: [(&'static [u8], &str); 3] = [
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "invalid chunk size",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXX",
            "no CRLF",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            "closed before the response body ended",
        ),
    ];
    for (bytes, says) in body_cases {
        let up = upstream(vec![Answer {
            bytes,
            piece: 0,
            close: true,
        }])
        .await;
        let resp = send(&pool(), &up, get("/")).await.unwrap();
        let e = whole(resp).await.unwrap_err();
        assert!(e.to_string().contains(says), "{} for {:?}", e, text(bytes));
    }
}

#[tokio::test]
async fn a_head_too_large_is_refused() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..90 {
        huge.extend(format!("x-{i}: {}\r\n", "v".repeat(1000)).as_bytes());
    }
    let huge: &'static [u8] = huge.leak();
    let up = upstream(vec![Answer {
        bytes: huge,
        piece: 0,
        close: true,
    }])
    .await;
    let err = send(&pool(), &up, get("/")).await.unwrap_err();
    assert!(format!("{err:?}").contains("HeadTooLarge"), "{err:?}");
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_used() {
    let closing = Answer {
        bytes: b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na",
        piece: 0,
        close: true,
    };
    let ok = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb");
    let mut up = upstream(vec![closing, ok]).await;
    let pool = pool();
    // The response allowed keep-alive, so the connection went back to the pool ...
    let resp = send(&pool, &up, get("/")).await.unwrap();
    assert_eq!(whole(resp).await.unwrap().0, b"a");
    // ... then the upstream closed it while idle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resp = send(&pool, &up, get("/")).await.unwrap();
    assert_eq!(whole(resp).await.unwrap().0, b"b");
    let (first, _) = up.seen.recv().await.unwrap();
    let (second, _) = up.seen.recv().await.unwrap();
    assert_ne!(first, second);
}

/// The header values of a parsed head do not point into the read buffer: an HTTP/2
/// client connection's HPACK table keeps values for as long as the connection is open,
/// and a slice of the buffer would keep all 16 KiB of it (and whatever else it holds)
/// alive with them.
#[test]
fn a_parsed_head_does_not_keep_the_read_buffer() {
    let head =
        b"HTTP/1.1 200 OK\r\nserver: up\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n";
    let mut rbuf = bytes::BytesMut::with_capacity(super::read::READ_SIZE);
    rbuf.extend_from_slice(head);
    rbuf.extend_from_slice(b"hello");
    let buffer = rbuf.as_ptr() as usize..rbuf.as_ptr() as usize + rbuf.capacity();
    let super::read::Head(parts, _, _) = super::read::parse_head(&mut rbuf, false)
        .unwrap()
        .expect("a whole head");
    assert_eq!(parts.headers.len(), 3);
    for (name, value) in &parts.headers {
        let at = value.as_bytes().as_ptr() as usize;
        assert!(
            !buffer.contains(&at),
            "{name}: {value:?} is a slice of the read buffer"
        );
    }
    assert_eq!(&rbuf[..], b"hello", "the body stays in the buffer");
}
