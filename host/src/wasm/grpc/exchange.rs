//! One gRPC callout on the wire: the request (`POST /service/method`, the guest's
//! metadata, `content-type: application/grpc`, `te: trailers`, `grpc-timeout`), the
//! 5-byte frame the host puts on each message and takes off each answer, and the
//! status read from the trailers (or from a trailers-only answer, or the HTTP status).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};

use super::{GrpcEvent, code};
use crate::body::{self, BoxError, ProxyBody};
use crate::wasm::calls::HttpCaller;

/// The largest message the host takes from an upstream (gRPC's default receive limit).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// Where a callout goes and what it says about itself.
pub(super) struct Target {
    pub caller: Option<Arc<dyn HttpCaller>>,
    pub upstream: String,
    pub path: String,
    pub metadata: Vec<(String, Vec<u8>)>,
    /// The filter's name, for the log.
    pub filter: Arc<str>,
}

type Ended = (u32, String);

impl Target {
    /// A unary call: [`GrpcEvent::Reply`] with the answer, or [`GrpcEvent::Close`]
    /// with why there is none.
    pub async fn call(
        self,
        message: Bytes,
        timeout: Duration,
        mut cancel: oneshot::Receiver<()>,
    ) -> GrpcEvent {
        let exchange = async {
            let resp = self
                .open(body::full(frame(&message)), Some(timeout))
                .await?;
            let mut reply = None;
            let (status, text) = read(resp, &mut |e| {
                if let GrpcEvent::Message(m) = e {
                    reply.get_or_insert(m);
                }
            })
            .await;
            match (status, reply) {
                (0, Some(m)) => Ok(m),
                (0, None) => Err((code::INTERNAL, "the call ended without an answer".into())),
                (status, _) => Err((status, text)),
            }
        };
        let ended = tokio::select! {
            _ = &mut cancel => Err((code::CANCELLED, "cancelled".into())),
            r = tokio::time::timeout(timeout, exchange) => r.unwrap_or_else(|_| {
                Err((code::DEADLINE_EXCEEDED, "upstream request timeout".into()))
            }),
        };
        match ended {
            Ok(m) => GrpcEvent::Reply(m),
            Err((status, text)) => {
                self.log(status, &text);
                GrpcEvent::Close(status, text)
            }
        }
    }

    /// A stream: sends `outgoing` as the guest sends it, and passes every event to
    /// `events`, the last a [`GrpcEvent::Close`].
    pub async fn stream(
        self,
        outgoing: mpsc::UnboundedReceiver<Bytes>,
        mut cancel: oneshot::Receiver<()>,
        events: mpsc::UnboundedSender<GrpcEvent>,
    ) {
        let exchange = async {
            let resp = self.open(outgoing_body(outgoing), None).await?;
            Ok::<_, Ended>(
                read(resp, &mut |e| {
                    let _ = events.send(e);
                })
                .await,
            )
        };
        let (status, text) = tokio::select! {
            _ = &mut cancel => (code::CANCELLED, "cancelled".into()),
            r = exchange => r.unwrap_or_else(|e| e),
        };
        if status != 0 {
            self.log(status, &text);
        }
        let _ = events.send(GrpcEvent::Close(status, text));
    }

    /// Sends the request head (and `body` as it comes) and waits for the answer's head.
    async fn open(
        &self,
        body: ProxyBody,
        timeout: Option<Duration>,
    ) -> Result<Response<ProxyBody>, Ended> {
        let Some(caller) = &self.caller else {
            return Err((code::UNAVAILABLE, "no upstreams are reachable".into()));
        };
        let mut req = Request::new(body);
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self
            .path
            .parse()
            .map_err(|e| (code::INTERNAL, format!("bad service or method name: {e}")))?;
        let h = req.headers_mut();
        for (k, v) in &self.metadata {
            // Pseudo-headers and the framing's own headers are the host's to set.
            let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_bytes(v),
            ) else {
                continue;
            };
            // Past `http`'s limit of distinct names `append` panics: the rest are
            // dropped, as invalid ones are.
            let _ = h.try_append(k, v);
        }
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        if let Some(t) = timeout
            && let Ok(v) = HeaderValue::from_str(&format!("{}m", t.as_millis().min(99_999_999)))
        {
            h.insert("grpc-timeout", v);
        }
        caller
            .open(&self.upstream, req)
            .await
            .map_err(|e| (code::UNAVAILABLE, e))
    }

    fn log(&self, status: u32, text: &str) {
        if status != code::CANCELLED {
            tracing::warn!(filter = %self.filter, upstream = %self.upstream, path = %self.path, status, "gRPC callout failed: {text}");
        }
    }
}

