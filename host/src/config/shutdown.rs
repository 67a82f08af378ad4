//! `shutdown:`: how the process stops on SIGTERM / SIGINT.

use super::ShutdownConfig;
use super::walk::{Cx, Field, Fields};

/// Decodes `shutdown: { drain_timeout, accept_grace }`.
pub(crate) fn shutdown(cx: &mut Cx, field: &Field) -> Option<ShutdownConfig> {
    let mut f = Fields::new(cx, field)?;
    let d = ShutdownConfig::default();
    let drain_timeout = f.take("drain_timeout").map(|v| v.duration(cx));
    let accept_grace = f.take("accept_grace").map(|v| v.duration(cx));
    f.finish(cx);
    Some(ShutdownConfig {
        drain_timeout: drain_timeout.unwrap_or(Some(d.drain_timeout))?,
        accept_grace: accept_grace.unwrap_or(Some(d.accept_grace))?,
        origin: Some(cx.origin(field.line)),
    })
}
