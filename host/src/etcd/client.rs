//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/range`, `/v3/watch`,
//! `/v3/auth/authenticate` on the client port; keys and values base64), over the
//! HTTPS client the ACME client uses too (`tls::https`). Only what a configuration provider
//! needs: read a prefix, watch it, log in.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;

use crate::config::EtcdConfig;
use crate::tls::https::{self, Connector};
use crate::tls::{load, provider};

/// Why a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No answer: the endpoint refused, reset or timed out. The provider retries.
    #[error("etcd at {endpoint} is unreachable: {reason}")]
    Unreachable {
        /// The endpoint tried.
        endpoint: String,
        /// What happened.
        reason: String,
    },
    /// etcd answered with an error (bad credentials, permission denied, …).
    #[error("etcd at {endpoint} answered {status}: {message}")]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// The answer could not be read as etcd's JSON.
    #[error("etcd at {endpoint} sent something unexpected: {reason}")]
    Protocol {
        /// The endpoint.
        endpoint: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The TLS settings (`providers.etcd.tls`) cannot be used.
    #[error("providers.etcd.tls: {0}")]
    Tls(String),
}

/// One key's value and the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value, as text (a document).
    pub value: String,
    /// The store revision of its last write.
    pub mod_revision: i64,
}

/// What a range read: the keys, at the store revision it was read at.
#[derive(Debug, Clone)]
pub struct Range {
    /// The store revision the read saw.
    pub revision: i64,
    /// Every key in the range.
    pub kvs: Vec<KeyValue>,
}

/// One change a watch reported.
#[derive(Debug, Clone)]
pub enum Change {
    /// The key was written.
    Put(KeyValue),
    /// The key was deleted.
    Delete(String),
}

/// One message of a watch stream.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// The watch is established (etcd's `created`).
    Created,
    /// Changes, all at `revision` (one transaction).
    Changes {
        /// The store revision after them.
        revision: i64,
        /// What changed.
        changes: Vec<Change>,
    },
    /// etcd cancelled the watch (e.g. the start revision was compacted): read again.
    Canceled(String),
}

/// A client for the endpoints of one `providers.etcd` block.
pub struct EtcdClient {
    http: Client<Connector, Full<Bytes>>,
    endpoints: Vec<String>,
    /// The endpoint in use; moves on to the next when one is unreachable.
    current: AtomicUsize,
    timeout: Duration,
    auth: Option<(String, String)>,
    /// The token `auth` logged in for, sent as `Authorization`.
    token: Mutex<Option<String>>,
}