/// Reads an answer: its initial metadata, each message, its trailing metadata, passed
/// to `emit` as they come; returns its status and message.
async fn read(resp: Response<ProxyBody>, emit: &mut (dyn FnMut(GrpcEvent) + Send)) -> Ended {
    let (parts, mut body) = resp.into_parts();
    if parts.status != StatusCode::OK {
        let status = crate::grpc_status::of_http(parts.status);
        return (
            u32::from(status),
            format!("the upstream answered HTTP {}", parts.status.as_u16()),
        );
    }
    if let Some(status) = status_in(&parts.headers) {
        // Trailers-only: no initial metadata, the headers are the trailers.
        emit(GrpcEvent::InitialMetadata(Vec::new()));
        emit(GrpcEvent::TrailingMetadata(plain_pairs(&parts.headers)));
        return (status, message_in(&parts.headers));
    }
    emit(GrpcEvent::InitialMetadata(head_pairs(&parts)));
    let mut buf = BytesMut::new();
    loop {
        let frame = match body.frame().await {
            None => return (code::UNKNOWN, "the answer ended without a status".into()),
            Some(Err(e)) => return (code::INTERNAL, format!("the exchange broke: {e}")),
            Some(Ok(f)) => f,
        };
        match frame.into_data() {
            Ok(data) => {
                buf.extend_from_slice(&data);
                loop {
                    match unframe(&mut buf) {
                        Ok(Some(m)) => emit(GrpcEvent::Message(m)),
                        Ok(None) => break,
                        Err(ended) => return ended,
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    emit(GrpcEvent::TrailingMetadata(plain_pairs(&trailers)));
                    return match status_in(&trailers) {
                        Some(status) => (status, message_in(&trailers)),
                        None => (code::UNKNOWN, "the trailers carry no grpc-status".into()),
                    };
                }
            }
        }
    }
}

/// A stream's request body: the guest's framed messages as it sends them; it ends when
/// the guest closes its side (the sender is dropped).
fn outgoing_body(mut outgoing: mpsc::UnboundedReceiver<Bytes>) -> ProxyBody {
    let frames = futures_util::stream::poll_fn(move |cx| {
        let next = outgoing.poll_recv(cx);
        next.map(|m| m.map(|b| Ok::<_, BoxError>(Frame::data(b))))
    });
    body::boxed(http_body_util::StreamBody::new(frames))
}

/// `message` with gRPC's 5-byte prefix: not compressed, then its length (big-endian).
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out.into()
}

/// The next whole message in `buf`, without its prefix; `None` until one is there.
fn unframe(buf: &mut BytesMut) -> Result<Option<Bytes>, Ended> {
    let Some(head) = buf.get(..5) else {
        return Ok(None);
    };
    let compressed = head[0] != 0;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if compressed {
        // The host offers no grpc-accept-encoding: a server may not compress.
        return Err((
            code::INTERNAL,
            "a compressed message was not asked for".into(),
        ));
    }
    if len > MAX_MESSAGE {
        let text = format!("a message of {len} bytes is over the limit of {MAX_MESSAGE}");
        return Err((code::RESOURCE_EXHAUSTED, text));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// `grpc-status` in `map`.
fn status_in(map: &HeaderMap) -> Option<u32> {
    map.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// `grpc-message` in `map`, percent-decoded as gRPC encodes it.
fn message_in(map: &HeaderMap) -> String {
    let Some(v) = map.get("grpc-message") else {
        return String::new();
    };
    let raw = v.as_bytes();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response head as proxy-wasm pairs: `:status` first, then the headers.
pub(crate) fn head_pairs(parts: &http::response::Parts) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(
        ":status".to_string(),
        parts.status.as_str().as_bytes().to_vec(),
    )];
    out.extend(plain_pairs(&parts.headers));
    out
}

fn plain_pairs(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    map.iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_unframed_across_chunks() {
        let mut buf = BytesMut::new();
        let two = [frame(b"hello"), frame(b"")].concat();
        buf.extend_from_slice(&two[..3]);
        assert_eq!(unframe(&mut buf), Ok(None));
        buf.extend_from_slice(&two[3..]);
        assert_eq!(unframe(&mut buf), Ok(Some(Bytes::from_static(b"hello"))));
        assert_eq!(unframe(&mut buf), Ok(Some(Bytes::new())));
        assert_eq!(unframe(&mut buf), Ok(None));
        let mut zipped = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert_eq!(unframe(&mut zipped).map_err(|e| e.0), Err(code::INTERNAL));
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        let mut m = HeaderMap::new();
        m.insert("grpc-message", HeaderValue::from_static("no%20such%2"));
        assert_eq!(message_in(&m), "no such%2");
    }
}
