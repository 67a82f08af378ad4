//! proxy-wasm host functions (ABI 0.2.1 and 0.2.0; functions only 0.1.0 modules
//! import answer UNIMPLEMENTED, see `engine`). Each checks every guest pointer.

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
pub(crate) mod headers;
pub(crate) mod properties;
mod types;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use super::fuse::MARK;
use super::memory::{self, decode_pairs, hand_back_with, read, read_str, slice, view, write_u32};
use super::state::{
    Deferred, GET_HEADER_VALUES, HostState, LANDING, LocalReply, PendingCall, SKIP_RESPONSE_PHASE,
    Status,
};
use super::{foreign, metrics, shared};
use crate::wasm::grpc::HTTP_CALL;
use headers::Edit;
use types::{BufferType, MapType};

type C<'a> = Caller<'a, HostState>;

/// Unwraps a memory access, returning its status to the guest on failure.
macro_rules! t {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return Ok(code.into()),
        }
    };
}

/// Same as `t!` for functions that return a bare status.
macro_rules! s {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return code.into(),
        }
    };
}

/// Links host function `$name` (module `env`), written as a closure taking the
/// caller first, so that [`super::trace`] sees each call of a traced request: its
/// arguments, result and time. Off, a call pays one test of the stream's trace.
macro_rules! host {
    ($l:ident, $name:expr, |mut $c:ident : C<'_> $(, $a:ident : $at:ty)*| -> $r:ty $body:block $(,)?) => {
        host!(@wrap $l, $name, [mut $c], [$($a : $at),*], [-> $r], $body)
    };
    ($l:ident, $name:expr, |mut $c:ident : C<'_> $(, $a:ident : $at:ty)*| $body:expr $(,)?) => {
        host!(@wrap $l, $name, [mut $c], [$($a : $at),*], [], $body)
    };
    ($l:ident, $name:expr, |$c:tt : C<'_> $(, $a:ident : $at:ty)*| -> $r:ty $body:block $(,)?) => {
        host!(@wrap $l, $name, [$c], [$($a : $at),*], [-> $r], $body)
    };
    ($l:ident, $name:expr, |$c:tt : C<'_> $(, $a:ident : $at:ty)*| $body:expr $(,)?) => {
        host!(@wrap $l, $name, [$c], [$($a : $at),*], [], $body)
    };
    (@wrap $l:ident, $name:expr, [$($c:tt)+], [$($a:ident : $at:ty),*], [$($ret:tt)*], $body:expr) => {{
        let name: &'static str = $name;
        $l.func_wrap("env", name, move |caller: C<'_> $(, $a: $at)*| {
            let call = |$($c)+: C<'_> $(, $a: $at)*| $($ret)* { $body };
            if caller.data().io.trace.is_none() {
                return call(caller $(, $a)*);
            }
            // A traced request: rare, so kept out of the common path's way.
            let traced = crate::wasm::trace::Call::begin(caller.data());
            let r = call(caller $(, $a)*);
            if let Some(traced) = traced {
                traced.end(name, &[$(&$a as &dyn std::fmt::Display),*], &r);
            }
            r
        })
    }};
}

mod grpc;
mod redis;

/// Links every proxy-wasm host function into `l` under module `env`.
pub(crate) fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link_misc(l)?;
    link_headers(l)?;
    link_buffers(l)?;
    link_stream(l)?;
    grpc::link(l)?;
    redis::link(l)?;
    link_shared(l)?;
    link_metrics(l)?;
    Ok(())
}

/// A fused response entry's mark, passed as the first argument of one of the host
/// calls in `fuse::MARKERS` between its headers and its body callback: the body
/// callback begins (0), or is not made (1) when the headers callback answered locally.
#[cold]
fn mark(c: &mut C<'_>) -> i32 {
    let io = &mut c.data_mut().io;
    if io.local_reply.is_some() {
        return 1;
    }
    io.enter_body_part();
    Status::Ok.into()
}

/// The header carrying a request's id, which filters' log lines repeat.
pub(crate) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

