//! Header value templates: literal text with `${variable}`s, parsed once at configure
//! time and expanded per request.

/// A variable a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `${client_ip}`: the peer's IP address.
    ClientIp,
    /// `${host}`: `:authority`.
    Host,
    /// `${path}`: `:path`, query included, as received by this filter.
    Path,
    /// `${method}`.
    Method,
    /// `${route}`: the route's name.
    Route,
    /// `${request_id}`: `X-Request-Id` (generated first with `request_id: true`).
    RequestId,
    /// `${header.NAME}`: a request header (empty if absent).
    Header(String),
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text copied as is.
    Lit(String),
    /// A variable's value.
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub Vec<Part>);

impl Template {
    /// Parses `text`; `$${` writes a literal `${`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains(['\r', '\n', '\0']) {
            return Err("a header value must not contain CR, LF or NUL".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            let (before, after) = rest.split_at(i);
            if let Some(b) = before.strip_suffix('$') {
                lit.push_str(b);
                lit.push_str("${");
                rest = after.get(2..).unwrap_or_default();
                continue;
            }
            lit.push_str(before);
            let after = after.get(2..).unwrap_or_default();
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let name = after.get(..end).unwrap_or_default();
            let var = match name {
                "client_ip" => Var::ClientIp,
                "host" => Var::Host,
                "path" => Var::Path,
                "method" => Var::Method,
                "route" => Var::Route,
                "request_id" => Var::RequestId,
                _ => match name.strip_prefix("header.") {
                    Some(h) if !h.is_empty() => Var::Header(h.to_ascii_lowercase()),
                    _ => {
                        return Err(format!(
                            "unknown variable `${{{name}}}`: use client_ip, host, path, method, \
                             route, request_id or header.NAME"
                        ));
                    }
                },
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(var));
            rest = after.get(end + 1..).unwrap_or_default();
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template(parts))
    }

    /// Whether the template uses no variable.
    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// The value of a template that uses no variable.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }

    /// The variables used.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.0.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// Expands with `value` giving each variable's value (CR/LF in values dropped, so
    /// a client cannot inject a header through `${header.x}`).
    pub fn expand(&self, mut value: impl FnMut(&Var) -> String) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) => out.extend(
                    value(v)
                        .chars()
                        .filter(|c| !matches!(c, '\r' | '\n' | '\0')),
                ),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_expand() {
        let t = Template::parse("r=${route} ip=${client_ip} ua=${header.User-Agent}!").unwrap();
        assert_eq!(t.0.len(), 7);
        let s = t.expand(|v| match v {
            Var::Route => "api".into(),
            Var::ClientIp => "1.2.3.4".into(),
            Var::Header(h) => format!("<{h}>\r\nx: y"),
            _ => String::new(),
        });
        assert_eq!(s, "r=api ip=1.2.3.4 ua=<user-agent>x: y!");
        assert!(Template::parse("plain").unwrap().is_literal());
        assert_eq!(Template::parse("plain").unwrap().literal(), Some("plain"));
        assert_eq!(Template::parse("").unwrap().literal(), Some(""));
        assert_eq!(t.literal(), None);
        assert_eq!(
            Template::parse("$${x}").unwrap(),
            Template(vec![Part::Lit("${x}".into())])
        );
        assert_eq!(Template::parse("").unwrap(), Template(vec![]));
    }

    #[test]
    fn errors() {
        assert!(Template::parse("${nope}").unwrap_err().contains("nope"));
        assert!(Template::parse("${route").is_err());
        assert!(Template::parse("${header.}").is_err());
        assert!(Template::parse("a\r\nb").is_err());
    }
}
