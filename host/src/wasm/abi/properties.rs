//! Properties: Envoy's attribute names, read from the stream and the plugin; values
//! set with `set_property` are seen by every filter of the stream.
//!
//! A read writes the value straight into the buffer handed to the guest: no string is
//! built for the name (short paths are joined on the stack) nor for the value.

use std::io::Write;
use std::sync::{Arc, RwLock};

use super::types::MapType;
use crate::config::NodeConfig;
use crate::wasm::state::{HostState, Status};

/// The serving configuration's `node:`, for the `node.*` properties: one per process,
/// replaced as each configuration goes live.
static NODE: RwLock<Option<Arc<NodeConfig>>> = RwLock::new(None);

/// Makes `node` what the `node.*` properties read from now on.
pub fn set_node(node: Arc<NodeConfig>) {
    match NODE.write() {
        Ok(mut n) => *n = Some(node),
        Err(poisoned) => *poisoned.into_inner() = Some(node),
    }
}

/// `node.id`, `node.cluster` or `node.metadata.<name>` (`rest` is what follows
/// `node.`).
fn node_into(rest: &str, out: &mut Vec<u8>) -> Result<(), Status> {
    let node = match NODE.read() {
        Ok(n) => n.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let node = node.ok_or(Status::NotFound)?;
    let value = match rest {
        "id" => node.id.as_bytes(),
        "cluster" => node.cluster.as_bytes(),
        _ => {
            let name = rest.strip_prefix("metadata.").ok_or(Status::NotFound)?;
            let (_, v) = node
                .metadata
                .iter()
                .find(|(k, _)| k == name)
                .ok_or(Status::NotFound)?;
            v
        }
    };
    out.extend_from_slice(value);
    Ok(())
}

/// Paths up to this long (the SDKs' segments joined by '.') are joined on the stack.
const SHORT_PATH: usize = 128;

/// Writes the value of the property at `path` (segments joined by NUL, as the SDKs
/// send) into `out`.
pub(crate) fn get_into(s: &HostState, path: &[u8], out: &mut Vec<u8>) -> Result<(), Status> {
    let mut stack = [0u8; SHORT_PATH];
    let heap;
    let name: &str = match join_into(path, &mut stack) {
        Some(n) => n,
        None => {
            heap = join(path);
            &heap
        }
    };
    lookup(s, name, out)
}

fn lookup(s: &HostState, name: &str, out: &mut Vec<u8>) -> Result<(), Status> {
    if let Some((_, v)) = s.io.properties.iter().find(|(k, _)| k == name) {
        out.extend_from_slice(v);
        return Ok(());
    }
    let mut str = |v: &[u8]| {
        out.extend_from_slice(v);
        Ok(())
    };
    match name {
        "plugin_name" => return str(s.plugin_name.as_bytes()),
        "plugin_root_id" => return str(s.root_id.as_bytes()),
        "plugin_vm_id" => return str(b""),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("node.") {
        return node_into(rest, out);
    }
    if let Some(path) = name.strip_prefix("cluster_metadata.filter_metadata.") {
        let all = s.io.cluster_metadata.as_ref().ok_or(Status::NotFound)?;
        let (_, v) = all
            .iter()
            .find(|(k, _)| k == path)
            .ok_or(Status::NotFound)?;
        out.extend_from_slice(v);
        return Ok(());
    }
    let info = s.io.info.as_ref();
    let int = |out: &mut Vec<u8>, v: u64| {
        out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    };
    match name {
        "source.address" => {
            let i = info.ok_or(Status::NotFound)?;
            return socket_addr_into(out, &i.client);
        }
        "source.port" => {
            let i = info.ok_or(Status::NotFound)?;
            return int(out, u64::from(i.client.port()));
        }
        "destination.address" => {
            let i = info.ok_or(Status::NotFound)?;
            return socket_addr_into(out, &i.local);
        }
        "destination.port" => {
            let i = info.ok_or(Status::NotFound)?;
            return int(out, u64::from(i.local.port()));
        }
        "connection.tls_version" => {
            let v = info.and_then(|i| i.tls_version).ok_or(Status::NotFound)?;
            out.extend_from_slice(v.as_bytes());
            return Ok(());
        }
        "route_name" => {
            let i = info.ok_or(Status::NotFound)?;
            out.extend_from_slice(i.route.as_bytes());
            return Ok(());
        }
        "listener_name" => {
            let i = info.ok_or(Status::NotFound)?;
            out.extend_from_slice(i.listener.as_bytes());
            return Ok(());
        }
        "response.code" => {
            let code = match &s.io.response {
                Some(r) => r.status.as_u16(),
                None => s.io.response_code.ok_or(Status::NotFound)?,
            };
            return int(out, u64::from(code));
        }
        "response.code_details" => {
            let d = s.io.code_details.as_ref().ok_or(Status::NotFound)?;
            out.extend_from_slice(d.as_bytes());
            return Ok(());
        }
        // As Envoy: bytes sent so far; the total adds the headers and trailers.
        "response.size" => {
            if s.io.response.is_none() && s.io.response_code.is_none() {
                return Err(Status::NotFound);
            }
            return int(out, s.io.response_body_bytes);
        }
        "response.total_size" => {
            let heads = match &s.io.response {
                Some(r) => response_head_bytes(r),
                None if s.io.response_code.is_some() => s.io.response_head_bytes,
                None => return Err(Status::NotFound),
            };
            let trailers = s.io.response_trailers.as_ref().map_or(0, headers_size);
            return int(out, s.io.response_body_bytes + heads + trailers);
        }
        // As Envoy: `content-length` when given, else the body bytes received so far;
        // the total adds the headers (pseudo-headers included) and trailers.
        "request.size" | "request.total_size" => {
            let (length, head) = match &s.io.request {
                Some(r) => request_head(r),
                None => s.io.request_head.ok_or(Status::NotFound)?,
            };
            let body = s.io.request_body_bytes;
            if name == "request.size" {
                return int(out, length.unwrap_or(body));
            }
            let trailers = s.io.request_trailers.as_ref().map_or(0, headers_size);
            return int(out, body + head + trailers);
        }
        "request.time" => {
            let t = s.io.started.ok_or(Status::NotFound)?;
            let nanos = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| Status::NotFound)?
                .as_nanos();
            return int(out, u64::try_from(nanos).map_err(|_| Status::NotFound)?);
        }
        "request.duration" => {
            // Known once the stream is complete (on_log), as on Envoy.
            let t =
                s.io.started
                    .filter(|_| s.io.completed)
                    .ok_or(Status::NotFound)?;
            let d = t.elapsed().unwrap_or_default().as_nanos();
            return int(out, u64::try_from(d).map_err(|_| Status::NotFound)?);
        }
        "upstream.address" => {
            let a = s.io.upstream_address.as_ref().ok_or(Status::NotFound)?;
            out.extend_from_slice(a.as_bytes());
            return Ok(());
        }
        // Known with the response, as on Envoy.
        "response.flags" => {
            if s.io.response.is_none() && s.io.response_code.is_none() {
                return Err(Status::NotFound);
            }
            return int(out, s.io.response_flags);
        }
        "cluster_name" => {
            let c = s.io.cluster.as_ref().ok_or(Status::NotFound)?;
            out.extend_from_slice(c.as_bytes());
            return Ok(());
        }
        "connection.mtls" => {
            info.ok_or(Status::NotFound)?;
            out.push(u8::from(s.io.peer_subject.is_some()));
            return Ok(());
        }
        "connection.subject_peer_certificate" => {
            let p = s.io.peer_subject.as_ref().ok_or(Status::NotFound)?;
            out.extend_from_slice(p.as_bytes());
            return Ok(());
        }
        "response.headers" => return super::headers::pairs_into(s, MapType::ResponseHeaders, out),
        "request.headers" => return super::headers::pairs_into(s, MapType::RequestHeaders, out),
        _ => {}
    }
    let r = s.io.request.as_ref().ok_or(Status::NotFound)?;
    let header = |out: &mut Vec<u8>, n: &str| {
        let v = r.headers.get(n).ok_or(Status::NotFound)?;
        out.extend_from_slice(v.as_bytes());
        Ok(())
    };
    let pseudo = |out: &mut Vec<u8>, n: &str| {
        out.extend_from_slice(super::headers::value(
            s,
            MapType::RequestHeaders,
            n.as_bytes(),
        )?);
        Ok(())
    };
    match name {
        "request.path" => pseudo(out, ":path"),
        "request.url_path" => {
            out.extend_from_slice(r.uri.path().as_bytes());
            Ok(())
        }
        "request.host" => pseudo(out, ":authority"),
        "request.scheme" => pseudo(out, ":scheme"),
        "request.method" => {
            out.extend_from_slice(r.method.as_str().as_bytes());
            Ok(())
        }
        "request.query" => {
            out.extend_from_slice(r.uri.query().unwrap_or("").as_bytes());
            Ok(())
        }
        "request.id" => header(out, "x-request-id"),
        "request.referer" => header(out, "referer"),
        "request.useragent" => header(out, "user-agent"),
        "request.protocol" => write!(out, "{:?}", r.version).map_err(|_| Status::InternalFailure),

        n => match n.strip_prefix("request.headers.") {
            // `get` folds the name's case itself.
            Some(h) => header(out, h),
            None => Err(Status::NotFound),
        },
    }
}

/// Writes `addr` as `Display` does (`1.2.3.4:80`, `[::1]:80`). The filters that
/// limit or allow by client read `source.address` on every request, and the
/// formatting machinery took ~700 instructions a read for an IPv4 address; digits
/// are written directly for those.
fn socket_addr_into(out: &mut Vec<u8>, addr: &std::net::SocketAddr) -> Result<(), Status> {
    let std::net::SocketAddr::V4(v4) = addr else {
        return write!(out, "{addr}").map_err(|_| Status::InternalFailure);
    };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        decimal_into(out, u16::from(octet));
    }
    out.push(b':');
    decimal_into(out, v4.port());
    Ok(())
}

