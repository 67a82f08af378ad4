//! `cors`: answers CORS preflight requests and adds the CORS headers to responses for
//! allowed origins. See `docs/filters/cors.md`.

use portcullis_sdk::config::Duration;
use portcullis_sdk::{Action, ConfigError, Error, Filter, LocalResponse, Request};
use serde::Deserialize;

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    allow_origins: Vec<String>,
    #[serde(default = "default_methods")]
    allow_methods: Vec<String>,
    allow_headers: Option<Vec<String>>,
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    allow_credentials: bool,
    max_age: Option<Duration>,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

/// The validated filter.
#[derive(Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: String,
    headers: Option<String>,
    expose: Option<String>,
    credentials: bool,
    max_age: Option<u64>,
}

impl Cors {
    /// The `Access-Control-Allow-Origin` value for `origin`, if it is allowed.
    pub fn allow_origin(&self, origin: &str) -> Option<String> {
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return Some(origin.to_string());
        }
        if self.any_origin {
            // `*` may not be combined with credentials: echo the origin instead.
            return Some(if self.credentials {
                origin.to_string()
            } else {
                "*".to_string()
            });
        }
        None
    }

    /// The answer to a preflight from `origin` asking for `requested_headers`.
    pub fn preflight(&self, origin: &str, requested_headers: Option<&str>) -> LocalResponse {
        let Some(allow) = self.allow_origin(origin) else {
            return LocalResponse::new(403).body("CORS origin not allowed\n");
        };
        let mut r = LocalResponse::new(204)
            .header("access-control-allow-origin", allow)
            .header("access-control-allow-methods", self.methods.clone())
            .header("vary", "Origin");
        let headers = self
            .headers
            .clone()
            .or(requested_headers.map(str::to_string));
        if let Some(h) = headers.filter(|h| !h.is_empty()) {
            r = r.header("access-control-allow-headers", h);
        }
        if self.credentials {
            r = r.header("access-control-allow-credentials", "true");
        }
        if let Some(age) = self.max_age {
            r = r.header("access-control-max-age", age.to_string());
        }
        r
    }

    /// Headers for the actual response to an allowed `origin`.
    pub fn response_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        let Some(allow) = self.allow_origin(origin) else {
            return Vec::new();
        };
        let mut h = vec![
            ("access-control-allow-origin", allow),
            ("vary", "Origin".into()),
        ];
        if self.credentials {
            h.push(("access-control-allow-credentials", "true".into()));
        }
        if let Some(e) = &self.expose {
            h.push(("access-control-expose-headers", e.clone()));
        }
        h
    }
}

fn token_list(field: &str, list: &[String]) -> Result<String, ConfigError> {
    for (i, t) in list.iter().enumerate() {
        if t.is_empty()
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(ConfigError::new(
                format!("{field}[{i}]"),
                format!("`{t}` is not a token"),
            ));
        }
    }
    Ok(list.join(", "))
}

impl Filter for Cors {
    type Config = Config;
    // No on_response: response headers, if any, are queued in the request phase.
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        if c.allow_origins.is_empty() {
            return Err(ConfigError::new(
                "allow_origins",
                "list the allowed origins, or \"*\"",
            ));
        }
        let mut origins = Vec::new();
        let mut any_origin = false;
        for (i, o) in c.allow_origins.iter().enumerate() {
            if o == "*" {
                any_origin = true;
            } else if o.starts_with("http://") || o.starts_with("https://") {
                origins.push(o.trim_end_matches('/').to_string());
            } else {
                return Err(ConfigError::new(
                    format!("allow_origins[{i}]"),
                    "an origin is scheme://host[:port], or \"*\"",
                ));
            }
        }
        let methods = token_list("allow_methods", &c.allow_methods)?;
        let headers = match &c.allow_headers {
            Some(h) => Some(token_list("allow_headers", h)?),
            None => None,
        };
        let expose = token_list("expose_headers", &c.expose_headers)?;
        Ok(Self {
            any_origin,
            origins,
            methods,
            headers,
            expose: (!expose.is_empty()).then_some(expose),
            credentials: c.allow_credentials,
            max_age: c.max_age.map(|d| d.0.as_secs()),
        })
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        // One host call for every header a preflight needs.
        let [origin, method, preflight, requested] = req.header_values([
            "origin",
            ":method",
            "access-control-request-method",
            "access-control-request-headers",
        ])?;
        let Some(origin) = origin else {
            return Ok(Action::Continue);
        };
        if method.as_deref() == Some("OPTIONS") && preflight.is_some() {
            return Ok(Action::Respond(
                self.preflight(&origin, requested.as_deref()),
            ));
        }
        for (n, v) in self.response_headers(&origin) {
            if n == "vary" {
                req.add_response_header(n, v);
            } else {
                req.set_response_header(n, v);
            }
        }
        Ok(Action::Continue)
    }
}

portcullis_sdk::export_filter!(Cors);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Result<Cors, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(Cors::new)
    }

    #[test]
    fn origins() {
        let f = filter(r#"{"allow_origins":["https://app.example.com"],"max_age":"10m","expose_headers":["x-a"]}"#).unwrap();
        assert_eq!(
            f.allow_origin("https://app.example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(f.allow_origin("https://evil.example.com"), None);
        let p = f.preflight("https://app.example.com", Some("x-b"));
        assert_eq!(p.status, 204);
        assert_eq!(p.header_value("access-control-allow-headers"), Some("x-b"));
        assert_eq!(p.header_value("access-control-max-age"), Some("600"));
        assert_eq!(f.preflight("https://evil.example.com", None).status, 403);
        assert_eq!(f.response_headers("https://app.example.com").len(), 3);
        let any = filter(r#"{"allow_origins":["*"]}"#).unwrap();
        assert_eq!(any.allow_origin("https://x").as_deref(), Some("*"));
        let cred = filter(r#"{"allow_origins":["*"],"allow_credentials":true}"#).unwrap();
        assert_eq!(cred.allow_origin("https://x").as_deref(), Some("https://x"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |j: &str| filter(j).unwrap_err().field;
        assert_eq!(e(r#"{"allow_origins":[]}"#), "allow_origins");
        assert_eq!(
            e(r#"{"allow_origins":["example.com"]}"#),
            "allow_origins[0]"
        );
        assert_eq!(
            e(r#"{"allow_origins":["*"],"allow_methods":["GET","BAD METHOD"]}"#),
            "allow_methods[1]"
        );
    }
}