fn link_misc(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(l, "proxy_log", |mut c: C<'_>,
                           level: u32,
                           ptr: u32,
                           len: u32|
     -> i32 {
        if level == MARK {
            return mark(&mut c);
        }
        // The message is checked as Envoy does, but a line the log filter drops
        // costs no copy. (Error lines are kept: they say why on_configure refused.)
        let msg = s!(view(&c, ptr, len));
        if level < 4 && !log_enabled(level) {
            return Status::Ok.into();
        }
        let msg = String::from_utf8_lossy(msg).into_owned();
        let f = &*c.data().plugin_name;
        // The stream's id as it stands when the filter logs (the client's, or the
        // one a `headers` filter earlier in the chain generated); none outside a
        // stream's callbacks. Borrowed from the headers: no copy.
        let id = c.data().io.request.as_ref().and_then(|r| {
            let v = r.headers.get(REQUEST_ID)?;
            v.to_str().ok()
        });
        match level {
            0 => tracing::trace!(target: "filter", filter = f, request_id = id, "{msg}"),
            1 => tracing::debug!(target: "filter", filter = f, request_id = id, "{msg}"),
            2 => tracing::info!(target: "filter", filter = f, request_id = id, "{msg}"),
            3 => tracing::warn!(target: "filter", filter = f, request_id = id, "{msg}"),
            _ => tracing::error!(target: "filter", filter = f, request_id = id, "{msg}"),
        }
        if level >= 4 {
            c.data_mut().last_error_log = Some(msg.to_string());
        }
        Status::Ok.into()
    })?;
    host!(l, "proxy_get_log_level", |mut c: C<'_>, ret: u32| -> i32 {
        use tracing::level_filters::LevelFilter;
        let level = match LevelFilter::current() {
            LevelFilter::TRACE => 0,
            LevelFilter::DEBUG => 1,
            LevelFilter::INFO => 2,
            LevelFilter::WARN => 3,
            LevelFilter::ERROR => 4,
            _ => 5,
        };
        s!(write_u32(&mut c, ret, level));
        Status::Ok.into()
    })?;
    host!(l, "proxy_get_current_time_nanoseconds", |mut c: C<'_>,
                                                    ret: u32|
     -> i32 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        s!(memory::write(&mut c, ret, &now.to_le_bytes()));
        Status::Ok.into()
    })?;
    host!(l, "proxy_set_tick_period_milliseconds", |mut c: C<'_>,
                                                    ms: u32|
     -> i32 {
        c.data_mut().tick_period = (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
        c.data().signal.notify.notify_one();
        Status::Ok.into()
    })?;
    host!(
        l,
        "proxy_set_effective_context", // Host calls act on the stream whose callback runs (its data is in the store),
        // which is where SDKs point the effective context: during
        // `on_http_call_response` (run on the root context) that is the calling stream.
        |_: C<'_>, _ctx: u32| -> i32 { Status::Ok.into() },
    )?;
    host!(l, "proxy_done", |_: C<'_>| -> i32 { Status::Ok.into() })?;
    host!(
        l,
        "proxy_get_property",
        |mut c: C<'_>, p: u32, n: u32, rp: u32, rs: u32| {
            hand_back_with(&mut c, rp, rs, |s, mem, out| {
                properties::get_into(s, slice(mem, p, n)?, out)
            })
        },
    )?;
    host!(l, "proxy_set_property", |mut c: C<'_>,
                                    p: u32,
                                    n: u32,
                                    vp: u32,
                                    vn: u32|
     -> i32 {
        let v = s!(read(&c, vp, vn));
        let path = s!(view(&c, p, n)).to_vec();
        properties::set(c.data_mut(), &path, v).into()
    })?;
    host!(
        l,
        "proxy_call_foreign_function",
        |mut c: C<'_>, np: u32, nn: u32, ap: u32, an: u32, rp: u32, rs: u32| {
            let name = t!(view(&c, np, nn));
            if name == SKIP_RESPONSE_PHASE.as_bytes() {
                // No result: nothing to allocate in the guest.
                t!(write_u32(&mut c, rp, 0));
                t!(write_u32(&mut c, rs, 0));
                c.data_mut().io.skip_response = true;
                return Ok(Status::Ok.into());
            }
            if name == LANDING.as_bytes() {
                t!(write_u32(&mut c, rp, 0));
                t!(write_u32(&mut c, rs, 0));
                let args = t!(view(&c, ap, an));
                let word = |at: usize| {
                    args.get(at..at + 4)
                        .and_then(|b| b.try_into().ok())
                        .map(u32::from_le_bytes)
                };
                let (Some(at), Some(capacity), 8) = (word(0), word(4), args.len()) else {
                    return Ok(Status::BadArgument.into());
                };
                // Checked where it is used: every write into guest memory is.
                c.data_mut().landing = (capacity > 0).then_some((at, capacity));
                return Ok(Status::Ok.into());
            }
            if name == GET_HEADER_VALUES.as_bytes() {
                return hand_back_with(&mut c, rp, rs, |s, mem, out| {
                    headers::values_into(s, slice(mem, ap, an)?, out)
                });
            }
            let Some(f) = std::str::from_utf8(name)
                .ok()
                .and_then(|n| c.data().extensions.get(n).cloned())
            else {
                return Ok(Status::NotFound.into());
            };
            let mut failure = None;
            let mut later = None;
            let r = hand_back_with(&mut c, rp, rs, |s, mem, out| {
                let args = slice(mem, ap, an)?;
                match f.answer(&s.plugin_name, args) {
                    Ok(foreign::Answer::Now(v)) => {
                        out.extend_from_slice(&v);
                        Ok(())
                    }
                    Ok(foreign::Answer::Later(answer)) => {
                        // The token is taken below, with the store writable; the
                        // guest sees it in the reply, so it is reserved here.
                        let token = s.upcoming_callout(HTTP_CALL);
                        out.push(foreign::DEFERRED);
                        out.extend_from_slice(&token.to_le_bytes());
                        later = Some(answer);
                        Ok(())
                    }
                    Err(e) => {
                        let code = match e {
                            foreign::ForeignError::BadArgument(_) => Status::BadArgument,
                            foreign::ForeignError::Failed(_) => Status::InternalFailure,
                        };
                        failure = Some(e);
                        Err(code)
                    }
                }
            });
            if let Some(answer) = later {
                // The token reserved above.
                c.data_mut().defer(Deferred::Foreign(answer));
            }
            if let Some(e) = failure {
                let name = read_str(&c, np, nn).unwrap_or_default();
                let filter = &c.data().plugin_name;
                tracing::warn!(filter = %filter, function = %name, "foreign function failed: {e}");
            }
            r
        },
    )?;
    Ok(())
}