/// Appends `n` in decimal, without leading zeros.
fn decimal_into(out: &mut Vec<u8>, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A request head's `content-length`, and its bytes as Envoy counts them: the
/// pseudo-headers and every header (approximate, as Envoy's).
pub(crate) fn request_head(r: &http::request::Parts) -> (Option<u64>, u64) {
    let length = crate::body::declared_length(&r.headers);
    let bytes = headers_size(&r.headers)
        + 7
        + r.method.as_str().len() as u64
        + 5
        + r.uri.path_and_query().map_or(1, |p| p.as_str().len()) as u64
        + 10
        + r.uri.authority().map_or(0, |a| a.as_str().len()) as u64
        + 7
        + r.uri.scheme_str().map_or(4, str::len) as u64;
    (length, bytes)
}

/// The bytes of a response head as Envoy counts them: `:status` and every header.
pub(crate) fn response_head_bytes(r: &http::response::Parts) -> u64 {
    headers_size(&r.headers) + 7 + r.status.as_str().len() as u64
}

/// Envoy's `HeaderMap::byteSize`: the lengths of every name and value.
fn headers_size(h: &http::HeaderMap) -> u64 {
    h.iter()
        .map(|(k, v)| (k.as_str().len() + v.len()) as u64)
        .sum()
}

/// Sets a stream property for the filters after this one.
pub(crate) fn set(s: &mut HostState, path: &[u8], value: Vec<u8>) -> Status {
    let name = join(path);
    match s.io.properties.iter_mut().find(|(k, _)| *k == name) {
        Some((_, v)) => *v = value,
        None => s.io.properties.push((name, value)),
    }
    Status::Ok
}

/// Joins `path`'s NUL-separated segments with '.' into `buf`; `None` when it does
/// not fit or is not UTF-8 (then [`join`] does it on the heap, lossily).
fn join_into<'b>(path: &[u8], buf: &'b mut [u8; SHORT_PATH]) -> Option<&'b str> {
    let trimmed = path.strip_suffix(&[0]).unwrap_or(path);
    let out = buf.get_mut(..trimmed.len())?;
    for (o, b) in out.iter_mut().zip(trimmed) {
        *o = if *b == 0 { b'.' } else { *b };
    }
    std::str::from_utf8(out).ok()
}

fn join(path: &[u8]) -> String {
    let trimmed = path.strip_suffix(&[0]).unwrap_or(path);
    trimmed
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses_are_written_as_display_writes_them() {
        let addrs = [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "255.255.255.255:65535",
            "10.20.3.100:9",
            "[::1]:443",
            "[2001:db8::7]:10000",
        ];
        for a in addrs {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            let mut out = b"x".to_vec();
            assert!(socket_addr_into(&mut out, &addr).is_ok());
            assert_eq!(out, format!("x{addr}").into_bytes(), "{a}");
        }
    }

    #[test]
    fn paths_join_on_the_stack_as_on_the_heap() {
        let mut buf = [0u8; SHORT_PATH];
        for path in [
            &b"source\0address"[..],
            b"request\0headers\0x-a\0",
            b"plugin_name",
        ] {
            assert_eq!(
                join_into(path, &mut buf).map(str::to_string),
                Some(join(path))
            );
        }
        let long = vec![b'a'; SHORT_PATH + 1];
        assert_eq!(join_into(&long, &mut buf), None);
    }
}
