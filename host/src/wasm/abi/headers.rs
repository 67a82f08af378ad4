//! Header maps: request/response headers with their pseudo-headers, trailers, the
//! headers of an `http_call` response and the metadata of a gRPC callout.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use super::types::MapType::{
    self, CallHeaders, CallTrailers, GrpcInitialMetadata, GrpcTrailingMetadata, RequestHeaders,
    RequestTrailers, ResponseHeaders, ResponseTrailers,
};
use crate::wasm::memory::encode_pairs_into;
use crate::wasm::state::{HostState, Status, StreamIo};

pub(crate) mod journal;

use journal::Journal;

/// The request's pseudo-headers, in the order Envoy hands them over.
const REQUEST_PSEUDO: [&str; 4] = [":authority", ":path", ":method", ":scheme"];

/// Every pair of map `ty`, pseudo-headers first, encoded for the guest into `out`.
pub(crate) fn pairs_into(s: &HostState, ty: MapType, out: &mut Vec<u8>) -> Result<(), Status> {
    match ty {
        RequestHeaders => {
            let r = s.io.request.as_ref().ok_or(Status::NotFound)?;
            encode_pairs_into(out, || {
                let pseudo = REQUEST_PSEUDO
                    .iter()
                    .filter_map(|p| request_pseudo(s, r, p).map(|v| (p.as_bytes(), v)));
                pseudo.chain(plain(&r.headers))
            });
        }
        ResponseHeaders => {
            let r = s.io.response_head().ok_or(Status::NotFound)?;
            encode_pairs_into(out, || {
                let status = std::iter::once((&b":status"[..], r.status.as_str().as_bytes()));
                status.chain(plain(&r.headers))
            });
        }
        RequestTrailers => {
            let t = s.io.request_trailers.as_ref().ok_or(Status::NotFound)?;
            encode_pairs_into(out, || plain(t));
        }
        ResponseTrailers => {
            let t = s.io.response_trailers.as_ref().ok_or(Status::NotFound)?;
            encode_pairs_into(out, || plain(t));
        }
        CallHeaders | CallTrailers | GrpcInitialMetadata | GrpcTrailingMetadata => {
            let list = call_list(s, ty)?;
            encode_pairs_into(out, || {
                list.iter().map(|(k, v)| (k.as_bytes(), v.as_slice()))
            });
        }
    }
    Ok(())
}

fn plain(m: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    m.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
}

/// The headers or trailers of the `http_call` response being delivered, or the
/// initial or trailing metadata of the gRPC callout event being delivered.
fn call_list(s: &HostState, ty: MapType) -> Result<&[(String, Vec<u8>)], Status> {
    let c = s.call_response.as_ref().ok_or(Status::NotFound)?;
    Ok(if matches!(ty, CallHeaders | GrpcInitialMetadata) {
        &c.headers
    } else {
        &c.trailers
    })
}

/// The first value of `key` (any case) in map `ty`, borrowed from the stream.
pub(crate) fn value<'s>(s: &'s HostState, ty: MapType, key: &[u8]) -> Result<&'s [u8], Status> {
    let plain = match ty {
        RequestHeaders => {
            let r = s.io.request.as_ref().ok_or(Status::NotFound)?;
            if key.starts_with(b":") {
                let known = REQUEST_PSEUDO
                    .iter()
                    .find(|p| p.as_bytes().eq_ignore_ascii_case(key));
                return known
                    .and_then(|p| request_pseudo(s, r, p))
                    .ok_or(Status::NotFound);
            }
            &r.headers
        }
        ResponseHeaders => {
            let r = s.io.response_head().ok_or(Status::NotFound)?;
            if key.eq_ignore_ascii_case(b":status") {
                return Ok(r.status.as_str().as_bytes());
            }
            &r.headers
        }
        RequestTrailers => s.io.request_trailers.as_ref().ok_or(Status::NotFound)?,
        ResponseTrailers => s.io.response_trailers.as_ref().ok_or(Status::NotFound)?,
        CallHeaders | CallTrailers | GrpcInitialMetadata | GrpcTrailingMetadata => {
            return call_list(s, ty)?
                .iter()
                .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_slice())
                .ok_or(Status::NotFound);
        }
    };
    // The name parsed once per VM; a key that is no valid name names no header.
    s.header_names
        .with(key, |name| plain.get(name))
        .flatten()
        .map(HeaderValue::as_bytes)
        .ok_or(Status::NotFound)
}

