//! The `http_handler` host functions. Values go to the guest as the ABI says: the host
//! writes a value only when it fits the guest's buffer and returns its length either
//! way (the guest asks again with a larger buffer); header names and values are lists
//! of NUL-terminated strings, returned as `count << 32 | length`; `read_body` returns
//! `eof << 32 | length`. These functions return no status, so a pointer outside the
//! guest's memory traps (the guest is broken), as other http-wasm hosts do.

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use wasmtime::{Caller, Linker};

use super::{BUFFER_REQUEST, BUFFER_RESPONSE, IMPORT_MODULE, SUPPORTED, pending};
use crate::wasm::memory;
use crate::wasm::state::{HostState, StreamIo};

type C<'a> = Caller<'a, HostState>;
type R<T> = wasmtime::Result<T>;

fn out_of_bounds() -> wasmtime::Error {
    wasmtime::Error::msg("http-wasm: a pointer or length outside the guest's memory")
}

/// The guest's memory and the store's data at once (values go from one to the other).
fn split<'a>(c: &'a mut C<'_>) -> R<(&'a mut [u8], &'a mut HostState)> {
    let mem = c.data().memory.ok_or_else(out_of_bounds)?;
    Ok(mem.data_and_store_mut(c))
}

/// The guest's bytes at `ptr..ptr+len`.
fn view(mem: &[u8], ptr: u32, len: u32) -> R<&[u8]> {
    memory::slice(mem, ptr, len).map_err(|_| out_of_bounds())
}

/// The guest's bytes at `ptr..ptr+len`, to write.
fn view_mut(mem: &mut [u8], ptr: u32, len: u32) -> R<&mut [u8]> {
    memory::slice_mut(mem, ptr, len as usize).map_err(|_| out_of_bounds())
}

/// Writes `value` at `buf` when it fits `limit`; its length either way.
fn hand_out(mem: &mut [u8], buf: u32, limit: u32, value: &[u8]) -> R<u32> {
    let len = u32::try_from(value.len()).map_err(|_| out_of_bounds())?;
    if len <= limit {
        view_mut(mem, buf, len)?.copy_from_slice(value);
    }
    Ok(len)
}

/// A list of NUL-terminated `items` at `buf` when it fits `limit`: `count << 32 | length`.
fn hand_out_list<'v, I: Iterator<Item = &'v [u8]>>(
    mem: &mut [u8],
    buf: u32,
    limit: u32,
    items: impl Fn() -> I,
) -> R<u64> {
    let (count, len) = items().fold((0u64, 0usize), |(n, l), v| (n + 1, l + v.len() + 1));
    let len32 = u32::try_from(len).map_err(|_| out_of_bounds())?;
    if len32 <= limit {
        let out = view_mut(mem, buf, len32)?;
        let mut at = 0;
        for v in items() {
            out[at..at + v.len()].copy_from_slice(v);
            out[at + v.len()] = 0;
            at += v.len() + 1;
        }
    }
    Ok(count << 32 | u64::from(len32))
}

/// The header map `kind` names: request (0) or response (1) headers, request (2) or
/// response (3) trailers. Response headers written before the response exists are
/// the stream's pending ones (the guest's reply's, or added to the upstream's).
fn headers(io: &mut StreamIo, kind: u32) -> Option<&mut HeaderMap> {
    match kind {
        0 => io.request.as_mut().map(|r| &mut r.headers),
        1 if io.response.is_some() => io.response.as_mut().map(|r| &mut r.headers),
        1 => Some(&mut pending(io).headers),
        2 => io.request_trailers.as_mut(),
        3 => io.response_trailers.as_mut(),
        _ => None,
    }
}

/// Links the `http_handler` functions into `l`.
pub(crate) fn link(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link_admin(l)?;
    link_request(l)?;
    link_headers(l)?;
    link_bodies(l)?;
    Ok(())
}

fn link_admin(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut c: C<'_>, level: i32, ptr: u32, len: u32| -> R<()> {
            if !log_enabled(level) {
                return Ok(());
            }
            let (mem, s) = split(&mut c)?;
            let msg = String::from_utf8_lossy(view(mem, ptr, len)?);
            let f = &*s.plugin_name;
            match level {
                ..=-1 => tracing::debug!(target: "filter", filter = f, "{msg}"),
                0 => tracing::info!(target: "filter", filter = f, "{msg}"),
                1 => tracing::warn!(target: "filter", filter = f, "{msg}"),
                _ => tracing::error!(target: "filter", filter = f, "{msg}"),
            }
            Ok(())
        },
    )?;
    l.func_wrap(IMPORT_MODULE, "log_enabled", |level: i32| -> i32 {
        i32::from(log_enabled(level))
    })?;
    l.func_wrap(
        IMPORT_MODULE,
        "get_config",
        |mut c: C<'_>, buf: u32, limit: u32| -> R<u32> {
            let (mem, s) = split(&mut c)?;
            hand_out(mem, buf, limit, &s.plugin_config)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "enable_features",
        |mut c: C<'_>, features: u32| -> u32 {
            let s = c.data_mut();
            s.http_features |= features & SUPPORTED;
            s.http_features
        },
    )?;
    Ok(())
}

