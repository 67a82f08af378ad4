//! Collects what the host logs while a test runs: the guest's own lines (the `filter`
//! target that `proxy_log` and WASI output use), failure reports and host warnings.
//!
//! The host reports all of this through `tracing`, so the kit listens there instead of
//! adding hooks to the runtime: a dispatcher set as the default for the running task
//! (guest code runs on its worker's thread, so it sees it) and no one else's.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use super::outcome::{FailureReport, LogLevel, LogLine};
use crate::wasm::ShadowDecision;

/// What one run logged.
#[derive(Debug, Default)]
pub(crate) struct Captured {
    pub logs: Vec<LogLine>,
    pub failures: Vec<FailureReport>,
    pub warnings: Vec<String>,
    pub shadow: Vec<ShadowDecision>,
}

/// A tracing layer filling a shared [`Captured`].
#[derive(Clone, Default)]
pub(crate) struct Capture(Arc<Mutex<Captured>>);

impl Capture {
    /// A dispatcher that sends every event to this capture only.
    pub fn dispatch(&self) -> Dispatch {
        Dispatch::new(tracing_subscriber::registry().with(self.clone()))
    }

    /// Everything captured so far; the capture starts empty again.
    pub fn take(&self) -> Captured {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let level = *meta.level();
        if meta.target() == "filter" {
            c.logs.push(LogLine {
                level: log_level(level),
                filter: fields.filter.unwrap_or_default(),
                message: fields.message,
            });
        } else if meta.target() == "portcullis::shadow" {
            let filter = fields.filter.unwrap_or_default();
            let status = fields.rest.iter().find(|(k, _)| *k == "status");
            c.shadow
                .push(match status.and_then(|(_, v)| v.parse().ok()) {
                    Some(status) => ShadowDecision::WouldDeny { filter, status },
                    None => ShadowDecision::WouldModify { filter },
                });
        } else if !meta.target().starts_with("portcullis") {
            // wasmtime's and others' chatter is not about the filter.
        } else if let (Level::ERROR, Some(kind)) = (level, fields.kind.clone()) {
            c.failures.push(FailureReport {
                filter: fields.filter.unwrap_or_default(),
                kind,
                message: fields.message,
            });
        } else if level <= Level::WARN {
            let mut text = fields.message;
            for (k, v) in &fields.rest {
                let _ = write!(text, " {k}={v}");
            }
            c.warnings.push(text);
        }
    }
}

fn log_level(level: Level) -> LogLevel {
    match level {
        Level::TRACE => LogLevel::Trace,
        Level::DEBUG => LogLevel::Debug,
        Level::INFO => LogLevel::Info,
        Level::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

/// The fields of one event that the kit reads.
#[derive(Default)]
struct Fields {
    message: String,
    filter: Option<String>,
    kind: Option<String>,
    rest: Vec<(&'static str, String)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "filter" => self.filter = Some(value),
            "kind" => self.kind = Some(value),
            other => self.rest.push((other, value)),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}
