//! What the guard, the request handler and the watchdog of one connection share: the
//! connection's timers and counts, the heads the guard rejected, and the stream kept
//! for a lingering close. A leaf of `server`: the guard and the connection both use it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::ListenerLimits;

/// Why the guard refused a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The head is larger than `max_header_bytes`.
    HeadersTooLarge,
    /// The head has more than `max_headers` fields.
    TooManyHeaders,
    /// `Content-Length` with `Transfer-Encoding`, differing or invalid `Content-Length`s,
    /// or a transfer coding other than chunked last.
    BadFraming,
}

/// A stream that can be handed back to the connection for a lingering close.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// Per-connection state, shared on the worker's thread.
pub(crate) struct ConnState {
    limits: ListenerLimits,
    /// When the request head now being read started (the connection's accept for the
    /// first one); `None` while no head is being read.
    head_since: Cell<Option<Instant>>,
    /// Whether a byte of the head now being read has arrived (a fresh connection has
    /// a `head_since` but may never send anything).
    head_bytes: Cell<bool>,
    /// When the connection started draining (the process or its listener is stopping).
    draining_since: Cell<Option<Instant>>,
    /// Set when the connection should get a GOAWAY (see [`ConnState::want_goaway`]).
    goaway: Cell<bool>,
    /// The connection task waiting for `goaway`. A `Cell` and a waker rather than a
    /// `Notify`: the wait is polled at every wake-up of the connection, and this poll
    /// is a load and a pointer compare, where a `Notify`'s takes a lock.
    goaway_waker: RefCell<Option<std::task::Waker>>,
    /// When the connection last became idle (no request in flight, no head started).
    idle_since: Cell<Instant>,
    /// Since when a write to the client has been blocked (its receive window full),
    /// `None` while writes go through.
    write_blocked_since: Cell<Option<Instant>>,
    /// Requests in flight (handler started, response body not yet fully sent).
    active: Cell<usize>,
    /// Requests handed to the handler so far.
    requests: Cell<u64>,
    /// Heads the guard rejected: (request index, why).
    rejections: RefCell<Vec<(u64, Reject)>>,
    /// Set when the connection stops being HTTP/1 (HTTP/2, an upgrade).
    passthrough: Cell<bool>,
    /// The stream of a rejected connection, handed back for a lingering close.
    linger: RefCell<Option<Box<dyn Stream>>>,
    /// Whether the connection closes with unread client bytes (a request refused
    /// mid-body), and so must close lingering.
    close_lingering: Cell<bool>,
    /// Set by the guard while hyper waits for the next request head with nothing
    /// buffered, read or written (see [`ConnState::may_park`]).
    at_rest: Cell<bool>,
    /// Set while the connection is parked: hyper dropped, the stream held alone.
    parked: Cell<bool>,
}

impl ConnState {
    pub(crate) fn new(limits: ListenerLimits) -> Self {
        let now = Instant::now();
        Self {
            limits,
            head_since: Cell::new(Some(now)),
            head_bytes: Cell::new(false),
            draining_since: Cell::new(None),
            goaway: Cell::new(false),
            goaway_waker: RefCell::new(None),
            idle_since: Cell::new(now),
            write_blocked_since: Cell::new(None),
            active: Cell::new(0),
            requests: Cell::new(0),
            rejections: RefCell::new(Vec::new()),
            passthrough: Cell::new(false),
            linger: RefCell::new(None),
            close_lingering: Cell::new(false),
            at_rest: Cell::new(false),
            parked: Cell::new(false),
        }
    }

    /// The limits this connection runs under.
    pub(crate) fn limits(&self) -> &ListenerLimits {
        &self.limits
    }

    /// The guard saw the first byte of a request head.
    pub(crate) fn head_started(&self) {
        if self.head_since.get().is_none() {
            self.head_since.set(Some(Instant::now()));
        }
        self.head_bytes.set(true);
    }

    /// The guard has a complete head (or stopped parsing heads).
    pub(crate) fn head_done(&self) {
        self.head_bytes.set(false);
        if self.head_since.take().is_some() {
            self.idle_since.set(Instant::now());
        }
    }

    /// A write to the client could not proceed (the client is not reading).
    pub(crate) fn write_blocked(&self) {
        if self.write_blocked_since.get().is_none() {
            self.write_blocked_since.set(Some(Instant::now()));
        }
    }

    /// A write to the client went through.
    pub(crate) fn wrote(&self) {
        self.write_blocked_since.set(None);
    }

    /// The guard rejected the head that will be request `index`.
    pub(crate) fn reject(&self, index: u64, why: Reject) {
        self.rejections.borrow_mut().push((index, why));
    }

