//! The response phase of a response whose whole body came with its head (a body read
//! along with the head, `echo@internal`'s): each filter, in reverse chain order, gets
//! the response headers and then the whole body before the next filter gets the
//! headers — in one guest entry where its module has the fused `__portcullis_respond`
//! (`wasm/fuse.rs`) — instead of every filter's headers and then every filter's body.
//! Envoy orders callbacks so too whenever a filter holds the headers until the body
//! has come. Each filter sees its own callbacks as it would otherwise: the headers
//! (not the end of the stream), then the body (the end of it), with the head gone
//! downstream by then (not readable, not writable).

use std::time::Instant;

use bytes::Bytes;

use super::body_phase::BodyWalk;
use super::{Called, HttpFilters, Phase, Step, count};
use crate::config::OnError;
use crate::wasm::state::BodyBuf;
use crate::wasm::{BodyDecision, Decision};

/// What a fused entry came to.
enum Fused {
    /// The headers callback stopped the iteration or failed; the body callback was not
    /// made (the filter gets the body on its own, after it).
    Headers(Called),
    /// The headers callback continued; the body callback came to this.
    Body(Called),
    /// The headers callback answered locally: the answer replaces the response.
    Answered,
}

impl HttpFilters {
    /// The response phase of `head` with its whole `body`: what the chain decided, and
    /// the body as the filters left it (a [`Decision::Respond`] carries its own).
    pub async fn response_whole(
        &mut self,
        head: &mut http::response::Parts,
        body: Bytes,
    ) -> (Decision, Bytes) {
        let empty = http::Response::new(()).into_parts().0;
        self.io.response = Some(std::mem::replace(head, empty));
        crate::wasm::httpwasm::response_arrived(&mut self.io);
        self.io.response_body_bytes += body.len() as u64;
        let mut data = BodyBuf::Shared(body);
        let decision = self.whole_walk(&mut data).await;
        // A filter that failed or answered mid-entry may leave the head hidden.
        self.io.head_gone = false;
        self.io.respond_body = None;
        if let Some(resp) = self.io.response.take() {
            self.io.response_code = Some(resp.status.as_u16());
            self.io.response_head_bytes = crate::wasm::abi::properties::response_head_bytes(&resp);
            *head = resp;
        }
        (decision, data.into_bytes())
    }

    async fn whole_walk(&mut self, data: &mut BodyBuf) -> Decision {
        let mut clock = self.timed.then(Instant::now);
        self.body_replaced = false;
        for i in (0..self.seen).rev() {
            let n = count(&self.io, Phase::ResponseHeaders);
            let begin = self.span_begin();
            let fused = match self.body_replaced {
                false => self.respond_now(i, n, data),
                true => None,
            };
            let (mut step, body) = match fused {
                Some(Fused::Body(called)) => (Step::Continue, Some(called)),
                Some(Fused::Answered) => (Step::Local, None),
                // What must wait is boxed, so that this walk's future (in the driver's)
                // stays small: the common path moves it whole.
                Some(Fused::Headers(called)) => {
                    let step = match self.settle(i, Phase::ResponseHeaders, called) {
                        Ok(step) => step,
                        Err(called) => {
                            let phase = Phase::ResponseHeaders;
                            Box::pin(self.step_wait(i, phase, n, false, Some(called))).await
                        }
                    };
                    (step, None)
                }
                None => {
                    let step = match self.step_now(i, Phase::ResponseHeaders, n, false) {
                        Ok(step) => step,
                        Err(pending) => {
                            let phase = Phase::ResponseHeaders;
                            Box::pin(self.step_wait(i, phase, n, false, pending)).await
                        }
                    };
                    (step, None)
                }
            };
            clock = self.charge(i, clock, &step);
            if self.entries[i].shadow.is_some() {
                step = self.shadow_settle(i, step);
            }
            self.traced(i, Phase::ResponseHeaders, &step, begin);
            if let Some(d) = self.response_verdict(i, step) {
                return d;
            }
            if self.body_replaced {
                continue;
            }
            let d = match body {
                Some(called) => match self.settle(i, Phase::ResponseBody, called) {
                    Ok(step) => self.fused_body_after(i, step, data),
                    Err(called) => {
                        let n = self.io.response_body.len() as u32;
                        let phase = Phase::ResponseBody;
                        let step = Box::pin(self.step_wait(i, phase, n, true, Some(called))).await;
                        self.fused_body_after(i, step, data)
                    }
                },
                None if self.skips_body(i) => None,
                None => self.body_one(i, data).await,
            };
            if let Some(d) = d {
                return d;
            }
        }
        Decision::Continue
    }

