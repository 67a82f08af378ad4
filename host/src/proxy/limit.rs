//! `max_request_body`: a request body that streams past its route's limit fails, and
//! says so, so that the driver answers 413 instead of the 502 the broken exchange
//! would otherwise give.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody};

pin_project_lite::pin_project! {
    /// A request body that fails once more than `limit` bytes have come through, and
    /// raises `exceeded`.
    pub struct Limited {
        #[pin]
        inner: ProxyBody,
        remaining: u64,
        exceeded: Arc<AtomicBool>,
    }
}

impl Limited {
    /// `inner`, limited to `limit` bytes; `exceeded` is raised when it goes past.
    pub fn new(inner: ProxyBody, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            remaining: limit,
            exceeded,
        }
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > *this.remaining {
                    this.exceeded.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err("request body over max_request_body".into())));
                }
                *this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
