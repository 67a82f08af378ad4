//! `headers`: sets, adds and removes request and response headers (values may use
//! variables such as `${client_ip}` or `${header.NAME}`), rewrites the path
//! (`strip_prefix`, `replace_path_regex`, `add_prefix`, in that order, on the path
//! without its query), and adds `X-Request-Id` when missing (`request_id: true`).
//! See `docs/filters/headers.md`.

mod template;

use std::collections::BTreeMap;

use portcullis_sdk::{Action, ConfigError, Error, Filter, Request, Response};
use regex_lite::Regex;
use serde::Deserialize;

pub use template::{Part, Template, Var};

/// The configuration as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    request: OpsConfig,
    #[serde(default)]
    response: OpsConfig,
    strip_prefix: Option<String>,
    add_prefix: Option<String>,
    replace_path_regex: Option<String>,
    replacement: Option<String>,
    #[serde(default)]
    request_id: bool,
}

/// `request:` / `response:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    #[serde(default)]
    set: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    add: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Validated header operations: removals first, then sets, then adds.
#[derive(Debug, Default)]
pub struct Ops {
    remove: Vec<String>,
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
}

/// The validated filter.
#[derive(Debug)]
pub struct Headers {
    request: Ops,
    response: Ops,
    rewrite: PathRewrite,
    request_id: bool,
    /// No value uses a variable and no request id is made: the common configuration,
    /// applied straight from the configuration, with nothing computed or queued per
    /// request (response headers are then changed in the response phase).
    literal: bool,
}

/// The path rewrite steps, applied in order to the path without its query.
#[derive(Debug, Default)]
pub struct PathRewrite {
    strip_prefix: Option<String>,
    regex: Option<(Regex, String)>,
    add_prefix: Option<String>,
}

impl PathRewrite {
    /// The rewritten `:path` (query kept), or `None` when nothing changes.
    pub fn apply(&self, full: &str) -> Option<String> {
        let (path, query) = match full.find('?') {
            Some(i) => full.split_at(i),
            None => (full, ""),
        };
        let mut p = path.to_string();
        if let Some(prefix) = &self.strip_prefix
            && let Some(rest) = p.strip_prefix(prefix.trim_end_matches('/'))
            && (rest.is_empty() || rest.starts_with('/'))
        {
            p = if rest.is_empty() {
                "/".into()
            } else {
                rest.to_string()
            };
        }
        if let Some((re, replacement)) = &self.regex {
            p = re.replace(&p, replacement.as_str()).into_owned();
        }
        if let Some(prefix) = &self.add_prefix {
            let prefix = prefix.trim_end_matches('/');
            p = if p == "/" {
                format!("{prefix}/")
            } else {
                format!("{prefix}{p}")
            };
        }
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        let out = format!("{p}{query}");
        (out != full).then_some(out)
    }
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        return Err(ConfigError::new(
            field,
            format!("`{name}` is not a valid header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn scalar(field: &str, v: serde_json::Value) -> Result<String, ConfigError> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ConfigError::new(field, "must be a string")),
    }
}

fn templates(
    field: &str,
    map: BTreeMap<String, serde_json::Value>,
) -> Result<Vec<(String, Template)>, ConfigError> {
    map.into_iter()
        .map(|(name, v)| {
            let f = format!("{field}.{name}");
            let n = header_name(&f, &name)?;
            let t = Template::parse(&scalar(&f, v)?).map_err(|m| ConfigError::new(&f, m))?;
            Ok((n, t))
        })
        .collect()
}

/// The headers `Ops` change: the request's or the response's.
trait EditHeaders {
    fn remove(&mut self, name: &str) -> Result<(), Error>;
    fn set(&mut self, name: &str, value: &str) -> Result<(), Error>;
    fn add(&mut self, name: &str, value: &str) -> Result<(), Error>;
}

/// Both handles edit their headers with the same three calls.
macro_rules! edit_headers {
    ($($handle:ty),*) => {$(
        impl EditHeaders for $handle {
            fn remove(&mut self, name: &str) -> Result<(), Error> {
                self.remove_header(name)
            }
            fn set(&mut self, name: &str, value: &str) -> Result<(), Error> {
                self.set_header(name, value)
            }
            fn add(&mut self, name: &str, value: &str) -> Result<(), Error> {
                self.add_header(name, value)
            }
        }
    )*};
}

edit_headers!(Request, Response);

impl Ops {
    fn is_literal(&self) -> bool {
        self.set
            .iter()
            .chain(&self.add)
            .all(|(_, t)| t.is_literal())
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Applies operations whose values are all literal to `to`.
    fn apply_literal(&self, to: &mut impl EditHeaders) -> Result<(), Error> {
        for n in &self.remove {
            to.remove(n)?;
        }
        for (n, t) in &self.set {
            to.set(n, t.literal().unwrap_or_default())?;
        }
        for (n, t) in &self.add {
            to.add(n, t.literal().unwrap_or_default())?;
        }
        Ok(())
    }

    fn new(field: &str, c: OpsConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            remove: c
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| header_name(&format!("{field}.remove[{i}]"), n))
                .collect::<Result<_, _>>()?,
            set: templates(&format!("{field}.set"), c.set)?,
            add: templates(&format!("{field}.add"), c.add)?,
        })
    }
}

