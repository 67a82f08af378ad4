//! `providers:`: where configuration documents come from besides the directory. Today
//! one: `etcd`, a prefix whose keys hold documents like the directory's files.
//!
//! The block is bootstrap: it says where to read, so it is read from the directory
//! only ([`from_dir`] finds it before anything else loads), and a document read from
//! a provider that sets it is an error.

use std::path::Path;
use std::time::Duration;

use super::walk::{Cx, Field, Fields};
use super::{ConfigError, ConfigErrors, EtcdAuth, EtcdConfig, EtcdTls, Providers};

/// How long one request to etcd (connect included) may take when `timeout` does not
/// say: etcd answers a range in milliseconds on a LAN; past this, it counts as down.
pub const ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// The prefix read when `prefix` does not say.
pub const ETCD_PREFIX: &str = "/portcullis/";

/// Decodes `providers: { etcd: { endpoints, prefix, timeout, tls, auth } }`.
pub(crate) fn providers(cx: &mut Cx, field: &Field) -> Option<Providers> {
    let mut f = Fields::new(cx, field)?;
    let etcd = f.take("etcd").map(|v| etcd(cx, &v));
    f.finish(cx);
    Some(Providers {
        etcd: etcd.unwrap_or(None),
    })
}

fn etcd(cx: &mut Cx, field: &Field) -> Option<EtcdConfig> {
    let mut f = Fields::new(cx, field)?;
    let endpoints = f.require(cx, "endpoints").and_then(|v| {
        let list = v.string_list(cx)?;
        if list.is_empty() {
            v.error(cx, "must name at least one endpoint (http://HOST:2379)");
            return None;
        }
        let mut ok = true;
        for (url, line) in &list {
            if let Err(why) = check_endpoint(url) {
                cx.error(*line, &v.path, why);
                ok = false;
            }
        }
        ok.then(|| list.into_iter().map(|(u, _)| u).collect::<Vec<_>>())
    });
    let prefix = f
        .take("prefix")
        .map(|v| v.string(cx).map(|p| normalize_prefix(&p)));
    let timeout = f.take("timeout").map(|v| v.duration(cx));
    let tls = f.take("tls").map(|v| tls(cx, &v));
    let auth = f.take("auth").map(|v| auth(cx, &v));
    f.finish(cx);
    let endpoints = endpoints?;
    let tls = tls.unwrap_or(Some(EtcdTls::default()))?;
    if (tls.ca.is_some() || tls.cert.is_some())
        && let Some(plain) = endpoints.iter().find(|e| e.starts_with("http://"))
    {
        field.error(
            cx,
            format!("`tls` is set but endpoint `{plain}` is http://; use https://"),
        );
        return None;
    }
    Some(EtcdConfig {
        endpoints,
        prefix: prefix.unwrap_or_else(|| Some(ETCD_PREFIX.to_string()))?,
        timeout: timeout.unwrap_or(Some(ETCD_TIMEOUT))?,
        tls,
        auth: auth.unwrap_or(Some(None))?,
        origin: cx.origin(field.line),
    })
}

fn tls(cx: &mut Cx, field: &Field) -> Option<EtcdTls> {
    let mut f = Fields::new(cx, field)?;
    let ca = f.take("ca").map(|v| v.existing_file(cx));
    let cert = f.take("cert").map(|v| v.existing_file(cx));
    let key = f.take("key").map(|v| v.existing_file(cx));
    let paired = cert.is_some() == key.is_some();
    if !paired {
        field.error(cx, "`cert` and `key` go together (a client certificate)");
    }
    f.finish(cx);
    if !paired {
        return None;
    }
    // A file named but not found is already reported; nothing half-configured is built.
    if [&ca, &cert, &key].iter().any(|x| matches!(x, Some(None))) {
        return None;
    }
    Some(EtcdTls {
        ca: ca.flatten(),
        cert: cert.flatten(),
        key: key.flatten(),
    })
}

fn auth(cx: &mut Cx, field: &Field) -> Option<Option<EtcdAuth>> {
    let mut f = Fields::new(cx, field)?;
    let username = f.require(cx, "username").and_then(|v| v.string(cx));
    let inline = f.take("password");
    let file = f.take("password_file");
    let (path, line) = (f.path().to_string(), f.line());
    f.finish(cx);
    let password = match (inline, file) {
        (Some(v), None) => v.string(cx),
        // Read at each load: a rotated password is picked up by the next reload.
        (None, Some(v)) => v
            .existing_file(cx)
            .and_then(|p| match std::fs::read_to_string(&p) {
                Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
                Ok(_) => {
                    v.error(cx, format!("{} is empty", p.display()));
                    None
                }
                Err(e) => {
                    v.error(cx, format!("cannot read {}: {e}", p.display()));
                    None
                }
            }),
        (Some(_), Some(v)) => {
            v.error(cx, "give either password or password_file, not both");
            None
        }
        (None, None) => {
            cx.error(line, &path, "needs `password_file: FILE` (or `password`)");
            None
        }
    };
    Some(Some(EtcdAuth {
        username: username?,
        password: password?,
    }))
}

/// An `http://` or `https://` URL of an etcd client endpoint, host and port only.
fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "`{url}` is not an etcd endpoint: expected http://HOST:PORT or https://HOST:PORT"
            )
        })?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('@') {
        return Err(format!(
            "`{url}` is not an etcd endpoint: expected http://HOST:PORT or https://HOST:PORT (no path, no credentials: see `auth`)"
        ));
    }
    url.parse::<http::Uri>()
        .map(drop)
        .map_err(|e| format!("invalid etcd endpoint `{url}`: {e}"))
}

