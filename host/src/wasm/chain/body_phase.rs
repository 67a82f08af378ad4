//! The body phases: one chunk through the filters that saw the request, in chain order
//! for the request body and in reverse for the response's.
//!
//! A chunk's walk runs at once as far as it can — every filter's VM live and free,
//! nothing to dispatch, as nearly always — so that the common chunk costs no future,
//! no allocation and no lock wait. Where a filter must be waited for, the walk stops
//! at that filter ([`Halt`]) and [`HttpFilters::body_resume`] goes on from there.

use bytes::Bytes;

use super::shadow::Saved;
use super::{Called, HttpFilters, Phase, Step};
use crate::config::OnError;
use crate::wasm::BodyDecision;
use crate::wasm::state::{BodyBuf, StreamIo};

/// Which body a walk is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flow {
    /// The request's, through the filters in chain order.
    Request,
    /// The response's, in reverse.
    Response,
}

impl Flow {
    fn phase(self) -> Phase {
        match self {
            Flow::Request => Phase::RequestBody,
            Flow::Response => Phase::ResponseBody,
        }
    }

    /// Which of a filter's two held buffers (`Entry::held`) is this body's.
    pub(super) fn held(self) -> usize {
        self as usize
    }

    /// The stream's bytes of this body for the running filter.
    fn body(self, io: &mut StreamIo) -> &mut BodyBuf {
        match self {
            Flow::Request => &mut io.request_body,
            Flow::Response => &mut io.response_body,
        }
    }
}

/// One chunk's way through the chain, which can stop at a filter and go on later.
pub struct BodyWalk {
    flow: Flow,
    /// How many of the walk's filters (in its order) are behind it.
    done: usize,
    /// The walk ends once `done` reaches this (or the filters that saw the request).
    until: usize,
    /// The bytes for the next filter (the running filter's are in the stream's data).
    data: BodyBuf,
    eos: bool,
}

/// Why a walk stopped short of the end.
pub struct Halt(Why);

enum Why {
    /// The filter at the walk's position must be waited for: before its callback
    /// (`None`), or after it with what it came to.
    Wait(Option<Called>),
    /// Filter `i` answered while the request body streamed: the reply goes through
    /// the response phase, which may wait.
    Local(usize),
}

impl BodyWalk {
    /// A walk of the whole response body through filter `i` alone (of `seen`).
    pub(super) fn response_one(seen: usize, i: usize, data: BodyBuf) -> BodyWalk {
        let done = seen - 1 - i;
        BodyWalk {
            flow: Flow::Response,
            done,
            until: done + 1,
            data,
            eos: true,
        }
    }

    /// Which body the walk is on.
    pub(super) fn flow(&self) -> Flow {
        self.flow
    }

    /// Whether the chunk ends the body.
    pub(super) fn eos(&self) -> bool {
        self.eos
    }

    /// The chain index of the walk's next filter.
    fn index(&self, seen: usize) -> usize {
        match self.flow {
            Flow::Request => self.done,
            Flow::Response => seen - 1 - self.done,
        }
    }
}

impl HttpFilters {
    /// One chunk of `flow`'s body through the body phase, waiting where it must.
    pub async fn body(&mut self, flow: Flow, chunk: Bytes, eos: bool) -> BodyDecision {
        let mut walk = self.body_start(flow, chunk, eos);
        match self.body_now(&mut walk) {
            Ok(d) => d,
            Err(halt) => self.body_resume(walk, halt).await,
        }
    }

    /// Starts one chunk's walk (see [`HttpFilters::body_now`]).
    pub fn body_start(&mut self, flow: Flow, chunk: Bytes, eos: bool) -> BodyWalk {
        let counted = match flow {
            Flow::Request => &mut self.io.request_body_bytes,
            Flow::Response => &mut self.io.response_body_bytes,
        };
        *counted += chunk.len() as u64;
        BodyWalk {
            flow,
            done: 0,
            until: usize::MAX,
            data: BodyBuf::Shared(chunk),
            eos,
        }
    }

