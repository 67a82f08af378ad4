//! The gRPC callout host functions. As on Envoy, callouts belong to the root context
//! (whatever context starts one) and a token's low two bits say its kind; a call or
//! stream to an upstream the configuration does not name is refused at once with
//! `PARSE_FAILURE`, the status the SDKs expect for it (so is every callout before the
//! filter's snapshot serves it: its first `on_vm_start` and `on_configure`).

use std::time::Duration;

use tokio::sync::mpsc;
use wasmtime::Linker;

use super::C;
use crate::wasm::calls::caller_in;
use crate::wasm::grpc::{self, GRPC_CALL, GRPC_STREAM, Handle, Kind, PendingGrpc};
use crate::wasm::memory::{decode_pairs, read, write_u32};
use crate::wasm::state::{HostState, Status};

/// Links `proxy_grpc_call`, `_stream`, `_send`, `_cancel` and `_close`.
pub(super) fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    host!(l, "proxy_grpc_call", |mut c: C<'_>,
                                 up: u32,
                                 un: u32,
                                 sp: u32,
                                 sn: u32,
                                 mp: u32,
                                 mn: u32,
                                 hp: u32,
                                 hn: u32,
                                 bp: u32,
                                 bn: u32,
                                 timeout: u32,
                                 rt: u32|
     -> i32 {
        let target = s!(target(&c, [up, un, sp, sn, mp, mn, hp, hn]));
        let message = s!(read(&c, bp, bn));
        let timeout = Duration::from_millis(u64::from(timeout.max(1)));
        let kind = Kind::Call {
            message: message.into(),
            timeout,
        };
        start(&mut c, target, kind, None, rt).into()
    })?;
    host!(l, "proxy_grpc_stream", |mut c: C<'_>,
                                   up: u32,
                                   un: u32,
                                   sp: u32,
                                   sn: u32,
                                   mp: u32,
                                   mn: u32,
                                   hp: u32,
                                   hn: u32,
                                   rt: u32|
     -> i32 {
        let target = s!(target(&c, [up, un, sp, sn, mp, mn, hp, hn]));
        let (tx, outgoing) = mpsc::unbounded_channel();
        start(&mut c, target, Kind::Stream { outgoing }, Some(tx), rt).into()
    })?;
    host!(l, "proxy_grpc_send", |mut c: C<'_>,
                                 token: u32,
                                 mp: u32,
                                 mn: u32,
                                 end: u32|
     -> i32 {
        let message = s!(read(&c, mp, mn));
        let Some(h) = c.data_mut().grpc.get_mut(&token) else {
            return Status::NotFound.into();
        };
        if !h.stream {
            return Status::BadArgument.into();
        }
        // A side the guest closed takes nothing more.
        let Some(out) = &h.outgoing else {
            return Status::NotFound.into();
        };
        // The exchange may have ended meanwhile: its close is on its way.
        let _ = out.send(grpc::frame(&message));
        if end != 0 {
            h.outgoing = None;
        }
        Status::Ok.into()
    })?;
    host!(l, "proxy_grpc_cancel", |mut c: C<'_>, token: u32| -> i32 {
        cancel(c.data_mut(), token).into()
    })?;
    host!(l, "proxy_grpc_close", |mut c: C<'_>, token: u32| -> i32 {
        let st = c.data_mut();
        match st.grpc.get_mut(&token) {
            None => Status::NotFound.into(),
            // Closing a stream ends the guest's side; answers may still come.
            Some(h) if h.stream => {
                h.outgoing = None;
                Status::Ok.into()
            }
            // Closing a call cancels it.
            Some(_) => cancel(st, token).into(),
        }
    })?;
    Ok(())
}

/// Where a callout goes: its upstream, `/service/method` and initial metadata.
struct Target {
    upstream: String,
    path: String,
    metadata: Vec<(String, Vec<u8>)>,
}

/// Reads a callout's upstream, service, method and metadata (pointer and length each)
/// from the guest; `PARSE_FAILURE` for an upstream not configured or arguments that
/// do not parse.
fn target(c: &C<'_>, args: [u32; 8]) -> Result<Target, Status> {
    let [up, un, sp, sn, mp, mn, hp, hn] = args;
    let text =
        |p, n| read(c, p, n).and_then(|v| String::from_utf8(v).map_err(|_| Status::ParseFailure));
    let upstream = text(up, un)?;
    let service = text(sp, sn)?;
    let method = text(mp, mn)?;
    let metadata = decode_pairs(&read(c, hp, hn)?).ok_or(Status::ParseFailure)?;
    // Nothing is reachable before a snapshot serves the filter (its first VM's
    // on_vm_start and on_configure run while the snapshot is built).
    if !caller_in(&c.data().callers).is_some_and(|caller| caller.knows(&upstream)) {
        return Err(Status::ParseFailure);
    }
    Ok(Target {
        upstream,
        path: format!("/{service}/{method}"),
        metadata,
    })
}

/// Registers a callout to `target` and writes its token to `rt`.
fn start(
    c: &mut C<'_>,
    target: Target,
    kind: Kind,
    outgoing: Option<mpsc::UnboundedSender<bytes::Bytes>>,
    rt: u32,
) -> Status {
    let stream = outgoing.is_some();
    let token = c
        .data_mut()
        .next_callout(if stream { GRPC_STREAM } else { GRPC_CALL });
    if let Err(e) = write_u32(c, rt, token) {
        return e;
    }
    let st = c.data_mut();
    let (handle, cancel) = Handle::new(outgoing, stream);
    st.grpc.insert(token, handle);
    st.pending_grpc.push(PendingGrpc {
        token,
        context: st.running_context,
        upstream: target.upstream,
        path: target.path,
        metadata: target.metadata,
        kind,
        cancel,
    });
    Status::Ok
}

/// Cancels callout `token`: nothing more of it reaches the guest.
fn cancel(st: &mut HostState, token: u32) -> Status {
    if st.grpc.remove(&token).is_none() {
        return Status::NotFound;
    }
    st.pending_grpc.retain(|p| p.token != token);
    Status::Ok
}
