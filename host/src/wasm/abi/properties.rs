//! Properties: Envoy's attribute names, read from the stream and the plugin; values
//! set with `set_property` are seen by every filter of the stream.

use crate::wasm::state::{HostState, status};

/// The value of the property at `path` (segments joined by NUL, as the SDKs send).
pub(crate) fn get(s: &HostState, path: &[u8]) -> Result<Vec<u8>, i32> {
    let name = join(path);
    if let Some(v) = s.io.properties.get(&name) {
        return Ok(v.clone());
    }
    let str = |v: &str| Ok(v.as_bytes().to_vec());
    let int = |v: u64| Ok(v.to_le_bytes().to_vec());
    match name.as_str() {
        "plugin_name" => return str(&s.plugin_name),
        "plugin_root_id" => return str(&s.root_id),
        "plugin_vm_id" => return str(""),
        _ => {}
    }
    let info = s.io.info.as_ref();
    let req = s.io.request.as_ref();
    match name.as_str() {
        "source.address" => info
            .map(|i| i.client.to_string())
            .map_or(Err(status::NOT_FOUND), |v| str(&v)),
        "source.port" => info.map_or(Err(status::NOT_FOUND), |i| int(u64::from(i.client.port()))),
        "destination.address" => info
            .map(|i| i.local.to_string())
            .map_or(Err(status::NOT_FOUND), |v| str(&v)),
        "destination.port" => {
            info.map_or(Err(status::NOT_FOUND), |i| int(u64::from(i.local.port())))
        }
        "connection.tls_version" => match info.and_then(|i| i.tls_version) {
            Some(v) => str(v),
            None => Err(status::NOT_FOUND),
        },
        "connection.mtls" => info.map_or(Err(status::NOT_FOUND), |_| Ok(vec![0])),
        "route_name" => info.map_or(Err(status::NOT_FOUND), |i| str(&i.route)),
        "listener_name" => info.map_or(Err(status::NOT_FOUND), |i| str(&i.listener)),
        "response.code" => s.io.response.as_ref().map_or(Err(status::NOT_FOUND), |r| {
            int(u64::from(r.status.as_u16()))
        }),
        "response.headers" => super::headers::pairs(s, 2),
        "request.headers" => super::headers::pairs(s, 0),
        _ => {
            let Some(r) = req else {
                return Err(status::NOT_FOUND);
            };
            let header = |n: &str| {
                r.headers
                    .get(n)
                    .map(|v| v.as_bytes().to_vec())
                    .ok_or(status::NOT_FOUND)
            };
            match name.as_str() {
                "request.path" => super::headers::value(s, 0, ":path"),
                "request.url_path" => str(r.uri.path()),
                "request.host" => super::headers::value(s, 0, ":authority"),
                "request.scheme" => super::headers::value(s, 0, ":scheme"),
                "request.method" => str(r.method.as_str()),
                "request.query" => str(r.uri.query().unwrap_or("")),
                "request.id" => header("x-request-id"),
                "request.referer" => header("referer"),
                "request.useragent" => header("user-agent"),
                "request.protocol" => str(&format!("{:?}", r.version)),
                n => match n.strip_prefix("request.headers.") {
                    Some(h) => header(&h.to_ascii_lowercase()),
                    None => Err(status::NOT_FOUND),
                },
            }
        }
    }
}

/// Sets a stream property for the filters after this one.
pub(crate) fn set(s: &mut HostState, path: &[u8], value: Vec<u8>) -> i32 {
    s.io.properties.insert(join(path), value);
    status::OK
}

fn join(path: &[u8]) -> String {
    let trimmed = path.strip_suffix(&[0]).unwrap_or(path);
    trimmed
        .split(|b| *b == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(".")
}
