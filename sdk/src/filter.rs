//! What a filter implements ([`Filter`]) and what its phases return ([`Action`]).

use serde::de::DeserializeOwned;

use crate::{ConfigError, Error, Request, Response};

/// A proxy-wasm HTTP filter: a validated configuration and a function per phase.
///
/// One value is built per configuration (per VM); the phases take `&self`, so anything
/// per request lives in the [`Request`] / [`Response`] handles (see
/// [`Request::add_response_header`] to carry a value from the request to the response).
pub trait Filter: Sized + 'static {
    /// The configuration as users write it; parsed from the plugin configuration with
    /// serde (use `#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned;

    /// Whether this filter implements [`Filter::on_response`]. Set it to `false` when it
    /// does not: a request that queued no response-header change
    /// ([`Request::add_response_header`] and co.) then tells Portcullis to skip this
    /// filter's response phase (one guest call fewer per request). With `false`,
    /// `on_response` may not run.
    const ON_RESPONSE: bool = true;

    /// Whether this filter, as configured, needs [`Filter::on_response`]: by default
    /// [`Filter::ON_RESPONSE`]. A filter whose configuration decides it (a response
    /// header to set, or none) says so here; as with `ON_RESPONSE`, `false` lets
    /// Portcullis skip the response phase of a request that queued no change.
    fn wants_response(&self) -> bool {
        Self::ON_RESPONSE
    }

    /// Validates the parsed configuration and prepares everything the hot path needs.
    /// An error refuses the configuration (`on_configure` returns false) and is logged
    /// with the field it names.
    fn new(config: Self::Config) -> Result<Self, ConfigError>;

    /// The request headers phase.
    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        let _ = req;
        Ok(Action::Continue)
    }

    /// A foreign function's answer that came later (see [`Action::Wait`]): `token` is
    /// the one [`crate::foreign::Started::Later`] gave, `reply` the answer's bytes. The
    /// request is still paused; what this returns decides it ([`Action::Continue`]
    /// resumes it). Called only on Portcullis, only after a phase returned `Wait`.
    fn on_foreign_reply(
        &self,
        req: &mut Request,
        token: u32,
        reply: &[u8],
    ) -> Result<Action, Error> {
        let _ = (req, token, reply);
        Ok(Action::Continue)
    }

    /// A Redis reply (see [`crate::redis::call`]): `token` is the one `call` returned,
    /// `reply` Redis' value, or why none came within the timeout. The request is still
    /// paused; what this returns decides it ([`Action::Continue`] resumes it).
    fn on_redis_reply(
        &self,
        req: &mut Request,
        token: u32,
        reply: Result<crate::redis::Value, crate::redis::RedisError>,
    ) -> Result<Action, Error> {
        let _ = (req, token, reply);
        Ok(Action::Continue)
    }

    /// The response headers phase.
    fn on_response(&self, resp: &mut Response) -> Result<Action, Error> {
        let _ = resp;
        Ok(Action::Continue)
    }
}

/// What a phase decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Go on: next filter, then the upstream (or the client).
    Continue,
    /// Answer the client with this response; the rest of the chain and the upstream
    /// are skipped.
    Respond(LocalResponse),
    /// Keep the request paused until a foreign call answered later arrives (then
    /// [`Filter::on_foreign_reply`] decides) or a Redis reply ([`Filter::on_redis_reply`]).
    /// Only in the request phase.
    Wait,
}

impl Action {
    /// Answers with `status` and a plain-text `body`.
    pub fn deny(status: u32, body: impl Into<String>) -> Self {
        Action::Respond(LocalResponse::new(status).body(body))
    }

    /// Answers with a redirect (`status` 301, 302, 307 or 308) to `location`.
    pub fn redirect(status: u32, location: impl Into<String>) -> Self {
        Action::Respond(LocalResponse::new(status).header("location", location))
    }
}

/// A response the filter sends itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Headers to send, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u32) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets a plain-text body (and `content-type: text/plain`).
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into().into_bytes();
        if !self.body.is_empty() {
            self.headers
                .push(("content-type".into(), "text/plain; charset=utf-8".into()));
        }
        self
    }

    /// The value of the first header named `name` (ASCII case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