/// Answers [`GET_HEADER_VALUES`](crate::wasm::state::GET_HEADER_VALUES): several
/// headers of one map in one call. `args` is `[map type u32]` then `[len u32][name]`
/// per header; `out` gets `[len u32][value]` per name in the same order, with
/// `u32::MAX` as the length of a header that is absent (little-endian throughout).
pub(crate) fn values_into(s: &HostState, args: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
    let (ty, mut rest) = split_u32(args).ok_or(Status::BadArgument)?;
    let ty = MapType::from_raw(ty)?;
    while !rest.is_empty() {
        let (len, tail) = split_u32(rest).ok_or(Status::BadArgument)?;
        let len = usize::try_from(len).map_err(|_| Status::BadArgument)?;
        let name = tail.get(..len).ok_or(Status::BadArgument)?;
        rest = &tail[len..];
        match value(s, ty, name) {
            Ok(v) => {
                let n = u32::try_from(v.len()).map_err(|_| Status::InternalFailure)?;
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(v);
            }
            Err(Status::NotFound) => out.extend_from_slice(&u32::MAX.to_le_bytes()),
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
pub(crate) fn edit(s: &mut HostState, ty: MapType, key: &[u8], value: &[u8], how: Edit) -> Status {
    if key.first() == Some(&b':') {
        // Pseudo-header names are few and short: fold their case on the stack.
        let mut lower = [0u8; 16];
        let Some(buf) = lower.get_mut(..key.len()) else {
            return Status::BadArgument;
        };
        buf.copy_from_slice(key);
        buf.make_ascii_lowercase();
        let Ok(key) = std::str::from_utf8(buf) else {
            return Status::BadArgument;
        };
        return edit_pseudo(s, ty, key, value, how);
    }
    if read_only(ty) {
        return Status::Ok;
    }
    let (Some(map), journal) = map_and_journal(&mut s.io, ty) else {
        return Status::NotFound;
    };
    let Some(name) = s.header_names.get(key) else {
        return Status::BadArgument;
    };
    if how == Edit::Remove {
        if journal.on() {
            journal.header(ty, map, &name, true);
        }
        map.remove(&name);
        return Status::Ok;
    }
    let Ok(v) = HeaderValue::from_bytes(value) else {
        return Status::BadArgument;
    };
    if journal.on() {
        journal.header(ty, map, &name, false);
    }
    // A map holds at most `http`'s limit of distinct names (about 24,000): past it,
    // `append` and `insert` panic, and a guest adding names in a loop took its worker
    // down. Refused instead, as a value that cannot be a header is.
    let added = match how {
        Edit::Add => map.try_append(name, v).map(drop),
        _ => map.try_insert(name, v).map(drop),
    };
    match added {
        Ok(()) => Status::Ok,
        Err(_) => Status::BadArgument,
    }
}

/// Replaces every pair of map `ty` with `pairs`.
pub(crate) fn set_pairs(s: &mut HostState, ty: MapType, pairs: Vec<(String, Vec<u8>)>) -> Status {
    if read_only(ty) {
        return Status::Ok;
    }
    let (Some(map), journal) = map_and_journal(&mut s.io, ty) else {
        return Status::NotFound;
    };
    if journal.on() {
        journal.map(ty, map);
    }
    map.clear();
    let mut rc = Status::Ok;
    for (k, v) in pairs {
        let r = edit(s, ty, k.as_bytes(), &v, Edit::Add);
        if r != Status::Ok {
            rc = r;
        }
    }
    rc
}

/// Whether map `ty` is what a callout answered: read-only, writes to it are ignored.
fn read_only(ty: MapType) -> bool {
    matches!(
        ty,
        CallHeaders | CallTrailers | GrpcInitialMetadata | GrpcTrailingMetadata
    )
}

/// Map `ty` of the stream (`None` for a callout's, or one the stream has not reached),
/// and the journal that writes to it go to.
fn map_and_journal(io: &mut StreamIo, ty: MapType) -> (Option<&mut HeaderMap>, &mut Journal) {
    let map = match ty {
        RequestHeaders => io.request.as_mut().map(|r| &mut r.headers),
        // Not from a body callback: the head has gone downstream (`StreamIo::head_gone`).
        ResponseHeaders if io.head_gone => None,
        ResponseHeaders => io.response.as_mut().map(|r| &mut r.headers),
        RequestTrailers => io.request_trailers.as_mut(),
        ResponseTrailers => io.response_trailers.as_mut(),
        CallHeaders | CallTrailers | GrpcInitialMetadata | GrpcTrailingMetadata => None,
    };
    (map, &mut io.journal)
}

/// Map `ty` of the stream, to put back what a shadow filter wrote there.
fn map_mut(io: &mut StreamIo, ty: MapType) -> Option<&mut HeaderMap> {
    map_and_journal(io, ty).0
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

fn edit_pseudo(s: &mut HostState, ty: MapType, key: &str, value: &[u8], how: Edit) -> Status {
    if how == Edit::Remove {
        // Pseudo-headers cannot be removed; as Envoy, quietly keep them.
        return Status::Ok;
    }
    match ty {
        ResponseHeaders if key == ":status" => {
            let io = &mut *s.io;
            let Some(r) = io.response.as_mut().filter(|_| !io.head_gone) else {
                return Status::NotFound;
            };
            match http::StatusCode::from_bytes(value) {
                Ok(code) => {
                    if io.journal.on() {
                        io.journal.status(r.status);
                    }
                    r.status = code;
                    Status::Ok
                }
                Err(_) => Status::BadArgument,
            }
        }
        RequestHeaders => {
            let io = &mut *s.io;
            let Some(r) = io.request.as_mut() else {
                return Status::NotFound;
            };
            if io.journal.on() {
                let j = &mut io.journal;
                match key {
                    ":method" => j.method(&r.method),
                    ":path" => j.uri(&r.uri),
                    ":authority" => {
                        j.header(ty, &r.headers, &http::header::HOST, false);
                        j.uri(&r.uri);
                    }
                    _ => {}
                }
            }
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
                        return Status::BadArgument;
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
            if ok { Status::Ok } else { Status::BadArgument }
        }
        _ => Status::BadArgument,
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

/// The header names a VM's filter reads and writes, parsed once: a filter uses the
/// same few names on every request, and parsing one (folding its case, and for a
/// name `http` does not know, allocating it) cost more than the lookup or the write.
/// Behind a `RefCell` so that reads, which borrow the stream, can fill it.
#[derive(Default)]
pub(crate) struct NameCache {
    names: std::cell::RefCell<Vec<(Box<[u8]>, HeaderName)>>,
}

impl NameCache {
    /// Enough for what one filter uses; past it, names are parsed every time.
    const CAP: usize = 16;

    /// `key` (as the guest spelled it) as a header name, lower case; `None` if it is
    /// not a valid one.
    pub fn get(&self, key: &[u8]) -> Option<HeaderName> {
        self.with(key, HeaderName::clone)
    }

    /// `f` of `key` as a header name, without cloning it; `None` if `key` is not a
    /// valid one.
    pub fn with<R>(&self, key: &[u8], f: impl FnOnce(&HeaderName) -> R) -> Option<R> {
        let Ok(mut names) = self.names.try_borrow_mut() else {
            return HeaderName::from_bytes(key).ok().map(|n| f(&n));
        };
        if let Some((_, name)) = names.iter().find(|(k, _)| **k == *key) {
            return Some(f(name));
        }
        // Folds the case itself (header names are lower case on the wire to h2 and here).
        let name = HeaderName::from_bytes(key).ok()?;
        let r = f(&name);
        if names.len() < Self::CAP {
            names.push((key.into(), name));
        }
        Some(r)
    }
}
