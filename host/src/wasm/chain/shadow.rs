//! Shadow filters (`{ filter: NAME, shadow: true }` in a route's chain): they run on
//! live traffic, but what they decide is recorded, not applied.
//!
//! A shadow filter's header and trailer writes go through the stream's journal
//! (`abi/headers/journal.rs`), which keeps what each first write replaced; after its
//! callback they are put back, and a difference counts as `would_modify`. An
//! http-wasm guest's writes bypass the journal: for it the head is copied aside and
//! put back. A local reply (a deny, a redirect, a closed stream) is taken back and
//! counted as `would_deny{status}`; the filter then gets no more callbacks for that
//! request but still its `on_log`. A pause goes on at once, and a failure never fails
//! the request, whatever `on_error` says. The body phases are in `body_phase`: the
//! filter sees and may hold a copy of the bytes, and the original goes on. Its
//! counters were found when the route was built ([`ShadowCounters`]).

use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode, Uri};

use super::body_phase::BodyWalk;
use super::{HttpFilters, Phase, Plugin, Step};
use crate::metrics::{ShadowCounters, global};
use crate::wasm::abi::headers::journal;
use crate::wasm::state::{BodyBuf, StreamIo};

/// After how many decisions of one filter the log samples them: the first ones are
/// all logged, then one in [`LOG_EVERY`].
const LOG_FIRST: u64 = 10;
/// One logged decision in this many, past the first [`LOG_FIRST`].
const LOG_EVERY: u64 = 100;

/// A shadow filter's part of one stream.
#[derive(Debug)]
pub(super) struct Shadow {
    /// It answered locally: recorded, and no more callbacks but the last ones.
    pub decided: bool,
    /// Its writes were counted for this request (once per request).
    pub modified: bool,
    /// Its entry's series, found when the route was built.
    counters: Arc<ShadowCounters>,
}

/// What a shadow filter's callback may change and the journal does not keep, as it
/// was before.
pub(super) enum Saved {
    /// A body phase: the bytes the filter was given (its held bytes and the chunk).
    Body(BodyBuf),
    /// An http-wasm guest's header phase: the head it may change, and what the stream
    /// kept for http-wasm filters (response headers set before the response, bodies
    /// collected whole).
    HttpWasm(Head, Option<Box<crate::wasm::httpwasm::Pending>>),
}

/// A head as it was before an http-wasm guest's callback.
pub(super) enum Head {
    Request(Method, Uri, HeaderMap),
    Response(StatusCode, HeaderMap),
    Nothing,
}

/// What a shadow filter would have done to a request, as the test kit reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowDecision {
    /// It answered locally with this status (a deny, a redirect; 502 for a closed
    /// stream) in the named phase.
    WouldDeny {
        /// The filter.
        filter: String,
        /// The status of its reply.
        status: u16,
    },
    /// It changed the request or the response (head, trailers or body).
    WouldModify {
        /// The filter.
        filter: String,
    },
}

impl HttpFilters {
    /// The counters of `plugins` (a route's chain) at the `true` indexes of `shadow`,
    /// on route `route`: what [`HttpFilters::set_shadow`] takes, found once for the
    /// route.
    pub fn shadow_counters(
        plugins: &[Arc<Plugin>],
        shadow: &[bool],
        route: &str,
    ) -> Vec<Option<Arc<ShadowCounters>>> {
        plugins
            .iter()
            .zip(shadow)
            .map(|(p, &s)| s.then(|| global().shadow_counters(&p.config.name, route)))
            .collect()
    }

    /// Puts the filters with counters in `shadow` (by index) in shadow mode.
    pub fn set_shadow(&mut self, shadow: &[Option<Arc<ShadowCounters>>]) {
        for (e, s) in self.entries.iter_mut().zip(shadow) {
            if let Some(counters) = s {
                e.shadow = Some(Shadow {
                    decided: false,
                    modified: false,
                    counters: Arc::clone(counters),
                });
            }
        }
    }

    /// Readies shadow filter `i`'s callback for `phase` (a header or trailer phase) to
    /// have its writes taken back.
    pub(super) fn shadow_save(&mut self, i: usize, phase: Phase) {
        let io = &mut self.io;
        let e = &self.entries[i];
        if let (Phase::RequestHeaders, Some(r)) = (phase, io.request.as_ref()) {
            if let Some(s) = &e.shadow {
                s.counters.request();
            }
            // Kept for the log lines of the later phases, when the head has gone on;
            // with none to write (info is the least they log at), not kept.
            if tracing::enabled!(target: "portcullis::shadow", tracing::Level::INFO) {
                self.request_id = r.headers.get(crate::wasm::abi::REQUEST_ID).cloned();
            }
        }
        if !e.plugin.is_http_wasm() {
            io.journal.start();
            return;
        }
        let head = match phase {
            Phase::RequestHeaders => io
                .request
                .as_ref()
                .map(|r| Head::Request(r.method.clone(), r.uri.clone(), r.headers.clone())),
            Phase::ResponseHeaders => io
                .response
                .as_ref()
                .map(|r| Head::Response(r.status, r.headers.clone())),
            // An http-wasm guest is called in the header phases only.
            _ => None,
        };
        let saved = Saved::HttpWasm(head.unwrap_or(Head::Nothing), io.httpwasm.clone());
        self.saved = Some(Box::new(saved));
    }