fn link_headers(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(
        l,
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, ty: u32, rp: u32, rs: u32| {
            let ty = t!(MapType::from_raw(ty));
            hand_back_with(&mut c, rp, rs, |s, _, out| headers::pairs_into(s, ty, out))
        },
    )?;
    host!(l, "proxy_set_header_map_pairs", |mut c: C<'_>,
                                            ty: u32,
                                            p: u32,
                                            n: u32|
     -> i32 {
        let ty = s!(MapType::from_raw(ty));
        let data = s!(read(&c, p, n));
        let Some(pairs) = decode_pairs(&data) else {
            return Status::BadArgument.into();
        };
        headers::set_pairs(c.data_mut(), ty, pairs).into()
    })?;
    host!(
        l,
        "proxy_get_header_map_value",
        |mut c: C<'_>, ty: u32, kp: u32, kn: u32, rp: u32, rs: u32| {
            if ty == MARK {
                return Ok(mark(&mut c));
            }
            let ty = t!(MapType::from_raw(ty));
            hand_back_with(&mut c, rp, rs, |s, mem, out| {
                out.extend_from_slice(headers::value(s, ty, slice(mem, kp, kn)?)?);
                Ok(())
            })
        },
    )?;
    fn edit(mut c: C<'_>, ty: u32, kp: u32, kn: u32, vp: u32, vn: u32, how: Edit) -> i32 {
        let ty = s!(MapType::from_raw(ty));
        let Some(mem) = c.data().memory else {
            return Status::InvalidMemoryAccess.into();
        };
        // The key and value are read in place while the stream is changed.
        let (data, state) = mem.data_and_store_mut(&mut c);
        let key = s!(slice(data, kp, kn));
        let value = if how == Edit::Remove {
            &[][..]
        } else {
            s!(slice(data, vp, vn))
        };
        headers::edit(state, ty, key, value, how).into()
    }
    host!(
        l,
        "proxy_add_header_map_value",
        |c: C<'_>, ty: u32, kp: u32, kn: u32, vp: u32, vn: u32| {
            edit(c, ty, kp, kn, vp, vn, Edit::Add)
        },
    )?;
    host!(
        l,
        "proxy_replace_header_map_value",
        |c: C<'_>, ty: u32, kp: u32, kn: u32, vp: u32, vn: u32| {
            edit(c, ty, kp, kn, vp, vn, Edit::Replace)
        },
    )?;
    host!(
        l,
        "proxy_remove_header_map_value",
        |c: C<'_>, ty: u32, kp: u32, kn: u32| edit(c, ty, kp, kn, 0, 0, Edit::Remove),
    )?;
    Ok(())
}