    /// Walks the chunk on through the filters, calling each at once; `Err` where a
    /// filter must be waited for: hand the walk and the halt to
    /// [`HttpFilters::body_resume`]. A filter that pauses holds the bytes (and gets
    /// them all again with the next chunk) until it continues or the body ends.
    pub fn body_now(&mut self, walk: &mut BodyWalk) -> Result<BodyDecision, Halt> {
        while walk.done < self.seen.min(walk.until) {
            let i = walk.index(self.seen);
            let e = &mut self.entries[i];
            if e.plugin.headers_only()
                || (walk.flow == Flow::Response && e.no_response)
                || e.shadow.as_ref().is_some_and(|s| s.decided)
            {
                walk.done += 1;
                continue;
            }
            let held = std::mem::take(&mut e.held[walk.flow.held()]);
            let body = walk.flow.body(&mut self.io);
            if e.shadow.is_some() {
                // A shadow filter works on a copy (a shared chunk is not copied until
                // it writes); the chunk itself goes on as it came.
                *body = held.join(walk.data.clone());
                self.saved = Some(Box::new(Saved::Body(body.clone())));
            } else {
                *body = held.join(std::mem::take(&mut walk.data));
            }
            let n = body.len() as u32;
            let step = self
                .step_now(i, walk.flow.phase(), n, walk.eos)
                .map_err(|pending| Halt(Why::Wait(pending)))?;
            if let Some(d) = self.body_after(walk, i, step)? {
                return Ok(d);
            }
        }
        Ok(BodyDecision::Forward(
            std::mem::take(&mut walk.data).into_bytes(),
        ))
    }

    /// Goes on with a walk [`HttpFilters::body_now`] stopped, waiting where it must.
    pub async fn body_resume(&mut self, mut walk: BodyWalk, mut halt: Halt) -> BodyDecision {
        loop {
            match halt.0 {
                Why::Local(i) => {
                    return match Box::pin(self.local_response(i)).await {
                        Ok(r) => BodyDecision::Respond(r),
                        Err(f) => BodyDecision::Fail(f),
                    };
                }
                Why::Wait(pending) => {
                    let i = walk.index(self.seen);
                    let n = walk.flow.body(&mut self.io).len() as u32;
                    let phase = walk.flow.phase();
                    let step = self.step_wait(i, phase, n, walk.eos, pending).await;
                    match self.body_after(&mut walk, i, step) {
                        Ok(Some(d)) => return d,
                        Ok(None) => {}
                        Err(h) => {
                            halt = h;
                            continue;
                        }
                    }
                }
            }
            match self.body_now(&mut walk) {
                Ok(d) => return d,
                Err(h) => halt = h,
            }
        }
    }

    /// Takes filter `i`'s step: the bytes go on (`None`), or the chunk's walk ends here.
    fn body_after(
        &mut self,
        walk: &mut BodyWalk,
        i: usize,
        step: Step,
    ) -> Result<Option<BodyDecision>, Halt> {
        walk.done += 1;
        let body = std::mem::take(walk.flow.body(&mut self.io));
        if self.entries[i].shadow.is_some() {
            self.shadow_body(i, walk, body, step);
            return Ok(None);
        }
        match step {
            Step::Continue => walk.data = body,
            Step::Pause if !walk.eos => {
                self.entries[i].held[walk.flow.held()] = body;
                return Ok(Some(BodyDecision::Forward(Bytes::new())));
            }
            Step::Pause => walk.data = body,
            Step::Local => match walk.flow {
                Flow::Request => {
                    self.seen = i + 1;
                    return Err(Halt(Why::Local(i)));
                }
                Flow::Response => {
                    // Headers have gone downstream: the reply can only replace the body.
                    self.body_replaced = true;
                    let reply = self.io.local_reply.take();
                    let body = reply.map(|r| r.body).unwrap_or_default();
                    return Ok(Some(BodyDecision::Forward(body)));
                }
            },
            Step::Failed(f) => match self.entries[i].plugin.config.on_error {
                OnError::Allow => walk.data = body,
                OnError::Deny => return Ok(Some(BodyDecision::Fail(self.failure(i, f)))),
            },
        }
        Ok(None)
    }
}
