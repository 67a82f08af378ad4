//! The handles a filter's phases get: [`Request`] and [`Response`].
//!
//! Header values are read as bytes and handed over as text, with any byte that is not
//! UTF-8 replaced by U+FFFD.
//!
//! Every call goes straight to the host (nothing is cached), so read a header once and
//! keep the value; to read several, ask for them together with `header_values` (one
//! host call on Portcullis). Pseudo-headers are headers here: `:method`, `:path`, `:authority`,
//! `:scheme` on requests and `:status` on responses; writing `:path` rewrites the request.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

use crate::{Error, landing};

/// The request, during [`crate::Filter::on_request`].
#[derive(Debug, Default)]
pub struct Request {
    pub(crate) response_ops: Vec<HeaderOp>,
}

/// A change to the response's headers, decided during the request phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderOp {
    Set(String, String),
    Add(String, String),
    Remove(String),
}

/// The response, during [`crate::Filter::on_response`].
#[derive(Debug, Default)]
pub struct Response {
    _private: (),
}

// The `_bytes` variants: the text ones unwrap a UTF-8 conversion, and a client may
// send any obs-text byte in a header value; a panic would trap the filter.
fn get(map: MapType, name: &str) -> Result<Option<String>, Error> {
    landing::header(map, name, |v| text(v.into_owned())).map_err(Error::host("get header"))
}

/// Portcullis' foreign function that reads several headers of one map in one call.
const GET_HEADER_VALUES: &str = "portcullis_get_header_values";

/// Set once the host answered [`GET_HEADER_VALUES`] with NOT_FOUND (Envoy, other hosts):
/// later reads go header by header without asking again.
static ONE_BY_ONE: AtomicBool = AtomicBool::new(false);

/// The first value of each of `names` in `map`, in one host call where the host has
/// [`GET_HEADER_VALUES`], else one call per name.
fn get_several<const N: usize>(
    map: MapType,
    names: [&str; N],
) -> Result<[Option<String>; N], Error> {
    if !ONE_BY_ONE.load(Ordering::Relaxed) {
        let mut args = Vec::with_capacity(4 + names.iter().map(|n| 4 + n.len()).sum::<usize>());
        args.extend_from_slice(&(map as u32).to_le_bytes());
        for name in names {
            args.extend_from_slice(&len_u32(name.len()).to_le_bytes());
            args.extend_from_slice(name.as_bytes());
        }
        match landing::foreign(GET_HEADER_VALUES, &args, |reply| decode_values(&reply)) {
            Ok(values) => return values,
            Err(Status::NotFound) => ONE_BY_ONE.store(true, Ordering::Relaxed),
            Err(status) => {
                return Err(Error::Host {
                    what: "get headers",
                    status,
                });
            }
        }
    }
    let mut out = [const { None }; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = get(map, name)?;
    }
    Ok(out)
}

/// A length as the host's `u32`; a header name longer than 4 GiB cannot be sent.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `[len u32][value]` per name, `u32::MAX` for an absent header.
fn decode_values<const N: usize>(mut reply: &[u8]) -> Result<[Option<String>; N], Error> {
    let bad = || {
        Error::Other(format!(
            "{GET_HEADER_VALUES}: the host's reply is malformed"
        ))
    };
    let mut out = [const { None }; N];
    for slot in &mut out {
        let (len, rest) = reply.split_first_chunk::<4>().ok_or_else(bad)?;
        let len = u32::from_le_bytes(*len);
        reply = rest;
        if len == u32::MAX {
            continue;
        }
        let len = usize::try_from(len).map_err(|_| bad())?;
        let value = reply.get(..len).ok_or_else(bad)?;
        *slot = Some(text(value.to_vec()));
        reply = &reply[len..];
    }
    Ok(out)
}

/// The bytes as text, without a copy when they are UTF-8 (as they nearly always are).
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn set(map: MapType, name: &str, value: Option<&str>) -> Result<(), Error> {
    hostcalls::set_map_value(map, name, value).map_err(Error::host("set header"))
}

fn add(map: MapType, name: &str, value: &str) -> Result<(), Error> {
    hostcalls::add_map_value(map, name, value).map_err(Error::host("add header"))
}

fn all(map: MapType) -> Result<Vec<(String, String)>, Error> {
    hostcalls::get_map_bytes(map)
        .map(|pairs| pairs.into_iter().map(|(k, v)| (k, text(v))).collect())
        .map_err(Error::host("get headers"))
}

/// Reads a property (Envoy attribute names, e.g. `["source", "address"]`).
fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Error> {
    let joined = path.join("\0");
    landing::property(joined.as_bytes(), |v| v.into_owned()).map_err(Error::host("get property"))
}

/// Parses `source.address` as hosts give it: `IP:port`, `[v6]:port` or a bare IP.
pub(crate) fn parse_address(text: &str) -> Option<SocketAddr> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa);
    }
    text.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
}

impl Request {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Result<Option<String>, Error> {
        get(MapType::HttpRequestHeaders, name)
    }

    /// The first value of each of `names` (lower-case), in order: one host call on
    /// Portcullis, one per name elsewhere. Cheaper than [`Self::header`] from two names
    /// on: `let [origin, method] = req.header_values(["origin", ":method"])?;`
    pub fn header_values<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[Option<String>; N], Error> {
        get_several(MapType::HttpRequestHeaders, names)
    }

    /// Every header, in order, pseudo-headers included.
    pub fn headers(&self) -> Result<Vec<(String, String)>, Error> {
        all(MapType::HttpRequestHeaders)
    }

