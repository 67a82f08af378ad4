//! gRPC callouts (`proxy_grpc_call`, `proxy_grpc_stream`): a call or stream the guest
//! starts is opened once its callback returns, over HTTP/2 to an upstream named in the
//! call, and what comes back is delivered as Envoy does (see `calls::dispatch`). The
//! host frames and unframes messages (the guest sees bare messages), turns the call's
//! timeout into `grpc-timeout` and `DEADLINE_EXCEEDED`, and reads the status from the
//! trailers.

mod exchange;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::calls::HttpCaller;

pub(crate) use exchange::{frame, head_pairs};

/// The token kinds, in a token's low two bits (Envoy's scheme).
pub(crate) const HTTP_CALL: u32 = 0;
/// A gRPC call's token kind.
pub(crate) const GRPC_CALL: u32 = 1;
/// A gRPC stream's token kind.
pub(crate) const GRPC_STREAM: u32 = 2;

/// The gRPC status codes the host itself reports, as the ABI passes them (`u32`).
pub(crate) mod code {
    use crate::grpc_status as g;

    /// The guest cancelled the callout (never delivered).
    pub const CANCELLED: u32 = g::CANCELLED as u32;
    /// Missing status, or an answer that is no gRPC.
    pub const UNKNOWN: u32 = g::UNKNOWN as u32;
    /// The call's timeout passed.
    pub const DEADLINE_EXCEEDED: u32 = g::DEADLINE_EXCEEDED as u32;
    /// A message over the host's limit.
    pub const RESOURCE_EXHAUSTED: u32 = g::RESOURCE_EXHAUSTED as u32;
    /// A broken exchange, a compressed message, or a unary call answered OK without one.
    pub const INTERNAL: u32 = g::INTERNAL as u32;
    /// The upstream could not be reached.
    pub const UNAVAILABLE: u32 = g::UNAVAILABLE as u32;
}

/// A gRPC callout the guest started during a callback, opened once it returns.
pub(crate) struct PendingGrpc {
    pub token: u32,
    /// The context the host was running when the guest started it (see `PendingCall`).
    pub context: u32,
    pub upstream: String,
    /// `/service/method`.
    pub path: String,
    /// The guest's initial metadata, sent as request headers.
    pub metadata: Vec<(String, Vec<u8>)>,
    pub kind: Kind,
    /// Resolves when the guest cancels the callout or its VM is gone (its [`Handle`]
    /// is dropped).
    pub cancel: oneshot::Receiver<()>,
}

/// A unary call or a stream.
pub(crate) enum Kind {
    /// One message, one answer, within `timeout`.
    Call { message: Bytes, timeout: Duration },
    /// Framed messages as the guest sends them; the channel's end is the end of the
    /// guest's side.
    Stream {
        outgoing: mpsc::UnboundedReceiver<Bytes>,
    },
}

/// What the VM keeps of a live callout. Dropping it cancels the callout.
pub(crate) struct Handle {
    /// Where `proxy_grpc_send` puts a stream's framed messages; `None` for a call, and
    /// once the guest closed its side.
    pub outgoing: Option<mpsc::UnboundedSender<Bytes>>,
    /// A stream (not a call).
    pub stream: bool,
    _cancel: oneshot::Sender<()>,
}

impl Handle {
    /// The handle of a new callout, and the cancellation its exchange watches.
    pub fn new(
        outgoing: Option<mpsc::UnboundedSender<Bytes>>,
        stream: bool,
    ) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let handle = Handle {
            outgoing,
            stream,
            _cancel: tx,
        };
        (handle, rx)
    }
}

/// One thing a gRPC callout delivers to the guest.
#[derive(Debug)]
pub(crate) enum GrpcEvent {
    /// A stream's response headers (`on_grpc_receive_initial_metadata`).
    InitialMetadata(Vec<(String, Vec<u8>)>),
    /// A stream's message, unframed (`on_grpc_receive`).
    Message(Bytes),
    /// A stream's trailers (`on_grpc_receive_trailing_metadata`).
    TrailingMetadata(Vec<(String, Vec<u8>)>),
    /// The end: a stream's status, or a call's failure (`on_grpc_close`).
    Close(u32, String),
    /// A call's answer, unframed (`on_grpc_receive`); the end of the call.
    Reply(Bytes),
}

impl GrpcEvent {
    /// Whether nothing more follows it.
    pub fn is_last(&self) -> bool {
        matches!(self, GrpcEvent::Close(..) | GrpcEvent::Reply(_))
    }
}

/// A callout under way.
pub(crate) enum Started {
    /// A call: its one final event.
    Call(Pin<Box<dyn Future<Output = GrpcEvent> + Send>>),
    /// A stream: its events, the last a [`GrpcEvent::Close`].
    Stream(mpsc::UnboundedReceiver<GrpcEvent>),
}

/// Opens the exchange of `pending` through `caller`.
pub(crate) fn start(
    caller: Option<Arc<dyn HttpCaller>>,
    pending: PendingGrpc,
    filter: &str,
) -> Started {
    let PendingGrpc {
        upstream,
        path,
        metadata,
        kind,
        cancel,
        ..
    } = pending;
    let target = exchange::Target {
        caller,
        upstream,
        path,
        metadata,
        filter: filter.into(),
    };
    match kind {
        Kind::Call { message, timeout } => {
            Started::Call(Box::pin(target.call(message, timeout, cancel)))
        }
        Kind::Stream { outgoing } => {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(target.stream(outgoing, cancel, tx));
            Started::Stream(rx)
        }
    }
}
