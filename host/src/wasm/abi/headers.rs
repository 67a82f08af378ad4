//! Header maps: request/response headers with their pseudo-headers, trailers, and the
//! headers of an `http_call` response.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::wasm::memory::encode_pairs_into;
use crate::wasm::state::{HostState, status};

const REQUEST_HEADERS: u32 = 0;
const REQUEST_TRAILERS: u32 = 1;
const RESPONSE_HEADERS: u32 = 2;
const RESPONSE_TRAILERS: u32 = 3;
const CALL_HEADERS: u32 = 6;
const CALL_TRAILERS: u32 = 7;

/// The request's pseudo-headers, in the order Envoy hands them over.
const REQUEST_PSEUDO: [&str; 4] = [":authority", ":path", ":method", ":scheme"];

/// Every pair of map `ty`, pseudo-headers first, encoded for the guest into `out`.
pub(crate) fn pairs_into(s: &HostState, ty: u32, out: &mut Vec<u8>) -> Result<(), i32> {
    match ty {
        REQUEST_HEADERS => {
            let r = s.io.request.as_ref().ok_or(status::NOT_FOUND)?;
            encode_pairs_into(out, || {
                let pseudo = REQUEST_PSEUDO
                    .iter()
                    .filter_map(|p| request_pseudo(s, r, p).map(|v| (p.as_bytes(), v)));
                pseudo.chain(plain(&r.headers))
            });
        }
        RESPONSE_HEADERS => {
            let r = s.io.response.as_ref().ok_or(status::NOT_FOUND)?;
            encode_pairs_into(out, || {
                let status = std::iter::once((&b":status"[..], r.status.as_str().as_bytes()));
                status.chain(plain(&r.headers))
            });
        }
        REQUEST_TRAILERS => {
            let t = s.io.request_trailers.as_ref().ok_or(status::NOT_FOUND)?;
            encode_pairs_into(out, || plain(t));
        }
        RESPONSE_TRAILERS => {
            let t = s.io.response_trailers.as_ref().ok_or(status::NOT_FOUND)?;
            encode_pairs_into(out, || plain(t));
        }
        CALL_HEADERS | CALL_TRAILERS => {
            let list = call_list(s, ty)?;
            encode_pairs_into(out, || {
                list.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
            });
        }
        _ => return Err(status::BAD_ARGUMENT),
    }
    Ok(())
}

fn plain(m: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    m.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
}

/// The headers or trailers of the `http_call` response being delivered.
fn call_list(s: &HostState, ty: u32) -> Result<&[(String, Vec<u8>)], i32> {
    let c = s.call_response.as_ref().ok_or(status::NOT_FOUND)?;
    Ok(if ty == CALL_HEADERS {
        &c.headers
    } else {
        &c.trailers
    })
}

/// The first value of `key` (any case) in map `ty`, borrowed from the stream.
pub(crate) fn value<'s>(s: &'s HostState, ty: u32, key: &[u8]) -> Result<&'s [u8], i32> {
    // Header names are ASCII: a key that is not UTF-8 names no header.
    let key = std::str::from_utf8(key).map_err(|_| status::NOT_FOUND)?;
    let plain = match ty {
        REQUEST_HEADERS => {
            let r = s.io.request.as_ref().ok_or(status::NOT_FOUND)?;
            if key.starts_with(':') {
                let known = REQUEST_PSEUDO.iter().find(|p| p.eq_ignore_ascii_case(key));
                return known
                    .and_then(|p| request_pseudo(s, r, p))
                    .ok_or(status::NOT_FOUND);
            }
            &r.headers
        }
        RESPONSE_HEADERS => {
            let r = s.io.response.as_ref().ok_or(status::NOT_FOUND)?;
            if key.eq_ignore_ascii_case(":status") {
                return Ok(r.status.as_str().as_bytes());
            }
            &r.headers
        }
        REQUEST_TRAILERS => s.io.request_trailers.as_ref().ok_or(status::NOT_FOUND)?,
        RESPONSE_TRAILERS => s.io.response_trailers.as_ref().ok_or(status::NOT_FOUND)?,
        CALL_HEADERS | CALL_TRAILERS => {
            return call_list(s, ty)?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_slice())
                .ok_or(status::NOT_FOUND);
        }
        _ => return Err(status::BAD_ARGUMENT),
    };
    // `HeaderMap::get` with a `&str` folds the case itself, without allocating.
    plain
        .get(key)
        .map(HeaderValue::as_bytes)
        .ok_or(status::NOT_FOUND)
}