    /// Why the guard rejected the head of request `index`, if it did (the guard numbers
    /// the heads it hands on as the handler numbers the requests that reach it).
    pub(crate) fn rejection(&self, index: u64) -> Option<Reject> {
        self.rejections
            .borrow()
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, why)| *why)
    }

    /// Keeps `io` for a lingering close once hyper is done with it.
    pub(crate) fn linger(&self, io: Box<dyn Stream>) {
        *self.linger.borrow_mut() = Some(io);
    }

    /// The stream to close lingering, if the connection was rejected.
    pub(crate) fn take_linger(&self) -> Option<Box<dyn Stream>> {
        self.linger.borrow_mut().take()
    }

    /// Stop treating the byte stream as HTTP/1 (HTTP/2 prior knowledge, an upgrade).
    pub(crate) fn passthrough(&self) {
        // A connection accepted during the drain starts draining before its first
        // byte, and only then shows that it speaks HTTP/2.
        if !self.passthrough.replace(true) && self.is_draining() {
            self.want_goaway();
        }
        self.head_done();
    }

    /// Asks the connection to shut down gracefully (an HTTP/2 GOAWAY): it is
    /// draining, or has carried its last request.
    pub(crate) fn want_goaway(&self) {
        self.goaway.set(true);
        let waker = self.goaway_waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Completes once [`ConnState::want_goaway`] has been called.
    pub(crate) fn goaway_wanted(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.goaway.get() {
                return std::task::Poll::Ready(());
            }
            let mut waker = self.goaway_waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
    }

    /// Whether the stream is no longer parsed as HTTP/1.
    pub(crate) fn is_passthrough(&self) -> bool {
        self.passthrough.get()
    }

    /// The process or the listener is stopping: HTTP/1 responses from now on ask the
    /// client to close, and the connection closes once idle (see [`watchdog`]).
    pub(crate) fn start_draining(&self) {
        if self.draining_since.get().is_none() {
            self.draining_since.set(Some(Instant::now()));
        }
    }

    /// Whether the connection is draining.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining_since.get().is_some()
    }

    /// The connection will close with client bytes unread (a request answered before
    /// its body arrived): close lingering, so that a reset does not destroy the answer.
    pub(crate) fn close_lingering(&self) {
        self.close_lingering.set(true);
    }

    /// Whether the stream must be closed lingering when hyper is done with it (see
    /// [`linger`]): the connection was refused mid-body, or is draining (its client
    /// may have sent a request as it closed).
    pub(crate) fn closes_lingering(&self) -> bool {
        self.close_lingering.get() || self.is_draining()
    }

    /// The guard's word on whether hyper is at rest: waiting for the next head, with
    /// nothing read but not handed on, and everything written flushed.
    pub(crate) fn set_at_rest(&self, at_rest: bool) {
        self.at_rest.set(at_rest);
    }

    /// Whether the connection may park now: HTTP/1, between requests (none in flight,
    /// no head begun), hyper at rest, not draining, not parked already.
    pub(crate) fn may_park(&self) -> bool {
        self.at_rest.get()
            && self.active.get() == 0
            && self.head_since.get().is_none()
            && !self.passthrough.get()
            && !self.parked.get()
            && !self.is_draining()
    }

    /// Marks the connection parked (`true`: hyper is about to be dropped, and the
    /// guard leaves the stream behind) or resumed (`false`).
    pub(crate) fn set_parked(&self, parked: bool) {
        self.parked.set(parked);
        self.at_rest.set(false);
    }

    /// Whether the connection is parked.
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.get()
    }

    /// Requests handed to the handler so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.get()
    }

    /// A request reached the handler: returns its index on the connection and a token
    /// that keeps it counted as in flight.
    pub(crate) fn request_started(self: &Rc<Self>) -> (u64, Active) {
        let index = self.requests.get();
        self.requests.set(index + 1);
        self.active.set(self.active.get() + 1);
        // HTTP/2 requests never pass the guard's head parser.
        self.head_done();
        (index, Active(Rc::clone(self)))
    }
}

/// One request in flight; dropping it (when its response body is done) may make the
/// connection idle.
pub struct Active(Rc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        let s = &self.0;
        let active = s.active.get().saturating_sub(1);
        s.active.set(active);
        if active == 0 {
            s.idle_since.set(Instant::now());
        }
    }
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expired {
    /// The request head did not arrive in time (slowloris, or nothing sent at all).
    HeaderTimeout,
    /// Idle keep-alive for too long.
    IdleTimeout,
    /// The client stopped reading its response for longer than the idle timeout.
    WriteStalled,
    /// Draining, and idle (or not yet sent a byte) for [`DRAIN_IDLE`].
    Drained,
}