fn buffer(s: &HostState, ty: BufferType) -> Result<&[u8], Status> {
    match ty {
        BufferType::RequestBody => Ok(s.io.request_body.as_slice()),
        BufferType::ResponseBody => Ok(s.io.response_body.as_slice()),
        // An http_call's body, or the gRPC message being delivered.
        BufferType::CallResponseBody | BufferType::GrpcReceive => s
            .call_response
            .as_ref()
            .map(|r| &r.body[..])
            .ok_or(Status::NotFound),
        BufferType::VmConfiguration => Ok(&[]),
        BufferType::PluginConfiguration => Ok(&s.plugin_config),
        // A deferred foreign call's answer or a Redis reply, while it is delivered.
        BufferType::CallData | BufferType::RedisCallResponse => {
            s.call_data.as_deref().ok_or(Status::NotFound)
        }
        BufferType::DownstreamData | BufferType::UpstreamData => Err(Status::NotFound),
    }
}

fn link_buffers(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(
        l,
        "proxy_get_buffer_bytes",
        |mut c: C<'_>, ty: u32, start: u32, max: u32, rp: u32, rs: u32| {
            if ty == MARK {
                return Ok(mark(&mut c));
            }
            let ty = t!(BufferType::from_raw(ty));
            hand_back_with(&mut c, rp, rs, |s, _, out| {
                let buf = buffer(s, ty)?;
                let start = (start as usize).min(buf.len());
                // A max of u32::MAX (usize::MAX in the guest) means "to the end".
                let end = start.saturating_add(max as usize).min(buf.len());
                out.extend_from_slice(buf.get(start..end).unwrap_or_default());
                Ok(())
            })
        },
    )?;
    host!(l, "proxy_set_buffer_bytes", |mut c: C<'_>,
                                        ty: u32,
                                        start: u32,
                                        size: u32,
                                        p: u32,
                                        n: u32|
     -> i32 {
        let ty = s!(BufferType::from_raw(ty));
        let data = s!(read(&c, p, n));
        let io = &mut c.data_mut().io;
        let buf = match ty {
            BufferType::RequestBody => io.request_body.to_mut(),
            BufferType::ResponseBody => io.response_body.to_mut(),
            // Read-only here.
            BufferType::CallResponseBody
            | BufferType::GrpcReceive
            | BufferType::VmConfiguration
            | BufferType::PluginConfiguration
            | BufferType::RedisCallResponse => return Status::BadArgument.into(),
            BufferType::DownstreamData | BufferType::UpstreamData | BufferType::CallData => {
                return Status::NotFound.into();
            }
        };
        // Replace buf[start..start+size] (clamped): covers replace-all, append
        // (start = len) and prepend (0, 0) as the SDKs use them.
        let start = (start as usize).min(buf.len());
        let end = start.saturating_add(size as usize).min(buf.len());
        buf.splice(start..end, data);
        Status::Ok.into()
    })?;
    Ok(())
}

