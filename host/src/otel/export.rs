//! The export of finished spans: a bounded queue the request path pushes to without
//! waiting, and a thread that batches the queue, encodes each batch as an OTLP
//! `ExportTraceServiceRequest` (protobuf) and POSTs it to the collector.
//!
//! A thread rather than a task: the workers' runtimes are per-thread and busy with
//! requests, and an export waiting on a slow collector must not sit in one of them.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message as _;

use super::{SpanRecord, Value};
use crate::config::TracingConfig;
use crate::tls::https::{self, Connector};

/// Spans waiting for export at most; past this, new spans are dropped (and counted).
pub const QUEUE_SPANS: usize = 8192;
/// Spans in one export at most.
const BATCH_SPANS: usize = 512;
/// How long the first span of a batch waits for others before the batch goes.
const BATCH_DELAY: Duration = Duration::from_millis(200);

/// The sending end of the export queue.
pub(super) struct Queue {
    tx: SyncSender<SpanRecord>,
}

impl Queue {
    /// Starts the export thread of `config`; it ends once the queue's last sender is
    /// dropped, after sending what was queued.
    pub(super) fn start(config: &TracingConfig) -> Queue {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_SPANS);
        let config = config.clone();
        let spawned = std::thread::Builder::new()
            .name("portcullis-otlp".into())
            .spawn(move || run(&config, &rx));
        if let Err(e) = spawned {
            // The receiver went with the closure: every span counts as dropped.
            tracing::warn!("cannot start the OTLP export thread: {e}; spans are dropped");
        }
        Queue { tx }
    }

    /// Queues `span`, or drops it (counted) when the queue is full.
    pub(super) fn push(&self, span: SpanRecord) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                crate::metrics::global().trace_spans_dropped("queue_full", 1);
            }
        }
    }
}

/// The export thread: batches from `rx` until every sender is gone.
fn run(config: &TracingConfig, rx: &Receiver<SpanRecord>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot start the OTLP exporter's runtime: {e}; spans are dropped");
            return;
        }
    };
    let exporter = match runtime.block_on(async { Exporter::new(config) }) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("cannot build the OTLP client: {e}; spans are dropped");
            return;
        }
    };
    let mut batch = Vec::with_capacity(BATCH_SPANS);
    loop {
        let Ok(first) = rx.recv() else { return };
        batch.push(first);
        let deadline = Instant::now() + BATCH_DELAY;
        let mut closed = false;
        while batch.len() < BATCH_SPANS {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(span) => batch.push(span),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let n = batch.len() as u64;
        match runtime.block_on(exporter.send(std::mem::take(&mut batch))) {
            Ok(()) => crate::metrics::global().trace_spans_exported(n),
            Err(why) => {
                crate::metrics::global().trace_spans_dropped("export_failed", n);
                exporter.failed(&why);
            }
        }
        if closed {
            return;
        }
    }
}

/// The collector's client and what every export carries.
struct Exporter {
    client: Client<Connector, Full<Bytes>>,
    endpoint: http::Uri,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    timeout: Duration,
    resource: Resource,
    /// The last failure was logged at warn: the next ones go to debug until one
    /// export succeeds, so a dead collector is one warning, not one per batch.
    warned: std::cell::Cell<bool>,
}

impl Exporter {
    fn new(config: &TracingConfig) -> Result<Self, String> {
        let roots = https::roots(None).map_err(|e| e.to_string())?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.timeout));
        http.set_nodelay(true);
        Ok(Self {
            client: https::client(tls, http),
            endpoint: config.endpoint.clone(),
            headers: config.headers.clone(),
            timeout: config.timeout,
            resource: Resource {
                attributes: vec![key_value(
                    "service.name",
                    &Value::Str(config.service_name.as_str().into()),
                )],
                ..Default::default()
            },
            warned: std::cell::Cell::new(false),
        })
    }

    /// POSTs `spans` as one OTLP request; `Err` says why they were not taken.
    async fn send(&self, spans: Vec<SpanRecord>) -> Result<(), String> {
        let body = encode(&self.resource, spans);
        let mut req = http::Request::post(self.endpoint.clone())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| format!("{e}"))?;
            let status = resp.status();
            // Read to the end so that the connection goes back to the pool.
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the collector answered {status}"))
            }
        };
        let result = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        if result.is_ok() {
            self.warned.set(false);
        }
        result
    }

    fn failed(&self, why: &str) {
        if self.warned.replace(true) {
            tracing::debug!(endpoint = %self.endpoint, "span export failed: {why}");
        } else {
            tracing::warn!(endpoint = %self.endpoint, "span export failed (its spans are dropped; further failures are logged at debug until one succeeds): {why}");
        }
    }
}

/// `spans` as an OTLP/protobuf `ExportTraceServiceRequest`.
fn encode(resource: &Resource, spans: Vec<SpanRecord>) -> Vec<u8> {
    let spans = spans.into_iter().map(span).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "portcullis".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn span(s: SpanRecord) -> Span {
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state,
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: s.name,
        kind: s.kind as i32,
        start_time_unix_nano: s.start,
        end_time_unix_nano: s.end,
        attributes: s.attributes.iter().map(|(k, v)| key_value(k, v)).collect(),
        status: s.error.map(|message| Status {
            message,
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

fn key_value(key: &str, value: &Value) -> KeyValue {
    let value = match value {
        Value::Str(s) => any_value::Value::StringValue(s.to_string()),
        Value::Int(n) => any_value::Value::IntValue(*n),
    };
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
