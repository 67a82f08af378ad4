//! What a test feeds a filter: the client's request and the upstream's answer.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{DEFAULT_CLIENT, TestkitError};

/// A client's request, as the proxy would hand it to the filter chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET` unless set.
    pub method: String,
    /// Path and query, e.g. `/api/items?page=2`.
    pub path: String,
    /// The `Host` the client asked for (`:authority`); `example.com` unless set.
    pub authority: String,
    /// Header fields in order (names are case-insensitive; repeats are kept).
    pub headers: Vec<(String, String)>,
    /// The body; empty means none (the headers phase then ends the stream). A body
    /// comes with a `content-length` unless the headers give one or a
    /// `transfer-encoding`.
    pub body: Bytes,
    /// The peer's `IP:port` (`source.address`).
    pub client: SocketAddr,
    /// Whether the request came over TLS (`:scheme` https, `connection.tls_version`).
    pub tls: bool,
    /// The name of the route it matched (`route_name`); `test` unless set.
    pub route: String,
}

impl Request {
    /// A request for `path` with `method`.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_string(),
            path: path.to_string(),
            authority: "example.com".to_string(),
            headers: Vec::new(),
            body: Bytes::new(),
            client: DEFAULT_CLIENT,
            tls: false,
            route: "test".to_string(),
        }
    }

    /// A `GET` of `path`.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` of `body` to `path`.
    pub fn post(path: &str, body: impl Into<Bytes>) -> Self {
        Self::new("POST", path).body(body)
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the `Host` (`:authority`).
    pub fn authority(mut self, authority: &str) -> Self {
        self.authority = authority.to_string();
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the client's address.
    pub fn client(mut self, client: SocketAddr) -> Self {
        self.client = client;
        self
    }

    /// Marks the request as received over TLS.
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the route's name.
    pub fn route(mut self, route: &str) -> Self {
        self.route = route.to_string();
        self
    }

    /// The head the proxy's phase driver would hold: origin-form URI, `Host` header.
    pub(crate) fn head(&self) -> Result<http::request::Parts, TestkitError> {
        let mut b = http::Request::builder()
            .method(self.method.as_str())
            .uri(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str());
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        // As a client sending a whole body does; filters read the length from here.
        let framed = self.headers.iter().any(|(k, _)| {
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
        });
        if !self.body.is_empty() && !framed {
            b = b.header(http::header::CONTENT_LENGTH, self.body.len());
        }
        let head = b.body(()).map_err(|e| TestkitError::BadMessage {
            what: "request",
            reason: e.to_string(),
        })?;
        Ok(head.into_parts().0)
    }
}

/// What the upstream answers a request the filter let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body; empty means none.
    pub body: Bytes,
}

impl Default for UpstreamResponse {
    fn default() -> Self {
        Self::ok()
    }
}

impl UpstreamResponse {
    /// `200` with no headers and no body.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// `status` with no headers and no body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header field.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The response as a head and a body.
    pub(crate) fn parts(&self) -> Result<(http::response::Parts, Bytes), TestkitError> {
        let mut b = http::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let r = b.body(()).map_err(|e| TestkitError::BadMessage {
            what: "upstream response",
            reason: e.to_string(),
        })?;
        Ok((r.into_parts().0, self.body.clone()))
    }
}