fn link_stream(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(l, "proxy_continue_stream", |mut c: C<'_>,
                                       _ty: u32|
     -> i32 {
        c.data_mut().io.resumed = true;
        Status::Ok.into()
    })?;
    host!(l, "proxy_close_stream", |mut c: C<'_>, _ty: u32| -> i32 {
        let io = &mut c.data_mut().io;
        io.closed = true;
        if io.local_reply.is_none() {
            // Closing a stream the proxy cannot half-close: answer for it.
            io.local_reply = Some(LocalReply {
                status: 502,
                details: "closed by filter".into(),
                body: Bytes::from_static(b"stream closed by filter\n"),
                headers: Vec::new(),
                grpc_status: -1,
            });
        }
        Status::Ok.into()
    })?;
    // 0.1.0 names for the same thing.
    for name in ["proxy_continue_request", "proxy_continue_response"] {
        host!(l, name, |mut c: C<'_>| -> i32 {
            c.data_mut().io.resumed = true;
            Status::Ok.into()
        })?;
    }
    host!(l, "proxy_send_local_response", |mut c: C<'_>,
                                           code: u32,
                                           dp: u32,
                                           dn: u32,
                                           bp: u32,
                                           bn: u32,
                                           hp: u32,
                                           hn: u32,
                                           grpc: i32|
     -> i32 {
        let details = s!(read_str(&c, dp, dn));
        let body = s!(read(&c, bp, bn));
        let hdrs = s!(read(&c, hp, hn));
        // The SDKs treat any status but OK as fatal: answer something sane instead.
        let headers = decode_pairs(&hdrs).unwrap_or_default();
        let status = u16::try_from(code)
            .ok()
            .filter(|c| (100..=999).contains(c))
            .unwrap_or(500);
        c.data_mut().io.local_reply = Some(LocalReply {
            status,
            details,
            body: body.into(),
            headers,
            grpc_status: grpc,
        });
        Status::Ok.into()
    })?;
    host!(l, "proxy_http_call", |mut c: C<'_>,
                                 up: u32,
                                 un: u32,
                                 hp: u32,
                                 hn: u32,
                                 bp: u32,
                                 bn: u32,
                                 tp: u32,
                                 tn: u32,
                                 timeout: u32,
                                 rt: u32|
     -> i32 {
        let upstream = s!(read_str(&c, up, un));
        let hdrs = s!(read(&c, hp, hn));
        let body = s!(read(&c, bp, bn));
        let trl = s!(read(&c, tp, tn));
        let (Some(headers), Some(_trailers)) = (decode_pairs(&hdrs), decode_pairs(&trl)) else {
            return Status::BadArgument.into();
        };
        if !headers.iter().any(|(k, _)| k == ":path")
            || !headers.iter().any(|(k, _)| k == ":method")
        {
            return Status::BadArgument.into();
        }
        let st = c.data_mut();
        let token = st.next_callout(HTTP_CALL);
        let context = st.running_context;
        st.pending_calls.push(PendingCall {
            token,
            context,
            upstream,
            headers,
            body: body.into(),
            timeout: Duration::from_millis(u64::from(timeout.max(1))),
        });
        s!(write_u32(&mut c, rt, token));
        Status::Ok.into()
    })?;
    host!(
        l,
        "proxy_get_status",
        |mut c: C<'_>, code: u32, rp: u32, rs: u32| {
            // A gRPC callout's status during its on_grpc_close; OK otherwise.
            let status = |s: &HostState| s.call_response.as_ref().and_then(|r| r.status.clone());
            let (n, _) = status(c.data()).unwrap_or_default();
            t!(write_u32(&mut c, code, n));
            hand_back_with(&mut c, rp, rs, |s, _, out| {
                if let Some((_, text)) = status(s) {
                    out.extend_from_slice(text.as_bytes());
                }
                Ok(())
            })
        },
    )?;
    Ok(())
}