/// http-wasm's levels: -1 debug, 0 info, 1 warn, 2 error, 3 none.
fn log_enabled(level: i32) -> bool {
    use tracing::Level;
    match level {
        ..=-1 => tracing::enabled!(target: "filter", Level::DEBUG),
        0 => tracing::enabled!(target: "filter", Level::INFO),
        1 => tracing::enabled!(target: "filter", Level::WARN),
        2 => tracing::enabled!(target: "filter", Level::ERROR),
        _ => false,
    }
}

fn link_request(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        IMPORT_MODULE,
        "get_method",
        |mut c: C<'_>, buf: u32, limit: u32| -> R<u32> {
            let (mem, s) = split(&mut c)?;
            let m = s.io.request.as_ref().map_or("", |r| r.method.as_str());
            hand_out(mem, buf, limit, m.as_bytes())
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "set_method",
        |mut c: C<'_>, ptr: u32, len: u32| -> R<()> {
            let (mem, s) = split(&mut c)?;
            match (Method::from_bytes(view(mem, ptr, len)?), s.io.request.as_mut()) {
                (Ok(m), Some(r)) => r.method = m,
                (Err(_), _) => tracing::debug!(filter = %s.plugin_name, "http-wasm: set_method with an invalid method, ignored"),
                (_, None) => {}
            }
            Ok(())
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "get_uri",
        |mut c: C<'_>, buf: u32, limit: u32| -> R<u32> {
            let (mem, s) = split(&mut c)?;
            let uri = s.io.request.as_ref().and_then(|r| r.uri.path_and_query());
            hand_out(mem, buf, limit, uri.map_or("", |p| p.as_str()).as_bytes())
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "set_uri",
        |mut c: C<'_>, ptr: u32, len: u32| -> R<()> {
            let (mem, s) = split(&mut c)?;
            let value = view(mem, ptr, len)?;
            let Some(r) = s.io.request.as_mut() else {
                return Ok(());
            };
            let mut parts = r.uri.clone().into_parts();
            match http::uri::PathAndQuery::try_from(value) {
                Ok(pq) if value.starts_with(b"/") => {
                    parts.path_and_query = Some(pq);
                    if let Ok(uri) = http::Uri::from_parts(parts) {
                        r.uri = uri;
                    }
                }
                _ => tracing::debug!(filter = %s.plugin_name, "http-wasm: set_uri with an invalid URI, ignored"),
            }
            Ok(())
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "get_protocol_version",
        |mut c: C<'_>, buf: u32, limit: u32| -> R<u32> {
            let (mem, s) = split(&mut c)?;
            let v = match s.io.request.as_ref().map(|r| r.version) {
                Some(http::Version::HTTP_10) => "HTTP/1.0",
                Some(http::Version::HTTP_2) => "HTTP/2.0",
                Some(http::Version::HTTP_3) => "HTTP/3.0",
                _ => "HTTP/1.1",
            };
            hand_out(mem, buf, limit, v.as_bytes())
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "get_source_addr",
        |mut c: C<'_>, buf: u32, limit: u32| -> R<u32> {
            let (mem, s) = split(&mut c)?;
            let addr = s.io.info.as_ref().map(|i| i.client.to_string());
            hand_out(mem, buf, limit, addr.unwrap_or_default().as_bytes())
        },
    )?;
    l.func_wrap(IMPORT_MODULE, "get_status_code", |c: C<'_>| -> u32 {
        let io = &c.data().io;
        match (&io.response, &io.httpwasm) {
            (Some(r), _) => u32::from(r.status.as_u16()),
            (None, Some(p)) => u32::from(p.status.unwrap_or(200)),
            (None, None) => 200,
        }
    })?;
    l.func_wrap(
        IMPORT_MODULE,
        "set_status_code",
        |mut c: C<'_>, code: u32| {
            let io = &mut c.data_mut().io;
            let Some(status) = u16::try_from(code)
                .ok()
                .and_then(|c| http::StatusCode::from_u16(c).ok())
            else {
                return;
            };
            match io.response.as_mut() {
                Some(r) => r.status = status,
                None => pending(io).status = Some(status.as_u16()),
            }
        },
    )?;
    Ok(())
}

