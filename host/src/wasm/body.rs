//! Body phases on streaming bodies: [`FilteredBody`] wraps a request or response body
//! and runs each chunk (and the trailers) through the chain as it streams, holding
//! bytes while a filter pauses.
//!
//! A filter that answers or fails while the request body streams stops that body
//! ([`AnsweredLocally`]) and leaves its decision in the driver's [`LocalSlot`]. Once the
//! response head has gone, an answer can only replace the rest of the body, and a
//! failure ends the body with an error: the client sees a broken response rather than
//! a complete-looking one.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};

use super::chain::Flow;
use super::{BodyDecision, Decision, HttpFilters};

/// A stream's chain shared by its body wrappers and the driver. When the last holder
/// drops it, the chain finishes (`on_done`, `on_log`, `on_delete`) in the background.
pub type SharedFilters = Arc<futures_util::lock::Mutex<HttpFilters>>;

/// Where a filter's answer ([`Decision::Respond`]) or failure ([`Decision::Fail`]) made
/// while the request body streamed is left for the driver.
pub type LocalSlot = Arc<Mutex<Option<Decision>>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Step = Pin<Box<dyn Future<Output = Out> + Send>>;

enum Out {
    Data(Bytes),
    Trailers(Bytes, HeaderMap),
    /// `Respond` or `Fail`.
    Stop(Decision),
}

impl From<BodyDecision> for Out {
    fn from(d: BodyDecision) -> Out {
        match d {
            BodyDecision::Forward(b) => Out::Data(b),
            BodyDecision::Respond(r) => Out::Stop(Decision::Respond(r)),
            BodyDecision::Fail(f) => Out::Stop(Decision::Fail(f)),
        }
    }
}

/// A filter answered (or failed) while the request body was streaming; the driver
/// finds its decision in its [`LocalSlot`].
#[derive(Debug, thiserror::Error)]
#[error("a filter answered locally while the body was streaming")]
pub struct AnsweredLocally;

/// A body whose chunks go through the filters' body phases.
pub struct FilteredBody<B> {
    inner: B,
    filters: SharedFilters,
    flow: Flow,
    local: Option<LocalSlot>,
    step: Option<Step>,
    done: bool,
    /// No filter of the chain takes bodies: frames pass untouched (the wrapper only
    /// keeps the chain alive until the body is done, for `on_log`).
    passthrough: bool,
}

impl<B: Body> FilteredBody<B> {
    /// The request body, through `on_request_body` / `on_request_trailers`. A local
    /// response or a failure ends the body with [`AnsweredLocally`] and lands in
    /// `local`.
    pub fn request(inner: B, filters: SharedFilters, local: LocalSlot) -> Self {
        Self::new(inner, filters, Flow::Request, Some(local))
    }

    /// The response body, through `on_response_body` / `on_response_trailers`.
    pub fn response(inner: B, filters: SharedFilters) -> Self {
        Self::new(inner, filters, Flow::Response, None)
    }

    fn new(inner: B, filters: SharedFilters, flow: Flow, local: Option<LocalSlot>) -> Self {
        // Nothing else holds the chain while the proxy wraps a body; if something
        // did, filtering every chunk is the safe answer. A message that ended with its
        // headers has no body phase, as on Envoy (a GET gets no on_request_body).
        let passthrough =
            inner.is_end_stream() || filters.try_lock().is_some_and(|f| !f.takes_bodies());
        Self {
            // A body that is over before it starts has no body phase: the headers
            // phase was told `end_of_stream`.
            done: inner.is_end_stream(),
            inner,
            filters,
            flow,
            local,
            step: None,
            passthrough,
        }
    }

    /// Runs a chunk through the chain: at once when the chain is free and every
    /// filter can be called now (its outcome comes back), else in a step to poll.
    fn data(&mut self, chunk: Bytes, eos: bool) -> Option<Out> {
        let flow = self.flow;
        if let Some(mut chain) = self.filters.try_lock_owned() {
            let mut walk = chain.body_start(flow, chunk, eos);
            match chain.body_now(&mut walk) {
                Ok(d) => return Some(d.into()),
                Err(halt) => {
                    self.step = Some(Box::pin(async move {
                        chain.body_resume(walk, halt).await.into()
                    }));
                    return None;
                }
            }
        }
        let filters = self.filters.clone();
        self.step = Some(Box::pin(async move {
            filters.lock().await.body(flow, chunk, eos).await.into()
        }));
        None
    }

    fn trailers(&mut self, mut trailers: HeaderMap) {
        let (filters, flow) = (self.filters.clone(), self.flow);
        self.step = Some(Box::pin(async move {
            let mut f = filters.lock().await;
            // Trailers end the body: paused filters give up what they hold first.
            let flushed = match f.body(flow, Bytes::new(), true).await.into() {
                Out::Data(b) => b,
                stop => return stop,
            };
            let d = match flow {
                Flow::Request => f.request_trailers(&mut trailers).await,
                Flow::Response => f.response_trailers(&mut trailers).await,
            };
            match d {
                Decision::Continue => Out::Trailers(flushed, trailers),
                stop => Out::Stop(stop),
            }
        }));
    }

    /// What a chunk's (or the trailers') way through the chain gives the reader:
    /// `None` when there is nothing to send yet (a filter holds the bytes).
    fn deliver(&mut self, out: Out) -> Option<Option<Result<Frame<Bytes>, BoxError>>> {
        match out {
            Out::Data(b) if b.is_empty() => None,
            Out::Data(b) => Some(Some(Ok(Frame::data(b)))),
            Out::Trailers(b, t) => {
                self.done = true;
                if b.is_empty() {
                    return Some(Some(Ok(Frame::trailers(t))));
                }
                // Send the flushed bytes now and the trailers next time.
                self.step = Some(Box::pin(async move { Out::Trailers(Bytes::new(), t) }));
                Some(Some(Ok(Frame::data(b))))
            }
            Out::Stop(stop) => {
                self.done = true;
                Some(match (self.flow, &self.local, stop) {
                    (Flow::Request, Some(slot), stop) => {
                        if let Ok(mut s) = slot.lock() {
                            *s = Some(stop);
                        }
                        Some(Err(Box::new(AnsweredLocally)))
                    }
                    // The response head has gone: only its body can be replaced.
                    (_, _, Decision::Respond(r)) => Some(Ok(Frame::data(r.into_body()))),
                    (_, _, Decision::Fail(f)) => Some(Err(Box::new(f))),
                    (_, _, Decision::Continue) => None,
                })
            }
        }
    }
}

impl<B> Body for FilteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into);
        }
        loop {
            if let Some(step) = this.step.as_mut() {
                let out = match step.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(out) => out,
                };
                this.step = None;
                match this.deliver(out) {
                    Some(frame) => return Poll::Ready(frame),
                    None => continue,
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            let out = match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    // The end without a last chunk: let paused filters finish.
                    this.done = true;
                    this.data(Bytes::new(), true)
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(chunk) => {
                        let eos = this.inner.is_end_stream();
                        this.done = eos;
                        this.data(chunk, eos)
                    }
                    Err(frame) => match frame.into_trailers() {
                        Ok(t) => {
                            this.trailers(t);
                            None
                        }
                        Err(_) => None,
                    },
                },
            };
            if let Some(frame) = out.and_then(|out| this.deliver(out)) {
                return Poll::Ready(frame);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.passthrough {
            return self.inner.is_end_stream();
        }
        self.done && self.step.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.passthrough {
            return self.inner.size_hint();
        }
        http_body::SizeHint::default()
    }
}
