//! `mirror`: a copy of a share of a route's requests goes to a shadow upstream, fire
//! and forget. The copy is sent from a task of its own once the request's body has
//! passed whole (its bytes copied as they stream to the real upstream, up to
//! `max_body`); its answer is read and thrown away, and counted
//! (`portcullis_mirror_requests_total`). Nothing of it reaches the real request: a
//! shadow that is down, slow or failing costs the client nothing but the copy of the
//! body.
//!
//! A route has at most `max_in_flight` copies under way (256 by default); past that (a
//! shadow slower than the traffic), further copies are skipped rather than piled up, and so is a
//! request whose body is longer than `max_body` or does not arrive whole.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::Upstream;
use crate::body::{self, BoxError, ProxyBody};
use crate::config::MirrorConfig;

/// A route's mirror (cheap to clone: one shared allocation).
#[derive(Clone)]
pub struct Mirror(Arc<Inner>);

struct Inner {
    route: Arc<str>,
    upstream: Arc<Upstream>,
    percent: u32,
    max_body: u64,
    max_in_flight: u32,
    in_flight: AtomicU32,
}

/// One copy's place among the route's copies under way.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A copy for the shadow, waiting for its body: sent once the body has passed whole.
struct Shadow {
    slot: Slot,
    head: Request<()>,
    client: IpAddr,
    body: BytesMut,
}

impl Mirror {
    /// The mirror of route `route` to `upstream`, as `config` says.
    pub fn new(route: Arc<str>, upstream: Arc<Upstream>, config: &MirrorConfig) -> Self {
        Self(Arc::new(Inner {
            route,
            upstream,
            percent: config.percent,
            max_body: config.max_body,
            max_in_flight: config.max_in_flight,
            in_flight: AtomicU32::new(0),
        }))
    }

    /// `req` (from `client`), as it goes on to the real upstream: when this request is
    /// one the mirror copies, the copy is sent now (no body) or once the body has
    /// passed (its frames copied on the way).
    pub fn copy(&self, req: Request<ProxyBody>, client: IpAddr) -> Request<ProxyBody> {
        let inner = &self.0;
        if inner.percent < 100 && rand::random_range(0..100) >= inner.percent {
            return req;
        }
        if inner.in_flight.fetch_add(1, Ordering::Relaxed) >= inner.max_in_flight {
            inner.in_flight.fetch_sub(1, Ordering::Relaxed);
            inner.count("skipped");
            return req;
        }
        let slot = Slot(Arc::clone(inner));
        if body::declared_length(req.headers()).is_some_and(|n| n > inner.max_body) {
            inner.count("skipped");
            return req;
        }
        let copy = Shadow {
            slot,
            head: head_of(&req),
            client,
            body: BytesMut::new(),
        };
        if req.body().is_end_stream() {
            copy.send();
            return req;
        }
        req.map(|inner| {
            Tee {
                inner,
                copy: Some(copy),
            }
            .boxed_unsync()
        })
    }
}

impl Inner {
    fn count(&self, result: &str) {
        crate::metrics::global().mirror(&self.route, &self.upstream.config().name, result);
    }
}

impl Shadow {
    /// Sends the copy from a task of its own, reads the answer and discards it.
    fn send(self) {
        let Shadow {
            slot,
            head,
            client,
            body,
        } = self;
        let (parts, ()) = head.into_parts();
        let req = Request::from_parts(parts, body::full(body.freeze()));
        tokio::spawn(async move {
            let inner = Arc::clone(&slot.0);
            // The answer's body is bounded too: the copy holds a slot until it ends.
            let limit = inner.upstream.config().timeouts.request;
            let exchange = async {
                let (_, result) = inner.upstream.forward(req, Some(client)).await;
                let mut answer = result.ok()?.into_body();
                while let Some(frame) = answer.frame().await {
                    frame.ok()?;
                }
                Some(())
            };
            let result = match tokio::time::timeout(limit, exchange).await {
                Ok(Some(())) => "answered",
                _ => "failed",
            };
            // Freed before it is counted: a copy seen counted has given its place back.
            drop(slot);
            inner.count(result);
        });
    }
}

/// The head of `req`: method, URI, version and headers.
fn head_of(req: &Request<ProxyBody>) -> Request<()> {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    head
}

pin_project_lite::pin_project! {
    /// A request body on its way to the real upstream, copied for the mirror as it
    /// passes; the copy goes once the body has ended.
    struct Tee {
        #[pin]
        inner: ProxyBody,
        copy: Option<Shadow>,
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(copy), Some(data)) = (this.copy.as_mut(), frame.data_ref()) {
                    let max = copy.slot.0.max_body;
                    if (copy.body.len() + data.len()) as u64 > max {
                        if let Some(c) = this.copy.take() {
                            c.slot.0.count("skipped");
                        }
                    } else {
                        copy.body.extend_from_slice(data);
                    }
                }
                if inner.is_end_stream()
                    && let Some(copy) = this.copy.take()
                {
                    copy.send();
                }
            }
            Poll::Ready(None) => {
                if let Some(copy) = this.copy.take() {
                    copy.send();
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(c) = this.copy.take() {
                    c.slot.0.count("skipped");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
