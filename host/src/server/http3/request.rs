//! One HTTP/3 request: its head read under the header timeout, then driven through
//! the proxy like an HTTP/1.1 or HTTP/2 one (same routing, filters, metrics, access
//! log, body pacing), and its response streamed back, trailers included.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use h3::server::{RequestResolver, RequestStream};
use http_body::Body;
use http_body_util::BodyExt;

use super::body::RecvBody;

use super::super::conn::{AccessLine, reject_response};
use super::super::request_body::{PacedBody, Verdict};
use super::super::state::Reject;
use crate::access_log;
use crate::app::App;
use crate::body::ProxyBody;
use crate::config::ListenerLimits;
use crate::metrics;
use crate::proxy::{self, ConnInfo};

type SendSide = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Serves the request `resolver` will read.
pub(super) async fn serve(
    app: Arc<App>,
    info: Rc<ConnInfo>,
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    limits: Rc<ListenerLimits>,
) {
    let (req, stream) =
        match tokio::time::timeout(limits.header_timeout, resolver.resolve_request()).await {
            Ok(Ok(resolved)) => resolved,
            // A malformed head: h3 has reset the stream (or closed the connection).
            Ok(Err(e)) => return tracing::debug!(client = %info.client, "HTTP/3 request: {e}"),
            Err(_) => {
                return tracing::debug!(client = %info.client, "HTTP/3 request head timed out");
            }
        };
    let started = Instant::now();
    let (mut send, recv) = stream.split();
    let method = req.method().clone();
    let line = access_log::enabled().then(|| AccessLine::of(&req, &info));
    // Opened (and dropped unread, on a refusal) as a body, so that its end is read.
    let body = RecvBody::open(recv, &req).await;

    let (mut resp, outcome) = if req.headers().len() > limits.max_headers {
        let reject = Reject::TooManyHeaders;
        metrics::global().client_limit(&info.listener, reject.limit());
        (reject_response(reject), proxy::Outcome::default())
    } else {
        let grpc = proxy::is_grpc(req.headers());
        // Only a request with a body has a pace to keep.
        let verdict = (!body.is_end_stream()).then(Verdict::default);
        let req = req.map(|()| body);
        let snapshot = app.snapshot.load_full();
        let (mut resp, outcome) = match &verdict {
            Some(v) => {
                let req = req.map(|b| PacedBody::new(b, &limits, v.clone()));
                proxy::handle_with_outcome(snapshot, &info, req).await
            }
            None => proxy::handle_with_outcome(snapshot, &info, req).await,
        };
        if let Some(why) = verdict.as_ref().and_then(Verdict::get) {
            tracing::debug!(client = %info.client, "{why}");
            metrics::global().client_limit(&info.listener, why.limit());
            resp =
                proxy::error_response(http::StatusCode::REQUEST_TIMEOUT, "request body too slow\n");
        }
        if grpc {
            proxy::answer_errors_as_grpc(&mut resp);
        }
        (resp, outcome)
    };
    // HTTP/3 bodies are not counted: the configured line goes with the head.
    if let Some(line) =
        line.unwrap_or_default()
            .record(&info, &method, resp.status(), &outcome, started)
    {
        line.write();
    }
    remove_connection_headers(resp.headers_mut());
    if let Err(e) = respond(&mut send, resp).await {
        tracing::debug!(client = %info.client, "HTTP/3 response not sent: {e}");
    }
}

/// Sends `resp` on `send`: the head, the body as it streams, the trailers, the end.
async fn respond(
    send: &mut SendSide,
    resp: http::Response<ProxyBody>,
) -> Result<(), h3::error::StreamError> {
    let (head, mut body) = resp.into_parts();
    send.send_response(http::Response::from_parts(head, ()))
        .await?;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                // The upstream's body broke off: the client must not take what it got
                // for the whole.
                tracing::debug!("response body failed: {e}");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => {}
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                }
            }
        }
    }
    send.finish().await
}

/// Removes the connection-specific fields HTTP/3 forbids (RFC 9114 §4.2): a client
/// must treat a response carrying one as malformed.
fn remove_connection_headers(headers: &mut http::HeaderMap) {
    for name in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::HeaderName::from_static("keep-alive"),
        http::HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}