/// A prefix ends with `/`: the documents are the keys one level under it, as the
/// files of a directory are.
fn normalize_prefix(prefix: &str) -> String {
    if prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// Whether `key`, read under `prefix`, is a document: one level under the prefix,
/// named like a configuration file of a directory (`*.yaml` / `*.yml`, not hidden).
pub fn is_document(prefix: &str, key: &str) -> bool {
    let Some(name) = key.strip_prefix(prefix) else {
        return false;
    };
    !name.is_empty()
        && !name.contains('/')
        && !name.starts_with('.')
        && (name.ends_with(".yaml") || name.ends_with(".yml"))
}

/// The `providers:` block of the YAML files in `dir`, read before the whole
/// configuration loads (which needs the providers' documents). Only this block's
/// errors are reported here; a file that does not parse is left to the full load.
pub fn from_dir(dir: &Path) -> Result<Providers, ConfigErrors> {
    let mut errors = Vec::new();
    let mut named = Vec::new();
    let mut found = Providers::default();
    let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let files = super::config_files(dir).unwrap_or_default();
    for (name, path) in files {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // A file without the word holds no such block (a merge key copies only from
        // the same document): a large routes file is not parsed a second time.
        if !text.contains("providers") {
            continue;
        }
        let Ok(docs) = super::yaml::parse(&text) else {
            continue;
        };
        let mut cx = Cx {
            file: name,
            base: base.clone(),
            errors: &mut errors,
            files: &mut named,
        };
        for doc in &docs {
            let super::yaml::Kind::Map(entries) = &doc.kind else {
                continue;
            };
            for (key, node) in entries {
                if key.text != "providers" || node.is_null() {
                    continue;
                }
                let field = Field {
                    node,
                    line: key.line,
                    path: "providers".into(),
                };
                if let Some(p) = providers(&mut cx, &field)
                    && found.etcd.is_none()
                {
                    found = p;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// The etcd prefix `portcullis check --etcd URL,… --etcd-prefix PREFIX` names:
/// the flags override the directory's `providers.etcd` (`from_dir`), or stand for a
/// block of their own (default prefix, timeout; no TLS files, no auth).
pub fn from_flags(
    endpoints: &[String],
    prefix: Option<&str>,
    from_dir: Option<EtcdConfig>,
) -> Result<Option<EtcdConfig>, String> {
    for url in endpoints {
        check_endpoint(url).map_err(|why| format!("--etcd: {why}"))?;
    }
    let mut etcd = match (from_dir, endpoints.is_empty()) {
        (Some(mut etcd), false) => {
            etcd.endpoints = endpoints.to_vec();
            etcd
        }
        (Some(etcd), true) => etcd,
        (None, false) => EtcdConfig {
            endpoints: endpoints.to_vec(),
            prefix: ETCD_PREFIX.into(),
            timeout: ETCD_TIMEOUT,
            tls: EtcdTls::default(),
            auth: None,
            origin: super::Origin {
                file: "--etcd".into(),
                line: 0,
            },
        },
        (None, true) if prefix.is_some() => {
            return Err(
                "--etcd-prefix needs --etcd URL (or `providers.etcd` in the directory)".into(),
            );
        }
        (None, true) => return Ok(None),
    };
    if let Some(prefix) = prefix {
        etcd.prefix = normalize_prefix(prefix);
    }
    Ok(Some(etcd))
}

/// A document read from a provider may not say where documents come from.
pub(crate) fn not_from_provider(cx: &mut Cx, field: &Field) {
    field.error(
        cx,
        "`providers` is read from the configuration directory only (it says where the other documents come from)",
    );
}

/// A reload whose `providers` block differs from the one the process started with:
/// refused, since the documents it was built from came from the old one.
pub(crate) fn changed(running: &Providers, now: &Providers, dir: &Path) -> Option<ConfigError> {
    if running == now {
        return None;
    }
    let message = "`providers` changed: the running process reads the providers it started \
                   with; restart (or upgrade without downtime with `portcullis run \
                   --upgrade-from`, see docs/operations.md) to read from new ones";
    Some(match now.etcd.as_ref().or(running.etcd.as_ref()) {
        Some(etcd) if now.etcd.is_some() => {
            ConfigError::at(&etcd.origin, "providers.etcd", message)
        }
        _ => ConfigError {
            file: dir.display().to_string(),
            line: 0,
            path: "providers".into(),
            message: message.into(),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_prefixes() {
        assert!(check_endpoint("http://127.0.0.1:2379").is_ok());
        assert!(check_endpoint("https://etcd.example:2379/").is_ok());
        for bad in [
            "127.0.0.1:2379",
            "http://u:p@h:1",
            "http://h:1/v3",
            "grpc://h:1",
            "http://",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(normalize_prefix("/portcullis"), "/portcullis/");
        assert_eq!(normalize_prefix("/p/"), "/p/");
    }

    #[test]
    fn documents_are_yaml_keys_one_level_under_the_prefix() {
        assert!(is_document("/p/", "/p/routes.yaml"));
        assert!(is_document("/p/", "/p/a.yml"));
        for not in [
            "/p/",
            "/p/sub/a.yaml",
            "/p/.hidden.yaml",
            "/p/notes.txt",
            "/q/a.yaml",
        ] {
            assert!(!is_document("/p/", not), "{not}");
        }
    }
}