    /// Filter `i`'s headers and body callbacks in one entry, when its VM is live, free,
    /// not on a fiber and fused, and the filter takes part in the response body as it
    /// is; `None` when not (nothing was called). The body is moved out of `data` for
    /// the entry; it is back there unless the body callback was reached, in which case
    /// it is in the stream's response body buffer, as for any body callback.
    fn respond_now(&mut self, i: usize, n: u32, data: &mut BodyBuf) -> Option<Fused> {
        let e = &mut self.entries[i];
        if e.skipped
            || e.no_response
            || e.shadow.is_some()
            || e.plugin.headers_only()
            || e.generation == 0
        {
            return None;
        }
        let mut g = e.slot.as_ref()?.try_lock()?;
        let generation = g.generation;
        if generation != e.generation {
            return None;
        }
        let vm =
            g.vm.as_mut()
                .filter(|vm| vm.fused_respond() && !vm.on_fiber())?;
        let ctx = e.ctx;
        let io = &mut self.io;
        io.resumed = false;
        io.skip_response = false;
        let len = u32::try_from(data.len()).ok()?;
        io.respond_body = Some(std::mem::take(data));
        let r = vm.call_with_now(io, ctx, |c| &c.respond, (ctx, n, len));
        // The mark between the two callbacks took the body (`fuse::MARK`).
        let reached = io.respond_body.is_none();
        if let Some(body) = io.respond_body.take() {
            *data = body;
        }
        let has_calls = vm.has_calls(ctx);
        Some(match r {
            // Headers that continued, a mark that declined: a local reply.
            Ok(Some((0, _))) if !reached => Fused::Answered,
            Ok(Some((0, action))) => Fused::Body(Called::Done { action, has_calls }),
            Ok(Some((action, _))) => Fused::Headers(Called::Done { action, has_calls }),
            Ok(None) => Fused::Headers(Called::Done {
                action: 0,
                has_calls,
            }),
            Err(f) if reached => Fused::Body(Called::Failed(generation, f)),
            Err(f) => Fused::Headers(Called::Failed(generation, f)),
        })
    }

    /// Takes what filter `i`'s body callback in a fused entry came to (`step`, its
    /// callouts over) as the body phase takes it at the end of the body: `Some` when it
    /// ends the response phase.
    fn fused_body_after(&mut self, i: usize, step: Step, data: &mut BodyBuf) -> Option<Decision> {
        let body = std::mem::take(&mut self.io.response_body);
        self.io.head_gone = false;
        match step {
            Step::Continue | Step::Pause => *data = body,
            Step::Local => {
                // The head was the filter's to change no more: the reply replaces the
                // body only, and the filters after this one get none.
                self.body_replaced = true;
                let reply = self.io.local_reply.take();
                *data = BodyBuf::Shared(reply.map(|r| r.body).unwrap_or_default());
            }
            Step::Failed(f) => match self.entries[i].plugin.config.on_error {
                OnError::Allow => *data = body,
                OnError::Deny => return Some(Decision::Fail(self.failure(i, f))),
            },
        }
        None
    }

    /// Whether filter `i` has no part in the response body (as the body walk skips it).
    fn skips_body(&self, i: usize) -> bool {
        let e = &self.entries[i];
        e.skipped
            || e.no_response
            || e.plugin.headers_only()
            || e.shadow.as_ref().is_some_and(|s| s.decided)
    }

    /// The whole body through filter `i` alone, callback by callback (its entry is not
    /// fused, or its headers callback stopped): `Some` when it ends the response phase.
    async fn body_one(&mut self, i: usize, data: &mut BodyBuf) -> Option<Decision> {
        let mut walk = BodyWalk::response_one(self.seen, i, std::mem::take(data));
        // As for any body callback, the head has gone downstream.
        self.io.head_gone = true;
        let d = match self.body_now(&mut walk) {
            Ok(d) => d,
            Err(halt) => Box::pin(self.body_resume(walk, halt)).await,
        };
        self.io.head_gone = false;
        match d {
            BodyDecision::Forward(b) => {
                *data = BodyBuf::Shared(b);
                None
            }
            BodyDecision::Respond(r) => Some(Decision::Respond(r)),
            BodyDecision::Fail(f) => Some(Decision::Fail(f)),
        }
    }
}
