//! A request body read from its HTTP/3 stream, and the end of that stream.
//!
//! HTTP/3 has no END_STREAM flag on HEADERS: a request ends when its QUIC stream
//! does (the FIN), which may come in the packet of the head or in a later one (the
//! `h3` crate's client, .NET's and others send it apart). Whether a request "has a
//! body" must not depend on that packetisation: a GET taken for a streamed request
//! loses its retries and mirroring, runs the filters' body phase, and is cut short
//! by the upstream connection (an HTTP/1.1 GET goes with `Content-Length: 0`, and
//! the body is dropped unread). So [`RecvBody::open`] waits briefly for what follows
//! the head: its end, its first DATA or its trailers.
//!
//! A body the proxy stops reading before its end (the upstream answered without it,
//! a filter refused the request) is read to its end in the background, within
//! bounds. Dropping it unread would have quinn stop the client's sending with error
//! code 0, which is not an HTTP/3 code, and a strict client (ours in the tests)
//! takes it for a failed request. The `h3` adapter cannot send `H3_NO_ERROR`
//! instead while a read is in flight (it panics), hence the drain.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::{Body, Frame};

type RecvSide = RequestStream<h3_quinn::RecvStream, Bytes>;
type Next = Option<Result<Frame<Bytes>, h3::error::StreamError>>;

/// How long a request waits after its head for its end or its first DATA. Both are
/// written by the client right after the head and miss its packet only under
/// pacing or loss; a request still open after this goes on as a streamed one.
const FIRST_EVENT_WAIT: Duration = Duration::from_millis(50);

/// What the drain of an unread rest reads at most (bytes, time) before it gives up
/// and lets quinn stop the client: enough for a FIN in flight or the tail of a small
/// upload, not for an upload the proxy refused.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// A request body as the proxy asks for it: DATA frames, then trailers.
pub(super) struct RecvBody {
    /// `None` only once dropped (the reader has gone to the drain).
    reader: Option<Reader>,
    /// What [`RecvBody::open`] found after the head, not yet handed out.
    peeked: Option<Next>,
}

impl RecvBody {
    /// Wraps `stream`, the request stream of `head`, after waiting up to
    /// [`FIRST_EVENT_WAIT`] for what follows the head, unless the client may itself
    /// be waiting for the response before it sends more (`Expect: 100-continue`, a
    /// gRPC stream, CONNECT).
    pub(super) async fn open(stream: RecvSide, head: &http::Request<()>) -> Self {
        let mut reader = Reader {
            stream,
            state: State::Data,
        };
        let peeked = if waits_for_us(head) {
            None
        } else {
            let first = std::future::poll_fn(|cx| reader.poll_next(cx));
            // A timeout loses nothing: `poll_next` keeps its place in the reader.
            tokio::time::timeout(FIRST_EVENT_WAIT, first).await.ok()
        };
        Self {
            reader: Some(reader),
            peeked,
        }
    }
}

/// Whether the client of `head` may wait for the response (or a `100 Continue`)
/// before it sends its body or its end.
fn waits_for_us(head: &http::Request<()>) -> bool {
    head.method() == http::Method::CONNECT
        || head.headers().contains_key(http::header::EXPECT)
        || crate::proxy::is_grpc(head.headers())
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(next) = this.peeked.take() {
            return Poll::Ready(next);
        }
        match &mut this.reader {
            Some(reader) => reader.poll_next(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.peeked {
            Some(next) => next.is_none(),
            None => self.reader.as_ref().is_none_or(Reader::done),
        }
    }
}

impl Drop for RecvBody {
    fn drop(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        if reader.done() {
            return;
        }
        // Outside a runtime (the process is going away) there is no one to read it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(reader));
        }
    }
}

/// Reads what is left of a request nobody needs any more, up to [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]: a stream read to its end closes without a word to the client.
async fn drain(mut reader: Reader) {
    let read = async {
        let mut read = 0;
        while let Some(Ok(frame)) = std::future::poll_fn(|cx| reader.poll_next(cx)).await {
            read += frame.data_ref().map_or(0, Buf::remaining);
            if read > DRAIN_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}

/// The reading side of a request stream and how far it has got.
struct Reader {
    stream: RecvSide,
    state: State,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Data,
    Trailers,
    Done,
}

impl Reader {
    fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The next DATA chunk, then the trailers, then `None`. Cancel-safe: a `Pending`
    /// consumes nothing.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        loop {
            match self.state {
                State::Data => match self.stream.poll_recv_data(cx) {
                    Poll::Ready(Ok(Some(mut data))) => {
                        let data = data.copy_to_bytes(data.remaining());
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Poll::Ready(Ok(None)) => self.state = State::Trailers,
                    Poll::Ready(Err(e)) => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Pending => return Poll::Pending,
                },
                State::Trailers => {
                    let trailers = std::task::ready!(self.stream.poll_recv_trailers(cx));
                    self.state = State::Done;
                    return Poll::Ready(trailers.map(|t| t.map(Frame::trailers)).transpose());
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}