fn prefix(field: &str, p: Option<String>) -> Result<Option<String>, ConfigError> {
    match p {
        Some(p) if !p.starts_with('/') => Err(ConfigError::new(field, "must start with `/`")),
        p => Ok(p),
    }
}

/// A random version-4 UUID, or `None` without a random source.
fn uuid_v4() -> Option<String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8)?,
        h.get(8..12)?,
        h.get(12..16)?,
        h.get(16..20)?,
        h.get(20..32)?
    ))
}

/// Variable values of one request, read from the host at most once each.
struct Vars<'a> {
    req: &'a Request,
    request_id: Option<String>,
}

impl Vars<'_> {
    fn value(&self, v: &Var) -> String {
        let r = self.req;
        let got = match v {
            Var::ClientIp => r.client_ip().map(|ip| ip.map(|i| i.to_string())),
            Var::Host => r.authority().map(Some),
            Var::Path => r.path().map(Some),
            Var::Method => r.method().map(Some),
            Var::Route => r.route_name().map(Some),
            Var::RequestId => match &self.request_id {
                Some(id) => Ok(Some(id.clone())),
                None => r.header("x-request-id"),
            },
            Var::Header(h) => r.header(h),
        };
        got.ok().flatten().unwrap_or_default()
    }
}

impl Filter for Headers {
    type Config = Config;
    // Response headers are queued in the request phase when a value uses a variable;
    // literal ones are set in the response phase (see `wants_response`).
    const ON_RESPONSE: bool = false;

    fn new(c: Config) -> Result<Self, ConfigError> {
        let regex = match (c.replace_path_regex, c.replacement) {
            (Some(re), Some(rep)) => Some((
                Regex::new(&re)
                    .map_err(|e| ConfigError::new("replace_path_regex", e.to_string()))?,
                rep,
            )),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "replacement",
                    "replace_path_regex needs a replacement",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "replace_path_regex",
                    "replacement needs a replace_path_regex",
                ));
            }
            (None, None) => None,
        };
        let request = Ops::new("request", c.request)?;
        let response = Ops::new("response", c.response)?;
        Ok(Self {
            literal: !c.request_id && request.is_literal() && response.is_literal(),
            request,
            response,
            rewrite: PathRewrite {
                strip_prefix: prefix("strip_prefix", c.strip_prefix)?,
                regex,
                add_prefix: prefix("add_prefix", c.add_prefix)?,
            },
            request_id: c.request_id,
        })
    }

    fn wants_response(&self) -> bool {
        self.literal && !self.response.is_empty()
    }

    fn on_response(&self, resp: &mut Response) -> Result<Action, Error> {
        if self.literal {
            self.response.apply_literal(resp)?;
        }
        Ok(Action::Continue)
    }

    fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
        if self.literal {
            let path = if self.rewrite.is_noop() {
                None
            } else {
                Some(req.path()?)
            };
            self.request.apply_literal(req)?;
            if let Some(new) = path.and_then(|p| self.rewrite.apply(&p)) {
                req.set_path(&new)?;
            }
            return Ok(Action::Continue);
        }
        let mut generated = None;
        if self.request_id && req.header("x-request-id")?.is_none() {
            let id = match req.property_str(&["request", "id"])? {
                Some(id) if !id.is_empty() => Some(id),
                _ => uuid_v4(),
            };
            generated = id;
        }
        // Every value is computed from the request as it arrived, before any change.
        let vars = Vars {
            req,
            request_id: generated.clone(),
        };
        let expand = |ops: &[(String, Template)]| -> Vec<(String, String)> {
            ops.iter()
                .map(|(n, t)| (n.clone(), t.expand(|v| vars.value(v))))
                .collect()
        };
        let (req_set, req_add) = (expand(&self.request.set), expand(&self.request.add));
        let (resp_set, resp_add) = (expand(&self.response.set), expand(&self.response.add));
        let path = if self.rewrite.is_noop() {
            None
        } else {
            Some(req.path()?)
        };

        if let Some(id) = &generated {
            req.set_header("x-request-id", id)?;
        }
        for n in &self.request.remove {
            req.remove_header(n)?;
        }
        for (n, v) in &req_set {
            req.set_header(n, v)?;
        }
        for (n, v) in &req_add {
            req.add_header(n, v)?;
        }
        for n in &self.response.remove {
            req.remove_response_header(n.clone());
        }
        for (n, v) in resp_set {
            req.set_response_header(n, v);
        }
        for (n, v) in resp_add {
            req.add_response_header(n, v);
        }
        if let Some(new) = path.and_then(|p| self.rewrite.apply(&p)) {
            req.set_path(&new)?;
        }
        Ok(Action::Continue)
    }
}