/// Answers [`GET_HEADER_VALUES`](crate::wasm::state::GET_HEADER_VALUES): several
/// headers of one map in one call. `args` is `[map type u32]` then `[len u32][name]`
/// per header; `out` gets `[len u32][value]` per name in the same order, with
/// `u32::MAX` as the length of a header that is absent (little-endian throughout).
pub(crate) fn values_into(s: &HostState, args: &[u8], out: &mut Vec<u8>) -> Result<(), i32> {
    let (ty, mut rest) = split_u32(args).ok_or(status::BAD_ARGUMENT)?;
    while !rest.is_empty() {
        let (len, tail) = split_u32(rest).ok_or(status::BAD_ARGUMENT)?;
        let len = usize::try_from(len).map_err(|_| status::BAD_ARGUMENT)?;
        let name = tail.get(..len).ok_or(status::BAD_ARGUMENT)?;
        rest = &tail[len..];
        match value(s, ty, name) {
            Ok(v) => {
                let n = u32::try_from(v.len()).map_err(|_| status::INTERNAL_FAILURE)?;
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(v);
            }
            Err(status::NOT_FOUND) => out.extend_from_slice(&u32::MAX.to_le_bytes()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A little-endian `u32` off the front of `b`, and the rest.
fn split_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), rest))
}

/// How a write changes a map.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edit {
    Add,
    Replace,
    Remove,
}

/// Adds, replaces or removes `key` in map `ty`; pseudo-headers rewrite the request
/// line or the status.
pub(crate) fn edit(s: &mut HostState, ty: u32, key: &[u8], value: &[u8], how: Edit) -> i32 {
    if key.first() == Some(&b':') {
        // Pseudo-header names are few and short: fold their case on the stack.
        let mut lower = [0u8; 16];
        let Some(buf) = lower.get_mut(..key.len()) else {
            return status::BAD_ARGUMENT;
        };
        buf.copy_from_slice(key);
        buf.make_ascii_lowercase();
        let Ok(key) = std::str::from_utf8(buf) else {
            return status::BAD_ARGUMENT;
        };
        return edit_pseudo(s, ty, key, value, how);
    }
    let map = match ty {
        REQUEST_HEADERS => s.io.request.as_mut().map(|r| &mut r.headers),
        RESPONSE_HEADERS => s.io.response.as_mut().map(|r| &mut r.headers),
        REQUEST_TRAILERS => s.io.request_trailers.as_mut(),
        RESPONSE_TRAILERS => s.io.response_trailers.as_mut(),
        CALL_HEADERS | CALL_TRAILERS => return status::OK,
        _ => return status::BAD_ARGUMENT,
    };
    let Some(map) = map else {
        return status::NOT_FOUND;
    };
    // Folds the case itself (header names are lower case on the wire to h2 and here).
    let Ok(name) = HeaderName::from_bytes(key) else {
        return status::BAD_ARGUMENT;
    };
    if how == Edit::Remove {
        map.remove(&name);
        return status::OK;
    }
    let Ok(v) = HeaderValue::from_bytes(value) else {
        return status::BAD_ARGUMENT;
    };
    match how {
        Edit::Add => {
            map.append(name, v);
        }
        _ => {
            map.insert(name, v);
        }
    }
    status::OK
}

