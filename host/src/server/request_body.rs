//! The request body's pace: a minimum data rate after a grace period (Kestrel's
//! `MinRequestBodyDataRate`) and a timeout between two bytes, so that a client
//! trickling a body cannot hold a request slot (and an upstream connection) for as
//! long as it likes.
//!
//! Only time spent waiting on the client counts: while the consumer (a filter, the
//! upstream connection) does not ask for more, the client is not the one holding the
//! request up. The limit that strikes is recorded in a [`Verdict`] the connection
//! reads once the proxy has answered, and replaces that answer with 408.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::config::ListenerLimits;

/// Which pace limit a request body broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TooSlow {
    /// Slower on average than `min_body_rate` after `body_rate_grace`.
    Rate,
    /// No byte for `body_timeout`.
    Idle,
}

impl TooSlow {
    /// The config field of the limit, as the metrics label it.
    pub(crate) fn limit(self) -> &'static str {
        match self {
            TooSlow::Rate => "min_body_rate",
            TooSlow::Idle => "body_timeout",
        }
    }
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TooSlow::Rate => "request body arrived slower than the listener's min_body_rate",
            TooSlow::Idle => "no byte of the request body within the listener's body_timeout",
        })
    }
}

impl std::error::Error for TooSlow {}

/// What the body reports to its connection: which limit it broke, if any. Shared
/// with the body, which the proxy may have moved to another task's future, hence an
/// atomic.
#[derive(Clone, Default)]
pub(crate) struct Verdict(Arc<AtomicU8>);

impl Verdict {
    fn set(&self, why: TooSlow) {
        let code = match why {
            TooSlow::Rate => 1,
            TooSlow::Idle => 2,
        };
        self.0.store(code, Ordering::Relaxed);
    }

    /// The limit the body broke, if it did.
    pub(crate) fn get(&self) -> Option<TooSlow> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(TooSlow::Rate),
            2 => Some(TooSlow::Idle),
            _ => None,
        }
    }
}

/// A request body held to the listener's pace limits.
pub(crate) struct PacedBody<B> {
    inner: B,
    min_rate: u64,
    grace: Duration,
    idle: Duration,
    verdict: Verdict,
    /// Bytes received so far.
    bytes: u64,
    /// Time spent waiting on the client before the current wait.
    waited: Duration,
    /// Since when the body has been waiting for the client, if it is.
    waiting_since: Option<Instant>,
    /// Wakes the body at its next deadline while it waits.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> PacedBody<B> {
    /// Wraps `inner`, reporting a broken limit to `verdict`.
    pub(crate) fn new(inner: B, limits: &ListenerLimits, verdict: Verdict) -> Self {
        Self {
            inner,
            min_rate: limits.min_body_rate.max(1),
            grace: limits.body_rate_grace,
            idle: limits.body_timeout,
            verdict,
            bytes: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// The broken limit at `now` while waiting since `since`, else the next instant
    /// one could break.
    fn check(&self, since: Instant, now: Instant) -> Result<Instant, TooSlow> {
        let idle_at = since + self.idle;
        // Average rate over the waiting time: it drops below the minimum once the
        // waiting time exceeds bytes / rate, and counts only after the grace period.
        let allowed = Duration::from_secs_f64(self.bytes as f64 / self.min_rate as f64);
        let rate_at = since + self.grace.max(allowed).saturating_sub(self.waited);
        if now >= idle_at {
            return Err(TooSlow::Idle);
        }
        if now >= rate_at {
            return Err(TooSlow::Rate);
        }
        Ok(idle_at.min(rate_at))
    }

    fn stop_waiting(&mut self) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.timer = None;
    }
}

impl<B> Body for PacedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::body::BoxError>,
{
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(why) = this.verdict.get() {
            return Poll::Ready(Some(Err(Box::new(why))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stop_waiting();
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    this.bytes += data.len() as u64;
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => loop {
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let next = match this.check(since, now) {
                    Ok(next) => next,
                    Err(why) => {
                        this.verdict.set(why);
                        this.timer = None;
                        return Poll::Ready(Some(Err(Box::new(why))));
                    }
                };
                match &mut this.timer {
                    Some(timer) => timer.as_mut().reset(next),
                    None => this.timer = Some(Box::pin(tokio::time::sleep_until(next))),
                }
                if let Some(timer) = &mut this.timer {
                    ready!(timer.as_mut().poll(cx));
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn limits(rate: u64, grace_ms: u64, idle_ms: u64) -> ListenerLimits {
        ListenerLimits {
            min_body_rate: rate,
            body_rate_grace: Duration::from_millis(grace_ms),
            body_timeout: Duration::from_millis(idle_ms),
            ..ListenerLimits::default()
        }
    }

    /// A body that yields `chunk` bytes every `every`, `n` times.
    fn trickle(
        chunk: usize,
        every: Duration,
        n: usize,
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let stream = futures_util::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            let frame: Result<_, std::convert::Infallible> =
                Ok(Frame::data(Bytes::from(vec![b'x'; chunk])));
            Some((frame, i + 1))
        });
        StreamBody::new(Box::pin(stream))
    }

    #[tokio::test]
    async fn a_body_at_pace_passes_whole() {
        let verdict = Verdict::default();
        // 100 B every 20 ms = 5,000 B/s against a minimum of 240.
        let body = PacedBody::new(
            trickle(100, Duration::from_millis(20), 30),
            &limits(240, 200, 150),
            verdict.clone(),
        );
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 3_000);
        assert_eq!(verdict.get(), None);
    }

    #[tokio::test]
    async fn a_trickle_fails_the_rate_after_the_grace_period() {
        let verdict = Verdict::default();
        // 1 B every 20 ms = 50 B/s, under 240: fine for the 300 ms grace, then not.
        let started = Instant::now();
        let body = PacedBody::new(
            trickle(1, Duration::from_millis(20), 1000),
            &limits(240, 300, 150),
            verdict.clone(),
        );
        let err = body
            .collect()
            .await
            .map(|_| ())
            .expect_err("the rate limit must strike");
        assert_eq!(verdict.get(), Some(TooSlow::Rate), "{err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "should strike after the grace period, took {took:?}"
        );
    }

    #[tokio::test]
    async fn a_stall_fails_the_body_timeout_even_after_a_fast_start() {
        let verdict = Verdict::default();
        let first: Result<_, std::convert::Infallible> =
            Ok(Frame::data(Bytes::from(vec![b'x'; 100_000])));
        let stream = futures_util::StreamExt::chain(
            futures_util::stream::iter([first]),
            futures_util::stream::pending(),
        );
        let chained = StreamBody::new(stream);
        let started = Instant::now();
        let paced = PacedBody::new(chained, &limits(240, 100, 300), verdict.clone());
        let err = paced
            .collect()
            .await
            .map(|_| ())
            .expect_err("the body timeout must strike");
        assert_eq!(verdict.get(), Some(TooSlow::Idle), "{err}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "should strike body_timeout after the last byte, took {took:?}"
        );
    }

    #[tokio::test]
    async fn time_the_consumer_does_not_ask_is_not_the_clients() {
        let verdict = Verdict::default();
        // 10 B at once, then the consumer takes 500 ms to ask again (beyond the grace
        // and the body timeout): not the client's fault.
        let mut body = PacedBody::new(
            trickle(10, Duration::from_millis(1), 3),
            &limits(240, 100, 100),
            verdict.clone(),
        );
        assert!(body.frame().await.is_some());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(verdict.get(), None);
    }
}
