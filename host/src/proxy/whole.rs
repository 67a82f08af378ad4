//! Whole bodies: collected for the http-wasm filters that read them (`buffer_request`,
//! `buffer_response`; see `crate::wasm`'s http-wasm host), and a response body that came
//! whole with its head, which the filters then take with the head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::body::{BoxError, ProxyBody};

/// The whole of `body`.
pub(super) async fn collect(body: ProxyBody) -> Result<Bytes, BoxError> {
    Ok(body.collect().await?.to_bytes())
}

/// A body a filter rewrote goes with its own length, not the one its sender declared.
pub(super) fn set_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
}

/// The whole of `body` when it is in hand now — its first frame ready and the last
/// (a small response read along with its head) — without waiting for anything. A
/// frame read but not the last stays the body's first.
pub(super) async fn in_hand(body: &mut ProxyBody) -> Option<Bytes> {
    let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx)));
    let mut first = match polled.await {
        Poll::Pending => return None,
        Poll::Ready(None) => return Some(Bytes::new()),
        Poll::Ready(Some(frame)) => frame,
    };
    if let Ok(frame) = first {
        match frame.into_data() {
            Ok(data) if body.is_end_stream() => return Some(data),
            Ok(data) => first = Ok(Frame::data(data)),
            Err(frame) => first = Ok(frame),
        }
    }
    let rest = std::mem::replace(body, crate::body::empty());
    *body = Prefixed {
        first: Some(first),
        rest,
    }
    .boxed_unsync();
    None
}

/// A body with one frame, read ahead of the rest, given first.
struct Prefixed {
    first: Option<Result<Frame<Bytes>, BoxError>>,
    rest: ProxyBody,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.first.take() {
            Some(frame) => Poll::Ready(Some(frame)),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.first {
            None => self.rest.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}
