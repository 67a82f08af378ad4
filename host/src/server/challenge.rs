//! HTTP-01 validation requests (`GET /.well-known/acme-challenge/TOKEN`), answered on
//! plain-text listeners ahead of routes and filters while an ACME order waits for
//! them ([`crate::acme`]). A token no order waits for goes to the routes as usual.

use crate::acme;
use crate::body::{self, ProxyBody};

/// The answer to `req` when it is an HTTP-01 validation of an open order.
pub(super) fn answer<B>(req: &http::Request<B>) -> Option<http::Response<ProxyBody>> {
    // The one check every plain-text request pays: a prefix comparison.
    if !req.uri().path().starts_with(acme::HTTP01_PREFIX) {
        return None;
    }
    if !matches!(*req.method(), http::Method::GET | http::Method::HEAD) {
        return None;
    }
    let key_authorization = acme::http01_answer(req.uri().path())?;
    let mut resp = http::Response::new(body::full(key_authorization));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    Some(resp)
}