/// Replaces every pair of map `ty` with `pairs`.
pub(crate) fn set_pairs(s: &mut HostState, ty: u32, pairs: Vec<(String, Vec<u8>)>) -> i32 {
    let cleared = match ty {
        REQUEST_HEADERS => s.io.request.as_mut().map(|r| r.headers.clear()),
        RESPONSE_HEADERS => s.io.response.as_mut().map(|r| r.headers.clear()),
        REQUEST_TRAILERS => s.io.request_trailers.as_mut().map(HeaderMap::clear),
        RESPONSE_TRAILERS => s.io.response_trailers.as_mut().map(HeaderMap::clear),
        CALL_HEADERS | CALL_TRAILERS => return status::OK,
        _ => return status::BAD_ARGUMENT,
    };
    if cleared.is_none() {
        return status::NOT_FOUND;
    }
    let mut rc = status::OK;
    for (k, v) in pairs {
        let r = edit(s, ty, k.as_bytes(), &v, Edit::Add);
        if r != status::OK {
            rc = r;
        }
    }
    rc
}

fn request_pseudo<'s>(
    s: &'s HostState,
    r: &'s http::request::Parts,
    key: &str,
) -> Option<&'s [u8]> {
    let v = match key {
        ":method" => r.method.as_str(),
        ":path" => r.uri.path_and_query().map_or("/", |p| p.as_str()),
        ":authority" => match r.uri.authority() {
            Some(a) => a.as_str(),
            None => return r.headers.get(http::header::HOST).map(HeaderValue::as_bytes),
        },
        ":scheme" => match r.uri.scheme_str() {
            Some(sc) => sc,
            None => {
                let tls = s.io.info.as_ref().is_some_and(|i| i.tls_version.is_some());
                if tls { "https" } else { "http" }
            }
        },
        _ => return None,
    };
    Some(v.as_bytes())
}

fn edit_pseudo(s: &mut HostState, ty: u32, key: &str, value: &[u8], how: Edit) -> i32 {
    if how == Edit::Remove {
        // Pseudo-headers cannot be removed; as Envoy, quietly keep them.
        return status::OK;
    }
    match ty {
        RESPONSE_HEADERS if key == ":status" => {
            let Some(r) = s.io.response.as_mut() else {
                return status::NOT_FOUND;
            };
            match http::StatusCode::from_bytes(value) {
                Ok(code) => {
                    r.status = code;
                    status::OK
                }
                Err(_) => status::BAD_ARGUMENT,
            }
        }
        REQUEST_HEADERS => {
            let Some(r) = s.io.request.as_mut() else {
                return status::NOT_FOUND;
            };
            let ok = match key {
                ":method" => http::Method::from_bytes(value)
                    .map(|m| r.method = m)
                    .is_ok(),
                ":path" => rebuild_uri(&mut r.uri, |p| {
                    p.path_and_query = http::uri::PathAndQuery::try_from(value).ok();
                    p.path_and_query.is_some()
                }),
                ":authority" => {
                    let Ok(host) = HeaderValue::from_bytes(value) else {
                        return status::BAD_ARGUMENT;
                    };
                    r.headers.insert(http::header::HOST, host);
                    if r.uri.authority().is_some() {
                        rebuild_uri(&mut r.uri, |p| {
                            p.authority = http::uri::Authority::try_from(value).ok();
                            p.authority.is_some()
                        })
                    } else {
                        true
                    }
                }
                ":scheme" => true,
                _ => false,
            };
            if ok { status::OK } else { status::BAD_ARGUMENT }
        }
        _ => status::BAD_ARGUMENT,
    }
}

fn rebuild_uri(uri: &mut Uri, change: impl FnOnce(&mut http::uri::Parts) -> bool) -> bool {
    let mut parts = uri.clone().into_parts();
    if !change(&mut parts) {
        return false;
    }
    match Uri::from_parts(parts) {
        Ok(u) => {
            *uri = u;
            true
        }
        Err(_) => false,
    }
}