fn link_headers(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        IMPORT_MODULE,
        "get_header_names",
        |mut c: C<'_>, kind: u32, buf: u32, limit: u32| -> R<u64> {
            let (mem, s) = split(&mut c)?;
            let Some(h) = headers(&mut s.io, kind) else {
                return Ok(0);
            };
            hand_out_list(mem, buf, limit, || h.keys().map(|k| k.as_str().as_bytes()))
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "get_header_values",
        |mut c: C<'_>, kind: u32, name: u32, name_len: u32, buf: u32, limit: u32| -> R<u64> {
            let (mem, s) = split(&mut c)?;
            let Ok(name) = HeaderName::from_bytes(view(mem, name, name_len)?) else {
                return Ok(0);
            };
            let Some(h) = headers(&mut s.io, kind) else {
                return Ok(0);
            };
            hand_out_list(mem, buf, limit, || {
                h.get_all(&name).iter().map(HeaderValue::as_bytes)
            })
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "set_header_value",
        |mut c: C<'_>, kind: u32, name: u32, name_len: u32, value: u32, value_len: u32| -> R<()> {
            edit(
                &mut c,
                kind,
                (name, name_len),
                Some((value, value_len)),
                false,
            )
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "add_header_value",
        |mut c: C<'_>, kind: u32, name: u32, name_len: u32, value: u32, value_len: u32| -> R<()> {
            edit(
                &mut c,
                kind,
                (name, name_len),
                Some((value, value_len)),
                true,
            )
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "remove_header",
        |mut c: C<'_>, kind: u32, name: u32, name_len: u32| -> R<()> {
            edit(&mut c, kind, (name, name_len), None, false)
        },
    )?;
    Ok(())
}

/// Sets (or with `add`, appends) the header at `name` to `value`, or removes it.
/// Names and values `http` refuses are ignored, as a header a client could not send.
fn edit(c: &mut C<'_>, kind: u32, name: (u32, u32), value: Option<(u32, u32)>, add: bool) -> R<()> {
    let (mem, s) = split(c)?;
    let name = HeaderName::from_bytes(view(mem, name.0, name.1)?);
    let value = match value {
        Some((ptr, len)) => Some(HeaderValue::from_bytes(view(mem, ptr, len)?)),
        None => None,
    };
    let (Ok(name), Some(h)) = (name, headers(&mut s.io, kind)) else {
        return Ok(());
    };
    match value {
        None => {
            h.remove(&name);
        }
        Some(Ok(v)) if add => {
            let _ = h.try_append(name, v);
        }
        Some(Ok(v)) => {
            let _ = h.try_insert(name, v);
        }
        Some(Err(_)) => {}
    }
    Ok(())
}

fn link_bodies(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        IMPORT_MODULE,
        "read_body",
        |mut c: C<'_>, kind: u32, buf: u32, limit: u32| -> R<u64> {
            let (mem, s) = split(&mut c)?;
            let Some(p) = s.io.httpwasm.as_deref_mut() else {
                return Ok(1 << 32);
            };
            let (body, at) = match kind {
                0 => (p.request_body.as_ref(), &mut p.read_at[0]),
                1 => (p.response_body.as_ref(), &mut p.read_at[1]),
                _ => return Ok(1 << 32),
            };
            let rest = body.map_or(&[][..], |b| b.as_slice().get(*at..).unwrap_or_default());
            let n = rest.len().min(limit as usize);
            let chunk = rest.get(..n).unwrap_or_default();
            let written = hand_out(mem, buf, limit, chunk)?;
            *at += n;
            let eof = u64::from(n == rest.len());
            Ok(eof << 32 | u64::from(written))
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        "write_body",
        |mut c: C<'_>, kind: u32, ptr: u32, len: u32| -> R<()> {
            let (mem, s) = split(&mut c)?;
            let bytes = view(mem, ptr, len)?;
            let in_response = s.io.response.is_some();
            let features = s.http_features;
            let p = pending(&mut s.io);
            let k = (kind & 1) as usize;
            let target = match (kind, in_response) {
                // Before the response exists the response body is the guest's reply's.
                (1, false) => p.reply_body.get_or_insert_with(Vec::new),
                (0, _) if p.request_body.is_some() => {
                    p.request_changed = true;
                    p.request_body.get_or_insert_with(Default::default).to_mut()
                }
                (1, true) if p.response_body.is_some() => {
                    p.response_changed = true;
                    p.response_body.get_or_insert_with(Default::default).to_mut()
                }
                _ => {
                    let wanted = if kind == 0 { BUFFER_REQUEST } else { BUFFER_RESPONSE };
                    tracing::debug!(filter = %s.plugin_name, kind, buffered = features & wanted != 0, "http-wasm: write_body to a body that is not buffered, ignored");
                    return Ok(());
                }
            };
            if !std::mem::replace(&mut p.wrote[k], true) {
                target.clear();
            }
            target.extend_from_slice(bytes);
            Ok(())
        },
    )?;
    Ok(())
}
