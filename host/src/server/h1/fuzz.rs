//! The connection's reading side over one stream of bytes, for the `h1_stream` fuzz
//! target (`crate::fuzzing::h1_stream`) and its replay in the unit tests: what
//! [`super::serve`] reads — heads, bodies, trailers, the hand-over to hyper — without
//! serving anything.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;

use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::body::WireBody;
use super::{BodyFraming, ConnState, Wire};
use crate::config::ListenerLimits;

/// What the connection read of `stream`, written to it in pieces of the sizes `reads`
/// gives: a line per head, per body (its data whole, whatever its frames) and its
/// trailers, and how the reading ended.
pub(crate) fn transcript(
    stream: &[u8],
    reads: impl Iterator<Item = usize>,
    limits: ListenerLimits,
) -> Vec<String> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return vec!["no runtime".into()];
    };
    let max_headers = limits.max_headers;
    // Room for the whole stream: the writer never waits for the reader, which may
    // stop early.
    let (mut client, server) = tokio::io::duplex(stream.len().max(1));
    let state = Rc::new(ConnState::new(limits));
    let park = Rc::new(RefCell::new(None));
    let wire = Rc::new(RefCell::new(Wire::new(
        server,
        BytesMut::new(),
        state,
        park,
    )));
    let write = async move {
        let mut rest = stream;
        let mut reads = reads;
        while !rest.is_empty() {
            let n = reads.next().unwrap_or(usize::MAX).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            if client.write_all(piece).await.is_err() {
                return;
            }
            rest = tail;
            // Let the connection read this piece before the next is written.
            tokio::task::yield_now().await;
        }
        // Dropping the client end is the end of the stream.
    };
    let read = async {
        let mut lines = Vec::new();
        loop {
            let head = match poll_fn(|cx| wire.borrow_mut().poll_head(cx)).await {
                Ok(Some(head)) => head,
                Ok(None) => {
                    lines.push("to hyper".to_owned());
                    return lines;
                }
                Err(()) => {
                    lines.push("closed".to_owned());
                    return lines;
                }
            };
            assert!(
                head.parts.headers.len() <= max_headers,
                "a head with more fields than the limit was taken"
            );
            let p = &head.parts;
            lines.push(format!(
                "head {} {} {:?} {:?} keep-alive {} {:?}",
                p.method, p.uri, p.version, head.body, head.keep_alive, p.headers
            ));
            let framing = head.body;
            let seq = wire.borrow_mut().start(framing);
            if matches!(framing, BodyFraming::None | BodyFraming::Tunnel) {
                continue;
            }
            let mut body = WireBody::new(Rc::clone(&wire), seq);
            let mut data = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    lines.push(format!("body {:?} then failed", bytes::Bytes::from(data)));
                    return lines;
                };
                match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => lines.push(format!("trailers {:?}", f.into_trailers().ok())),
                }
            }
            lines.push(format!("body {:?}", bytes::Bytes::from(data)));
        }
    };
    rt.block_on(async {
        let (_, lines) = tokio::join!(write, read);
        lines
    })
}
