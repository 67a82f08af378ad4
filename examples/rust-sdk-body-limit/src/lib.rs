//! A request body size limit, written with `portcullis-sdk`.
//!
//! ```yaml
//! config: { max_body: 1KiB, require_length: false }
//! ```
//!
//! - A request that declares a `content-length` above `max_body` is answered 413 by the
//!   filter, before a byte of its body is read or forwarded.
//! - With `require_length: true`, a request that streams a body of unknown length
//!   (`transfer-encoding`, no `content-length`) is answered 411.
//! - Every request that passes goes upstream with `x-body-limit: <max_body in bytes>`,
//!   so the upstream knows what was enforced.
//!
//! The decision uses the request headers only: the proxy has already rejected a request
//! whose `content-length` is malformed or contradicts its `transfer-encoding`.

use portcullis_sdk::{Action, ConfigError, Error, Filter, Request};
use serde::Deserialize;

/// The configuration as users write it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The largest body accepted: bytes, or with a KiB / MiB / GiB suffix.
    max_body: Size,
    /// Refuse bodies of unknown length (411) instead of letting them through.
    #[serde(default)]
    require_length: bool,
}

/// A size written as a number of bytes or as `64KiB`, `1MiB`, `2GiB`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            Size::Bytes(n) => return Ok(*n),
            Size::Text(t) => t.trim(),
        };
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size (e.g. 1024, 64KiB, 1MiB)"))?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown size unit `{other}` (use KiB, MiB or GiB)")),
        };
        number
            .checked_mul(scale)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

/// The filter, built once per configuration.
struct BodyLimit {
    max_body: u64,
    require_length: bool,
}

impl Filter for BodyLimit {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        let max_body = config
            .max_body
            .bytes()
            .map_err(|message| ConfigError::new("max_body", message))?;
        Ok(Self {
            max_body,
            require_length: config.require_length,
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        match req.header("content-length")? {
            Some(length) => {
                // The proxy has validated content-length; a value we cannot read as a
                // number is still no reason to let an unbounded body through.
                let Ok(length) = length.trim().parse::<u64>() else {
                    return Ok(Action::deny(400, "invalid content-length\n"));
                };
                if length > self.max_body {
                    return Ok(Action::deny(
                        413,
                        format!(
                            "request body too large: {length} bytes, the limit is {} bytes\n",
                            self.max_body
                        ),
                    ));
                }
            }
            None if self.require_length && req.header("transfer-encoding")?.is_some() => {
                return Ok(Action::deny(
                    411,
                    "a content-length is required for request bodies\n",
                ));
            }
            None => {}
        }
        req.set_header("x-body-limit", &self.max_body.to_string())?;
        Ok(Action::Continue)
    }
}

portcullis_sdk::export_filter!(BodyLimit);
