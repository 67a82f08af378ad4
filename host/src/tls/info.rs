//! What the proxy needs to know about a certificate beyond serving it: the names SNI
//! is matched against, when it expires, and whose it is.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The facts about one served certificate (its leaf), read once at load.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    /// The certificate file, as configured.
    pub path: PathBuf,
    /// SAN DNS names, lower-case without a trailing dot (`*.example.com` kept as is);
    /// the subject CN when the certificate has no SAN DNS name at all.
    pub names: Vec<String>,
    /// End of validity, seconds since the Unix epoch (negative before 1970).
    pub not_after: i64,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
}

impl CertificateInfo {
    /// Reads the leaf `der` of the chain loaded from `path`.
    pub fn parse(path: PathBuf, der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let mut names: Vec<String> = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some(normalise(name)),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName extension: {e}")),
        };
        if names.is_empty() {
            // Legacy certificates name their host only in the CN; clients no longer
            // accept that, but choosing it by SNI still does what its owner meant.
            names.extend(
                cert.subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(normalise),
            );
        }
        let validity = cert.validity();
        Ok(Self {
            path,
            names,
            not_after: validity.not_after.timestamp(),
            not_before: validity.not_before.timestamp(),
        })
    }

    /// Days (fractional, negative once expired) from `now` until the certificate
    /// expires.
    pub fn days_left(&self, now: SystemTime) -> f64 {
        let now = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        (self.not_after as f64 - now) / 86_400.0
    }

    /// A warning worth logging at load: expired, or not valid yet.
    pub fn warning(&self, now: SystemTime) -> Option<String> {
        let now_secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(_) => 0,
        };
        if self.not_after < now_secs {
            Some(format!(
                "the certificate in {} expired on {}; clients will reject it",
                self.path.display(),
                date(self.not_after)
            ))
        } else if self.not_before > now_secs {
            Some(format!(
                "the certificate in {} is not valid before {}; clients will reject it until then",
                self.path.display(),
                date(self.not_before)
            ))
        } else {
            None
        }
    }
}

/// The subject distinguished name of a (verified) client certificate, RFC 4514 style
/// (`CN=alice, O=Example`), with anything that could not travel in an HTTP header
/// replaced by `?`.
pub fn subject(der: &CertificateDer<'_>) -> Option<Arc<str>> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    let text: String = cert
        .subject()
        .to_string()
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    Some(Arc::from(text))
}

/// `2026-11-26T15:00:00Z`.
pub fn date(unix: i64) -> String {
    // humantime panics before 1970; a certificate may claim any date.
    match u64::try_from(unix) {
        Ok(secs) => match UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
            Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
            None => format!("{unix} seconds after 1970"),
        },
        Err(_) => format!("{} seconds before 1970", unix.unsigned_abs()),
    }
}

fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}