/// How long an HTTP/1 connection may stay idle once the process drains. HTTP/1.1 has no
/// way to tell an idle client to go away, and a client may be sending its next request
/// on the connection at this very moment (closing then would lose it): a busy client
/// sends it within this time, gets its answer with `Connection: close`, and leaves.
pub(crate) const DRAIN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl Expired {
    /// The limit that struck, as `portcullis_client_limits_total` labels it; `None`
    /// for a drain, which is no limit of the client's.
    pub(crate) fn limit(self) -> Option<&'static str> {
        match self {
            Expired::HeaderTimeout => Some("header_timeout"),
            Expired::IdleTimeout => Some("idle_timeout"),
            Expired::WriteStalled => Some("write_stalled"),
            Expired::Drained => None,
        }
    }
}

impl Reject {
    /// The limit the head broke, as `portcullis_client_limits_total` labels it.
    pub(crate) fn limit(self) -> &'static str {
        match self {
            Reject::HeadersTooLarge => "max_header_bytes",
            Reject::TooManyHeaders => "max_headers",
            Reject::BadFraming => "framing",
        }
    }
}

impl std::fmt::Display for Expired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expired::HeaderTimeout => "request headers not received in time",
            Expired::IdleTimeout => "idle for too long",
            Expired::WriteStalled => "the client stopped reading its response",
            Expired::Drained => "draining, and idle",
        })
    }
}

/// Why the watchdog woke the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wake {
    /// A limit or the drain ends the connection.
    Close(Expired),
    /// The connection has rested for [`PARK_AFTER`]: it may park.
    Park,
}

/// How long an HTTP/1 connection rests between requests before it parks (hyper and
/// every buffer dropped, the stream alone kept until the client's next bytes; see
/// `conn`). A client sending request after request never parks, and so never pays
/// for a new hyper connection; an idle one costs little within a second or two.
pub(crate) const PARK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Completes when the connection has been reading one head for longer than the header
/// timeout, idle for longer than the idle timeout, or unable to write to a client that
/// stopped reading for longer than the idle timeout (a request in flight, however slow
/// its upstream, never expires here); or when an HTTP/1 connection has rested for
/// [`PARK_AFTER`] and may park.
///
/// Nothing wakes the watchdog when the state changes (that was a wake-up of the
/// connection's task, and a re-poll of hyper, several times per request). Instead it
/// never sleeps longer than the shortest timeout: every deadline is an event's time
/// plus a timeout, so one that an event sets after the watchdog went to sleep lies
/// beyond its wake-up, and is seen then. Draining is the exception (its deadline may
/// lie in the past): the connection starts a new watchdog when it starts draining.
pub(crate) async fn watchdog(state: &ConnState) -> Wake {
    let limits = &state.limits;
    let longest_nap = limits
        .header_timeout
        .min(limits.idle_timeout)
        .max(std::time::Duration::from_millis(1));

    loop {
        let mut deadline = None;
        let mut consider = |at: Instant, why: Wake| match deadline {
            Some((earliest, _)) if earliest <= at => {}
            _ => deadline = Some((at, why)),
        };
        if let Some(since) = state.head_since.get() {
            consider(
                since + limits.header_timeout,
                Wake::Close(Expired::HeaderTimeout),
            );
        } else if state.active.get() == 0 {
            consider(
                state.idle_since.get() + limits.idle_timeout,
                Wake::Close(Expired::IdleTimeout),
            );
        }
        if state.is_draining() && state.active.get() == 0 && !state.head_bytes.get() {
            // Idle, or a connection that has not sent a byte yet: it may go once it
            // has been so for DRAIN_IDLE (from its last activity, which for a long
            // idle connection lies in the past: it goes at once).
            let since = state.head_since.get().unwrap_or(state.idle_since.get());
            consider(
                since + DRAIN_IDLE.min(limits.idle_timeout),
                Wake::Close(Expired::Drained),
            );
        }
        if let Some(since) = state.write_blocked_since.get() {
            consider(
                since + limits.idle_timeout,
                Wake::Close(Expired::WriteStalled),
            );
        }
        if state.may_park() {
            consider(state.idle_since.get() + PARK_AFTER, Wake::Park);
        }
        // An HTTP/1 connection that may rest soon is looked at within PARK_AFTER.
        let nap = if state.is_passthrough() || state.is_parked() {
            longest_nap
        } else {
            longest_nap.min(PARK_AFTER)
        };
        let now = Instant::now();
        let wake = match deadline {
            Some((at, why)) if at <= now => return why,
            Some((at, _)) => at.min(now + nap),
            None => now + nap,
        };
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// Closes a rejected connection without a reset: shut down our side, then read and
/// discard what the client still sends (bounded in time and bytes) before closing.
pub(crate) async fn linger(mut io: Box<dyn Stream>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
    const MAX_DRAIN: usize = 1024 * 1024;
    let _ = io.shutdown().await;
    let drain = async {
        // On the heap: an array here would sit in every connection's future (this one
        // is awaited inline), 8 KiB per connection however idle.
        let mut buf = vec![0u8; 8192];
        let mut total = 0;
        while total < MAX_DRAIN {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