impl PathRewrite {
    fn is_noop(&self) -> bool {
        self.strip_prefix.is_none() && self.regex.is_none() && self.add_prefix.is_none()
    }
}

portcullis_sdk::export_filter!(Headers);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(json: &str) -> Result<Headers, ConfigError> {
        portcullis_sdk::config::parse::<Config>(json.as_bytes()).and_then(Headers::new)
    }

    #[test]
    fn path_rewrites() {
        let f = filter(r#"{"strip_prefix":"/api","add_prefix":"/v2"}"#).unwrap();
        assert_eq!(
            f.rewrite.apply("/api/users?x=1").as_deref(),
            Some("/v2/users?x=1")
        );
        assert_eq!(f.rewrite.apply("/api").as_deref(), Some("/v2/"));
        assert_eq!(
            f.rewrite.apply("/apix").as_deref(),
            Some("/v2/apix"),
            "segment boundary"
        );
        let f = filter(r#"{"strip_prefix":"/api/"}"#).unwrap();
        assert_eq!(f.rewrite.apply("/api/users").as_deref(), Some("/users"));
        assert_eq!(f.rewrite.apply("/other"), None);
        let f = filter(r#"{"replace_path_regex":"^/old/(.*)","replacement":"/new/${1}"}"#).unwrap();
        assert_eq!(
            f.rewrite.apply("/old/a/b?q=/old/").as_deref(),
            Some("/new/a/b?q=/old/")
        );
        assert_eq!(f.rewrite.apply("/keep"), None);
        let f = filter(r#"{"replace_path_regex":"^/x","replacement":""}"#).unwrap();
        assert_eq!(
            f.rewrite.apply("/x").as_deref(),
            Some("/"),
            "a path keeps its slash"
        );
    }

    #[test]
    fn config_shapes() {
        let f = filter(
            r#"{"request":{"set":{"X-Env":"prod","x-n":2},"add":{"x-tag":"${route}"},"remove":["x-debug"]},
                "response":{"set":{"server":"portcullis"},"remove":["x-powered-by"]},"request_id":true}"#,
        )
        .unwrap();
        assert_eq!(f.request.set.len(), 2);
        assert_eq!(f.request.set[0].0, "x-env");
        assert_eq!(f.request.set[1].1, Template(vec![Part::Lit("2".into())]));
        assert_eq!(f.request.add[0].1, Template(vec![Part::Var(Var::Route)]));
        assert_eq!(f.response.remove, vec!["x-powered-by".to_string()]);
        assert!(f.request_id);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = |j: &str| filter(j).unwrap_err().field;
        assert_eq!(
            e(r#"{"request":{"set":{"x-a":"${bogus}"}}}"#),
            "request.set.x-a"
        );
        assert_eq!(
            e(r#"{"response":{"add":{"bad name":"v"}}}"#),
            "response.add.bad name"
        );
        assert_eq!(
            e(r#"{"request":{"remove":["ok","no pe"]}}"#),
            "request.remove[1]"
        );
        assert_eq!(e(r#"{"request":{"set":{"x":[1]}}}"#), "request.set.x");
        assert_eq!(
            e(r#"{"replace_path_regex":"("," replacement":"x"}"#),
            " replacement"
        );
        assert_eq!(
            e(r#"{"replace_path_regex":"(","replacement":"x"}"#),
            "replace_path_regex"
        );
        assert_eq!(e(r#"{"replace_path_regex":"x"}"#), "replacement");
        assert_eq!(e(r#"{"strip_prefix":"api"}"#), "strip_prefix");
        assert_eq!(e(r#"{"request":{"sett":{}}}"#), "request.sett");
    }

    #[test]
    fn uuids() {
        let id = uuid_v4().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(uuid_v4(), uuid_v4());
    }
}