fn link_shared(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(
        l,
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: u32, kn: u32, rp: u32, rs: u32, cas: u32| {
            let key = t!(read_str(&c, kp, kn));
            let Some((v, token)) = shared::get(&key) else {
                return Ok(Status::NotFound.into());
            };
            t!(write_u32(&mut c, cas, token));
            hand_back_with(&mut c, rp, rs, |_, _, out| {
                out.extend_from_slice(&v);
                Ok(())
            })
        },
    )?;
    host!(l, "proxy_set_shared_data", |c: C<'_>,
                                       kp: u32,
                                       kn: u32,
                                       vp: u32,
                                       vn: u32,
                                       cas: u32|
     -> i32 {
        let key = s!(read_str(&c, kp, kn));
        let v = s!(read(&c, vp, vn));
        shared::set(&key, v, cas).into()
    })?;
    host!(l, "proxy_register_shared_queue", |mut c: C<'_>,
                                             np: u32,
                                             nn: u32,
                                             rt: u32|
     -> i32 {
        let name = s!(read_str(&c, np, nn));
        let id = shared::register(&name, std::sync::Arc::downgrade(&c.data().signal));
        s!(write_u32(&mut c, rt, id));
        Status::Ok.into()
    })?;
    host!(l, "proxy_resolve_shared_queue", |mut c: C<'_>,
                                            _vp: u32,
                                            _vn: u32,
                                            np: u32,
                                            nn: u32,
                                            rt: u32|
     -> i32 {
        let name = s!(read_str(&c, np, nn));
        let Some(id) = shared::resolve(&name) else {
            return Status::NotFound.into();
        };
        s!(write_u32(&mut c, rt, id));
        Status::Ok.into()
    })?;
    host!(l, "proxy_enqueue_shared_queue", |c: C<'_>,
                                            id: u32,
                                            vp: u32,
                                            vn: u32|
     -> i32 {
        let v = s!(read(&c, vp, vn));
        shared::enqueue(id, v).into()
    })?;
    host!(
        l,
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: u32, rp: u32, rs: u32| {
            let v = t!(shared::dequeue(id));
            hand_back_with(&mut c, rp, rs, |_, _, out| {
                out.extend_from_slice(&v);
                Ok(())
            })
        },
    )?;
    Ok(())
}

/// OK when the metric exists, NOT_FOUND when the guest named one it never defined.
fn found(exists: bool) -> i32 {
    if exists {
        Status::Ok.into()
    } else {
        Status::NotFound.into()
    }
}

fn link_metrics(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(l, "proxy_define_metric", |mut c: C<'_>,
                                     ty: u32,
                                     np: u32,
                                     nn: u32,
                                     rt: u32|
     -> i32 {
        let name = s!(read_str(&c, np, nn));
        let kind = match ty {
            0 => metrics::Kind::Counter,
            1 => metrics::Kind::Gauge,
            2 => metrics::Kind::Histogram,
            _ => return Status::BadArgument.into(),
        };
        let id = metrics::define(&c.data().plugin_name, &name, kind);
        s!(write_u32(&mut c, rt, id));
        Status::Ok.into()
    })?;
    host!(l, "proxy_increment_metric", |_: C<'_>,
                                        id: u32,
                                        delta: i64|
     -> i32 {
        found(metrics::add(id, delta))
    })?;
    host!(l, "proxy_record_metric", |_: C<'_>,
                                     id: u32,
                                     v: u64|
     -> i32 {
        found(metrics::record(id, v))
    })?;
    host!(l, "proxy_get_metric", |mut c: C<'_>,
                                  id: u32,
                                  rt: u32|
     -> i32 {
        let Some(v) = metrics::get(id) else {
            return Status::NotFound.into();
        };
        s!(memory::write(&mut c, rt, &(v as u64).to_le_bytes()));
        Status::Ok.into()
    })?;
    Ok(())
}

/// Whether the log filter passes a guest line of proxy-wasm level `level`.
fn log_enabled(level: u32) -> bool {
    match level {
        0 => tracing::enabled!(target: "filter", tracing::Level::TRACE),
        1 => tracing::enabled!(target: "filter", tracing::Level::DEBUG),
        2 => tracing::enabled!(target: "filter", tracing::Level::INFO),
        3 => tracing::enabled!(target: "filter", tracing::Level::WARN),
        _ => tracing::enabled!(target: "filter", tracing::Level::ERROR),
    }
}
