//! `access_log:`: the access log's format and where it goes.

use std::path::PathBuf;

use super::Origin;
use super::walk::{Cx, Field, Fields};

/// `access_log:` — one line per request, written by the proxy itself
/// (docs/operations.md#access-log). Without it, the lines go to the process log.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    /// How a line is written.
    pub format: AccessLogFormat,
    /// The file lines are appended to (reopened on SIGUSR1); `None`: standard output.
    pub path: Option<PathBuf>,
    /// Where it was declared.
    pub origin: Origin,
}

/// The format of an access line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// `key=value` pairs, values with spaces or quotes quoted.
    Text,
    /// One JSON object per line.
    Json,
}

/// Decodes `access_log: { format, path }`.
pub(crate) fn access_log(cx: &mut Cx, field: &Field) -> Option<AccessLogConfig> {
    let mut f = Fields::new(cx, field)?;
    let format = f.take("format").map(|v| {
        v.choice(
            cx,
            &[
                ("text", AccessLogFormat::Text),
                ("json", AccessLogFormat::Json),
            ],
        )
    });
    let path = f.take("path").map(|v| {
        let text = v.string(cx)?;
        if text == "stdout" {
            return Some(None);
        }
        // Not recorded as a file to watch: the log changes with every request.
        let path = cx.base.join(&text);
        match path.parent() {
            Some(dir) if dir.is_dir() => Some(Some(path)),
            _ => {
                v.error(
                    cx,
                    format!(
                        "the directory of `{text}` does not exist ({})",
                        path.display()
                    ),
                );
                None
            }
        }
    });
    f.finish(cx);
    Some(AccessLogConfig {
        format: format.unwrap_or(Some(AccessLogFormat::Json))?,
        path: path.unwrap_or(Some(None))?,
        origin: cx.origin(field.line),
    })
}
