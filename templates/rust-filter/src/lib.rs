//! My filter: adds a configured header to every request, and answers 403 itself when
//! the request carries a header it is told to refuse.
//!
//! ```yaml
//! config: { add: { x-my-filter: "hello" }, refuse_header: x-forbidden }
//! ```
//!
//! Start here: `Config` is what users write under `config:` (checked by serde, then by
//! `new`); `on_request` runs on the request headers, `on_response` on the response
//! headers. Each returns `Action::Continue` or an answer (`Action::deny`, `redirect`).

use std::collections::BTreeMap;

use portcullis_sdk::{Action, ConfigError, Error, Filter, Request, Response};
use serde::Deserialize;

/// The configuration as users write it. Unknown fields are errors, as in the proxy's
/// own configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Headers to set on every request going upstream.
    #[serde(default)]
    add: BTreeMap<String, String>,
    /// A request header whose presence gets the request refused with 403.
    #[serde(default)]
    refuse_header: Option<String>,
}

/// The filter, built once per configuration: validate here, so the hot path never has
/// to.
pub struct MyFilter {
    add: Vec<(String, String)>,
    refuse_header: Option<String>,
}

impl Filter for MyFilter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, ConfigError> {
        for name in config.add.keys() {
            if name.is_empty() || name.starts_with(':') {
                return Err(ConfigError::new(
                    format!("add.{name}"),
                    "must be a regular header name",
                ));
            }
        }
        Ok(Self {
            // Header names are lower-case on the wire in HTTP/2 and in proxy-wasm.
            add: config
                .add
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            refuse_header: config.refuse_header.map(|h| h.to_ascii_lowercase()),
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        if let Some(name) = &self.refuse_header {
            if req.header(name)?.is_some() {
                return Ok(Action::deny(403, format!("{name} is not allowed here\n")));
            }
        }
        for (name, value) in &self.add {
            req.set_header(name, value)?;
        }
        Ok(Action::Continue)
    }

    fn on_response(&self, resp: &mut Response) -> Result<Action, Error> {
        resp.set_header("x-filtered-by", "my-filter")?;
        Ok(Action::Continue)
    }
}

portcullis_sdk::export_filter!(MyFilter);

// The filter's logic runs natively too: `cargo test` (no wasm target needed).
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<MyFilter, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(MyFilter::new)
    }

    #[test]
    fn accepts_a_good_configuration() -> Result<(), ConfigError> {
        let filter = parse(r#"{"add": {"X-Env": "prod"}, "refuse_header": "X-Debug"}"#)?;
        assert_eq!(filter.add, vec![("x-env".to_string(), "prod".to_string())]);
        assert_eq!(filter.refuse_header.as_deref(), Some("x-debug"));
        Ok(())
    }

    #[test]
    fn refuses_pseudo_headers_and_unknown_fields() {
        assert_eq!(
            parse(r#"{"add": {":path": "/x"}}"#).err().map(|e| e.field),
            Some("add.:path".to_string())
        );
        assert!(
            parse(r#"{"ad": {}}"#).is_err(),
            "a misspelt field must be refused"
        );
    }
}