impl EtcdClient {
    /// A client for `config`'s endpoints, TLS and credentials.
    pub fn new(config: &EtcdConfig) -> Result<Self, EtcdError> {
        let roots =
            https::roots(config.tls.ca.as_deref()).map_err(|e| EtcdError::Tls(e.to_string()))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| EtcdError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                let chain = load::certs(cert).map_err(|e| EtcdError::Tls(e.to_string()))?;
                let key = load::key(key).map_err(|e| EtcdError::Tls(e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| EtcdError::Tls(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        // A watch is one long response: keep-alive probes are what tell a dead peer
        // (a partition, not a restart) from a quiet prefix.
        http.set_keepalive(Some(Duration::from_secs(5)));
        http.set_keepalive_interval(Some(Duration::from_secs(2)));
        http.set_keepalive_retries(Some(3));
        Ok(Self {
            http: https::client(tls, http),
            endpoints: config.endpoints.clone(),
            current: AtomicUsize::new(0),
            timeout: config.timeout,
            auth: config
                .auth
                .as_ref()
                .map(|a| (a.username.clone(), a.password.clone())),
            token: Mutex::new(None),
        })
    }

    /// Every key under `prefix`, read linearizably.
    pub async fn range(&self, prefix: &str) -> Result<Range, EtcdError> {
        let body = serde_json::json!({
            "key": B64.encode(prefix),
            "range_end": B64.encode(range_end(prefix)),
        });
        let (endpoint, resp) = self.call("/v3/kv/range", &body).await?;
        let bytes = read_body(&endpoint, resp, self.timeout).await?;
        let range: RangeJson = parse(&endpoint, &bytes)?;
        let kvs = range
            .kvs
            .into_iter()
            .map(|kv| kv.decode(&endpoint))
            .collect::<Result<_, _>>()?;
        Ok(Range {
            revision: range.header.revision,
            kvs,
        })
    }

    /// Watches every key under `prefix` from `revision` on: etcd streams each change
    /// as it commits.
    pub async fn watch(&self, prefix: &str, revision: i64) -> Result<Watch, EtcdError> {
        let body = serde_json::json!({ "create_request": {
            "key": B64.encode(prefix),
            "range_end": B64.encode(range_end(prefix)),
            "start_revision": revision.to_string(),
        }});
        let (endpoint, resp) = self.call("/v3/watch", &body).await?;
        Ok(Watch {
            endpoint,
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// POSTs `body` to `path` on the current endpoint (moving on to the next while
    /// one is unreachable), logged in when `auth` says; returns a 200's response.
    async fn call(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<(String, hyper::Response<Incoming>), EtcdError> {
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
            let endpoint = self.endpoints[i].trim_end_matches('/').to_string();
            match self.call_on(&endpoint, path, body).await {
                // A member cut off from its cluster's quorum answers 503: another
                // member may serve.
                Err(e @ EtcdError::Unreachable { .. })
                | Err(e @ EtcdError::Refused { status: 500.., .. }) => {
                    self.current.store(i + 1, Ordering::Relaxed);
                    last = Some(e);
                }
                other => return other.map(|r| (endpoint, r)),
            }
        }
        Err(last.unwrap_or_else(|| EtcdError::Unreachable {
            endpoint: String::new(),
            reason: "no endpoints".into(),
        }))
    }

    async fn call_on(
        &self,
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<hyper::Response<Incoming>, EtcdError> {
        // An expired token is answered 401 once; log in again and retry.
        for attempt in 0..2 {
            let token = match &self.auth {
                Some(_) => Some(self.token(endpoint, attempt > 0).await?),
                None => None,
            };
            let resp = self.post(endpoint, path, body, token.as_deref()).await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status().as_u16();
            let message = error_message(&read_body(endpoint, resp, self.timeout).await?);
            let expired = status == 401 || message.contains("invalid auth token");
            if !(expired && self.auth.is_some() && attempt == 0) {
                return Err(EtcdError::Refused {
                    endpoint: endpoint.to_string(),
                    status,
                    message,
                });
            }
        }
        Err(EtcdError::Refused {
            endpoint: endpoint.to_string(),
            status: 401,
            message: "the auth token was refused twice".into(),
        })
    }

    /// The auth token, logging in when there is none (or `renew`).
    async fn token(&self, endpoint: &str, renew: bool) -> Result<String, EtcdError> {
        if !renew && let Some(t) = lock(&self.token).clone() {
            return Ok(t);
        }
        let Some((name, password)) = &self.auth else {
            return Ok(String::new());
        };
        let body = serde_json::json!({ "name": name, "password": password });
        let resp = self
            .post(endpoint, "/v3/auth/authenticate", &body, None)
            .await?;
        let status = resp.status().as_u16();
        let bytes = read_body(endpoint, resp, self.timeout).await?;
        if status != 200 {
            let message = error_message(&bytes);
            return Err(EtcdError::Refused {
                endpoint: endpoint.to_string(),
                status,
                message: format!("cannot log in as `{name}`: {message}"),
            });
        }
        let token = parse::<AuthJson>(endpoint, &bytes)?.token;
        *lock(&self.token) = Some(token.clone());
        Ok(token)
    }

    /// One POST, bounded by the timeout until the response head arrives.
    async fn post(
        &self,
        endpoint: &str,
        path: &str,
        body: &serde_json::Value,
        token: Option<&str>,
    ) -> Result<hyper::Response<Incoming>, EtcdError> {
        let unreachable = |reason: String| EtcdError::Unreachable {
            endpoint: endpoint.to_string(),
            reason,
        };
        let mut req = http::Request::post(format!("{endpoint}{path}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            req = req.header(http::header::AUTHORIZATION, token);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| unreachable(format!("cannot build the request: {e}")))?;
        match tokio::time::timeout(self.timeout, self.http.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(unreachable(error_chain(&e))),
            Err(_) => Err(unreachable(format!("no answer within {:?}", self.timeout))),
        }
    }
}

/// A watch stream: etcd's gateway writes one JSON message per change batch.
pub struct Watch {
    endpoint: String,
    body: Incoming,
    buf: Vec<u8>,
}

impl Watch {
    /// The next message; `None` when etcd ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, EtcdError> {
        loop {
            if let Some(message) = self.take_message()? {
                return message.into_event(&self.endpoint).map(Some);
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(EtcdError::Unreachable {
                        endpoint: self.endpoint.clone(),
                        reason: format!("the watch broke: {}", error_chain(&e)),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The first whole JSON message in the buffer, if one has arrived.
    fn take_message(&mut self) -> Result<Option<WatchJson>, EtcdError> {
        let mut stream = serde_json::Deserializer::from_slice(&self.buf).into_iter::<WatchJson>();
        match stream.next() {
            None => Ok(None),
            Some(Ok(message)) => {
                let used = stream.byte_offset();
                self.buf.drain(..used);
                Ok(Some(message))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            Some(Err(e)) => Err(EtcdError::Protocol {
                endpoint: self.endpoint.clone(),
                reason: format!("a watch message is not JSON: {e}"),
            }),
        }
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its last
/// byte incremented (the prefix always ends with `/`, so no carry is needed).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    match end.last_mut() {
        Some(last) if *last < 0xff => *last += 1,
        // Every key: etcd's "\0" range end.
        _ => return vec![0],
    }
    end
}

async fn read_body(
    endpoint: &str,
    resp: hyper::Response<Incoming>,
    timeout: Duration,
) -> Result<Bytes, EtcdError> {
    match tokio::time::timeout(timeout, resp.into_body().collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) => Err(EtcdError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: error_chain(&e),
        }),
        Err(_) => Err(EtcdError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: format!("the answer did not arrive within {timeout:?}"),
        }),
    }
}

/// etcd's message in an error answer, else the answer as text.
fn error_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<ErrorJson>(bytes)
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

fn parse<'a, T: Deserialize<'a>>(endpoint: &str, bytes: &'a [u8]) -> Result<T, EtcdError> {
    serde_json::from_slice(bytes).map_err(|e| EtcdError::Protocol {
        endpoint: endpoint.to_string(),
        reason: e.to_string(),
    })
}

/// An error and its causes, joined: hyper's own message ("client error (Connect)")
/// says little without them.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === The gateway's JSON ===
// int64 fields come as strings (proto3 JSON mapping); fields at their default value
// are left out.

#[derive(Deserialize, Default)]
struct HeaderJson {
    #[serde(default, deserialize_with = "int64")]
    revision: i64,
}

#[derive(Deserialize)]
struct RangeJson {
    #[serde(default)]
    header: HeaderJson,
    #[serde(default)]
    kvs: Vec<KvJson>,
}

#[derive(Deserialize)]
struct KvJson {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int64")]
    mod_revision: i64,
}

impl KvJson {
    fn decode(self, endpoint: &str) -> Result<KeyValue, EtcdError> {
        let text = |b64: &str, what: &str| -> Result<String, EtcdError> {
            let bytes = B64.decode(b64).map_err(|e| EtcdError::Protocol {
                endpoint: endpoint.to_string(),
                reason: format!("a {what} is not base64: {e}"),
            })?;
            // A document that is not UTF-8 is the loader's to report, by key.
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        Ok(KeyValue {
            key: text(&self.key, "key")?,
            value: text(&self.value, "value")?,
            mod_revision: self.mod_revision,
        })
    }
}

#[derive(Deserialize)]
struct WatchJson {
    result: Option<WatchResultJson>,
    error: Option<ErrorJson>,
}

#[derive(Deserialize)]
struct WatchResultJson {
    #[serde(default)]
    header: HeaderJson,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default, deserialize_with = "int64")]
    compact_revision: i64,
    #[serde(default)]
    events: Vec<EventJson>,
}

#[derive(Deserialize)]
struct EventJson {
    /// `DELETE`, or absent for a put.
    #[serde(default, rename = "type")]
    kind: String,
    kv: KvJson,
}

#[derive(Deserialize)]
struct ErrorJson {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct AuthJson {
    #[serde(default)]
    token: String,
}

impl WatchJson {
    fn into_event(self, endpoint: &str) -> Result<WatchEvent, EtcdError> {
        let Some(result) = self.result else {
            let message = self.error.map(|e| e.message).unwrap_or_default();
            return Ok(WatchEvent::Canceled(format!("the watch failed: {message}")));
        };
        if result.canceled {
            let why = if result.compact_revision > 0 {
                format!("revisions up to {} were compacted", result.compact_revision)
            } else {
                result.cancel_reason
            };
            return Ok(WatchEvent::Canceled(why));
        }
        if result.created && result.events.is_empty() {
            return Ok(WatchEvent::Created);
        }
        let mut changes = Vec::with_capacity(result.events.len());
        for event in result.events {
            let kv = event.kv.decode(endpoint)?;
            changes.push(if event.kind == "DELETE" {
                Change::Delete(kv.key)
            } else {
                Change::Put(kv)
            });
        }
        Ok(WatchEvent::Changes {
            revision: result.header.revision,
            changes,
        })
    }
}

/// An int64 as the gateway writes it: a string of digits (or a number).
fn int64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn range_end_is_the_prefix_plus_one() {
        assert_eq!(range_end("/p/"), b"/p0");
        assert_eq!(range_end(""), [0]);
    }

    #[test]
    fn watch_messages_as_the_gateway_writes_them() {
        let created = r#"{"result":{"header":{"revision":"2"},"created":true}}"#;
        let put = r#"{"result":{"header":{"revision":"3"},"events":[{"kv":{"key":"L3Avci55YW1s","mod_revision":"3","value":"YTogMg=="}}]}}"#;
        let delete = r#"{"result":{"header":{"revision":"4"},"events":[{"type":"DELETE","kv":{"key":"L3Avci55YW1s","mod_revision":"4"}}]}}"#;
        let compacted =
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"7"}}"#;
        let event = |s: &str| {
            serde_json::from_str::<WatchJson>(s)
                .unwrap()
                .into_event("e")
                .unwrap()
        };
        assert!(matches!(event(created), WatchEvent::Created));
        match event(put) {
            WatchEvent::Changes { revision, changes } => {
                assert_eq!(revision, 3);
                assert!(
                    matches!(&changes[..], [Change::Put(kv)] if kv.key == "/p/r.yaml" && kv.value == "a: 2" && kv.mod_revision == 3),
                    "{changes:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            event(delete),
            WatchEvent::Changes { changes, .. } if matches!(&changes[..], [Change::Delete(k)] if k == "/p/r.yaml")
        ));
        assert!(matches!(event(compacted), WatchEvent::Canceled(why) if why.contains("compacted")));
    }
}