    /// What shadow filter `i`'s `step` comes to once recorded: its writes undone, a
    /// local reply recorded and taken back, a pause or a failure gone on from.
    pub(super) fn shadow_settle(&mut self, i: usize, step: Step) -> Step {
        let io = &mut self.io;
        let mut modified = journal::settle(io);
        if let Some(Saved::HttpWasm(head, pending)) = self.saved.take().map(|s| *s) {
            let now = std::mem::replace(&mut io.httpwasm, pending);
            modified |= crate::wasm::httpwasm::differs(now.as_deref(), io.httpwasm.as_deref());
            match head {
                Head::Request(method, uri, headers) => {
                    if let Some(r) = io.request.as_mut() {
                        modified |= r.method != method || r.uri != uri || r.headers != headers;
                        (r.method, r.uri, r.headers) = (method, uri, headers);
                    }
                }
                Head::Response(status, headers) => {
                    if let Some(r) = io.response.as_mut() {
                        modified |= r.status != status || r.headers != headers;
                        (r.status, r.headers) = (status, headers);
                    }
                }
                Head::Nothing => {}
            }
        }
        if modified {
            self.shadow_modified(i);
        }
        let io = &mut self.io;
        if let Some(reply) = io.local_reply.take() {
            io.closed = false;
            self.shadow_denied(i, reply.status);
        }
        match step {
            Step::Pause => Step::Pause,
            _ => Step::Continue,
        }
    }

    /// Shadow filter `i`'s body `step`, `body` being what it left of the bytes it was
    /// given: a change or a reply is recorded; bytes it holds stay its own (it gets
    /// them again with the next chunk), and the walk's chunk goes on untouched.
    pub(super) fn shadow_body(&mut self, i: usize, walk: &BodyWalk, body: BodyBuf, step: Step) {
        if let Some(Saved::Body(given)) = self.saved.take().map(|s| *s)
            && given.as_slice() != body.as_slice()
        {
            self.shadow_modified(i);
        }
        if let Some(reply) = self.io.local_reply.take() {
            self.io.closed = false;
            self.shadow_denied(i, reply.status);
        } else if matches!(step, Step::Pause) && !walk.eos() {
            self.entries[i].held[walk.flow().held()] = body;
        }
    }

    /// Records that shadow filter `i` changed the request or response (once a request).
    pub(super) fn shadow_modified(&mut self, i: usize) {
        let e = &mut self.entries[i];
        let Some(shadow) = e.shadow.as_mut() else {
            return;
        };
        if std::mem::replace(&mut shadow.modified, true) {
            return;
        }
        let n = shadow.counters.would_modify();
        let plugin = Arc::clone(&e.plugin);
        record(self, &plugin.config.name, n, None);
    }

    /// Records that shadow filter `i` answered with `status`; it is done for this
    /// request.
    pub(super) fn shadow_denied(&mut self, i: usize, status: u16) {
        let e = &mut self.entries[i];
        let Some(shadow) = e.shadow.as_mut() else {
            return;
        };
        shadow.decided = true;
        let n = shadow.counters.would_deny(status);
        let plugin = Arc::clone(&e.plugin);
        record(self, &plugin.config.name, n, Some(status));
    }
}

fn route(io: &StreamIo) -> &str {
    io.info.as_ref().map_or("", |i| &i.route)
}

/// Logs one decision with the request's id: every one at debug (the test kit reads
/// them there), the first [`LOG_FIRST`] of a filter and then one in [`LOG_EVERY`] at
/// info. `n` is how many of this kind the filter has made (this one included).
fn record(chain: &HttpFilters, filter: &str, n: u64, status: Option<u16>) {
    let sampled = n <= LOG_FIRST || n.is_multiple_of(LOG_EVERY);
    let logged = if sampled {
        tracing::enabled!(target: "portcullis::shadow", tracing::Level::INFO)
    } else {
        tracing::enabled!(target: "portcullis::shadow", tracing::Level::DEBUG)
    };
    if !logged {
        return;
    }
    let request_id = chain
        .request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let route = route(&chain.io);
    match status {
        Some(status) if sampled => {
            tracing::info!(target: "portcullis::shadow", filter, route, request_id, status, "shadow filter {filter} would have answered {status} (not enforced)")
        }
        Some(status) => {
            tracing::debug!(target: "portcullis::shadow", filter, route, request_id, status, "shadow filter {filter} would have answered {status} (not enforced)")
        }
        None if sampled => {
            tracing::info!(target: "portcullis::shadow", filter, route, request_id, "shadow filter {filter} would have changed the request or its response (not applied)")
        }
        None => {
            tracing::debug!(target: "portcullis::shadow", filter, route, request_id, "shadow filter {filter} would have changed the request or its response (not applied)")
        }
    }
}