    /// Replaces header `name` with `value`.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        set(MapType::HttpRequestHeaders, name, Some(value))
    }

    /// Adds a value to header `name`, keeping existing ones.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        add(MapType::HttpRequestHeaders, name, value)
    }

    /// Removes every value of header `name`.
    pub fn remove_header(&mut self, name: &str) -> Result<(), Error> {
        set(MapType::HttpRequestHeaders, name, None)
    }

    /// The method (`:method`).
    pub fn method(&self) -> Result<String, Error> {
        Ok(self.header(":method")?.unwrap_or_default())
    }

    /// The path with its query (`:path`).
    pub fn path(&self) -> Result<String, Error> {
        Ok(self.header(":path")?.unwrap_or_default())
    }

    /// Rewrites the path (and query) sent upstream.
    pub fn set_path(&mut self, path: &str) -> Result<(), Error> {
        self.set_header(":path", path)
    }

    /// The authority (`:authority`, the `Host` of HTTP/1.1), port included if sent.
    pub fn authority(&self) -> Result<String, Error> {
        Ok(self.header(":authority")?.unwrap_or_default())
    }

    /// The scheme (`:scheme`): `https` on TLS listeners, else `http`.
    pub fn scheme(&self) -> Result<String, Error> {
        Ok(self
            .header(":scheme")?
            .unwrap_or_else(|| "http".to_string()))
    }

    /// The peer's address (property `source.address`), if the host knows it.
    pub fn client_addr(&self) -> Result<Option<SocketAddr>, Error> {
        // Parsed where it landed: no path to build, no string to allocate.
        let parse = |v: Cow<'_, [u8]>| std::str::from_utf8(&v).ok().and_then(parse_address);
        Ok(landing::property(b"source\0address", parse)
            .map_err(Error::host("get property"))?
            .flatten())
    }

    /// The peer's IP address.
    pub fn client_ip(&self) -> Result<Option<IpAddr>, Error> {
        Ok(self.client_addr()?.map(|a| a.ip()))
    }

    /// The name of the route the request matched (property `route_name`), or "".
    pub fn route_name(&self) -> Result<String, Error> {
        Ok(self.property_str(&["route_name"])?.unwrap_or_default())
    }

    /// A property's raw bytes (Envoy attribute names, e.g. `["request", "id"]`).
    pub fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, Error> {
        property(path)
    }

    /// A property as text (invalid UTF-8 is replaced).
    pub fn property_str(&self, path: &[&str]) -> Result<Option<String>, Error> {
        Ok(property(path)?.map(text))
    }

    /// Adds a header to this request's response (applied, in call order with the other
    /// `*_response_header` calls, when the response headers arrive and before
    /// [`crate::Filter::on_response`]). Carries a value from the request phase to the
    /// response phase without per-request state in the filter.
    pub fn add_response_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.response_ops
            .push(HeaderOp::Add(name.into(), value.into()));
    }

    /// Replaces a header of this request's response (see [`Self::add_response_header`]).
    pub fn set_response_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.response_ops
            .push(HeaderOp::Set(name.into(), value.into()));
    }

    /// Removes a header from this request's response (see [`Self::add_response_header`]).
    pub fn remove_response_header(&mut self, name: impl Into<String>) {
        self.response_ops.push(HeaderOp::Remove(name.into()));
    }
}

impl Response {
    /// The first value of header `name` (lower-case), if present.
    pub fn header(&self, name: &str) -> Result<Option<String>, Error> {
        get(MapType::HttpResponseHeaders, name)
    }

    /// The first value of each of `names` (lower-case), in order; see
    /// [`Request::header_values`].
    pub fn header_values<const N: usize>(
        &self,
        names: [&str; N],
    ) -> Result<[Option<String>; N], Error> {
        get_several(MapType::HttpResponseHeaders, names)
    }

    /// Every header, in order, `:status` included.
    pub fn headers(&self) -> Result<Vec<(String, String)>, Error> {
        all(MapType::HttpResponseHeaders)
    }

    /// Replaces header `name` with `value`.
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        set(MapType::HttpResponseHeaders, name, Some(value))
    }

    /// Adds a value to header `name`, keeping existing ones.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), Error> {
        add(MapType::HttpResponseHeaders, name, value)
    }

    /// Removes every value of header `name`.
    pub fn remove_header(&mut self, name: &str) -> Result<(), Error> {
        set(MapType::HttpResponseHeaders, name, None)
    }

    /// The status code (`:status`), 0 if the host gives none.
    pub fn status(&self) -> Result<u16, Error> {
        Ok(self
            .header(":status")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    /// A property's raw bytes.
    pub fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, Error> {
        property(path)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::{decode_values, parse_address};

    #[test]
    fn header_values_reply() {
        let mut reply = Vec::new();
        reply.extend_from_slice(&3u32.to_le_bytes());
        reply.extend_from_slice(b"GET");
        reply.extend_from_slice(&u32::MAX.to_le_bytes());
        reply.extend_from_slice(&0u32.to_le_bytes());
        let [a, b, c] = decode_values::<3>(&reply).unwrap();
        assert_eq!(
            (a.as_deref(), b, c.as_deref()),
            (Some("GET"), None, Some(""))
        );
        assert!(
            decode_values::<3>(&reply[..9]).is_err(),
            "a short reply is refused"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("10.1.2.3:5000").map(|a| a.to_string()),
            Some("10.1.2.3:5000".into())
        );
        assert_eq!(
            parse_address("[::1]:80").map(|a| a.ip().to_string()),
            Some("::1".into())
        );
        assert_eq!(
            parse_address("2001:db8::1").map(|a| a.ip().to_string()),
            Some("2001:db8::1".into())
        );
        assert_eq!(parse_address("nonsense"), None);
    }
}
