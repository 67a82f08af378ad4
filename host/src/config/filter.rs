//! `filters:`: where a filter's module comes from, its plugin configuration, its failure
//! policy and its sandbox limits; and `services:`, modules on no route, written the
//! same way without what only concerns requests (`on_error`, `async`).

use super::walk::{Cx, Field, Fields};
use super::yaml::Kind;
use super::{FilterConfig, FilterLimits, FilterSource, ModuleIntegrity, OnError};

/// Decodes one `filters[]` item.
pub(crate) fn filter(cx: &mut Cx, item: &Field) -> Option<FilterConfig> {
    module(cx, item, "filters")
}

/// Decodes one `services[]` item: a filter's keys, less `on_error` and `async` (a
/// service serves no request, and its callbacks are its root context's).
pub(crate) fn service(cx: &mut Cx, item: &Field) -> Option<FilterConfig> {
    module(cx, item, "services")
}

fn module(cx: &mut Cx, item: &Field, section: &str) -> Option<FilterConfig> {
    let service = section == "services";
    let (mut f, name) = Fields::named(cx, item, section)?;
    let builtin = f.take("builtin");
    let wasm = f.take("wasm");
    let source = match (&builtin, &wasm) {
        (Some(b), None) => b.string(cx).map(FilterSource::Builtin),
        (None, Some(w)) => w.existing_file(cx).map(FilterSource::Wasm),
        (Some(_), Some(w)) => {
            w.error(cx, "give either builtin or wasm, not both");
            None
        }
        (None, None) => {
            cx.error(
                f.line(),
                f.path(),
                "needs a module: `builtin: NAME` or `wasm: FILE`",
            );
            None
        }
    };
    let sha256 = f.take("sha256").map(|v| {
        super::integrity::sha256(cx, &v, builtin.is_some()).map(|h| (h, cx.origin(v.line)))
    });
    let root_id = f.take("root_id").map(|v| v.string(cx));
    let config = f.take("config").map(|v| raw_config(&v));
    // Left to `finish` for a service, which reports them as unknown keys.
    let on_error = (!service)
        .then(|| f.take("on_error"))
        .flatten()
        .map(|v| v.choice(cx, &[("deny", OnError::Deny), ("allow", OnError::Allow)]));
    let limits = f.take("limits").map(|v| limits(cx, &v));
    let asynchronous = (!service)
        .then(|| f.take("async"))
        .flatten()
        .map(|v| v.bool(cx));
    f.finish(cx);
    Some(FilterConfig {
        name: name?,
        source: source?,
        root_id: root_id.unwrap_or(Some(String::new()))?,
        config: config.unwrap_or_default(),
        on_error: on_error.unwrap_or(Some(OnError::Deny))?,
        limits: limits.unwrap_or(Some(FilterLimits::default()))?,
        asynchronous: asynchronous.unwrap_or(Some(false))?,
        integrity: ModuleIntegrity {
            sha256: match sha256 {
                Some(pin) => Some(pin?),
                None => None,
            },
            wasm_origin: wasm.map(|w| cx.origin(w.line)),
            // Set once every file is read: `require_signature` may be in another.
            signers: None,
        },
        origin: cx.origin(item.line),
    })
}

/// The plugin configuration as `on_configure` receives it: a YAML string as its raw
/// bytes (as Envoy hands over a `StringValue`), anything else as compact JSON.
fn raw_config(field: &Field) -> Vec<u8> {
    match &field.node.kind {
        Kind::Scalar { text, plain: false } => text.as_bytes().to_vec(),
        Kind::Scalar { text, plain: true } if field.node.to_json().is_string() => {
            text.as_bytes().to_vec()
        }
        _ => field.node.to_json().to_string().into_bytes(),
    }
}

fn limits(cx: &mut Cx, field: &Field) -> Option<FilterLimits> {
    let mut f = Fields::new(cx, field)?;
    let d = FilterLimits::default();
    let memory = f.take("memory").map(|v| v.size(cx));
    let callback_timeout = f.take("callback_timeout").map(|v| v.duration(cx));
    f.finish(cx);
    Some(FilterLimits {
        memory: memory.unwrap_or(Some(d.memory))?,
        callback_timeout: callback_timeout.unwrap_or(Some(d.callback_timeout))?,
    })
}
