//! Certificates from an ACME CA (RFC 8555): ordered, stored and renewed while the
//! proxy serves, without a restart.
//!
//! Each listener whose `tls` has `acme` gets an issuer: a task on the `acme` thread's
//! own runtime (never on a worker: requests pay nothing for it), which orders a
//! certificate for every name that has none or is due for renewal, answers the CA's
//! challenge meanwhile (HTTP-01 through [`http01_answer`], which the server asks on
//! plain-text listeners ahead of routes and filters; TLS-ALPN-01 through the
//! listener's resolver), and hands the result to the listener's
//! [`Issued`](crate::tls::issued::Issued), which every snapshot's handshakes read.
//!
//! - [`order`]: one order, from the account to the stored chain.
//! - [`store`]: the `storage` directory (account, certificates, lock).
//! - [`issuer`]: the loop: when to order, retries with back-off, per-name status.
//! - [`http`]: the HTTP client the CA is reached with.
//!
//! [`apply`] follows the configuration: called after each load that goes into force,
//! it starts, updates (names added to routes) and stops issuers.

mod http;
mod issuer;
mod order;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio::sync::watch;

use crate::config::{AcmeConfig, Config};
use crate::tls::issued;
pub use issuer::{NameState, NameStatus};

/// The path prefix of HTTP-01 challenge requests (RFC 8555, section 8.3).
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorization to answer `GET path` with, when `path` asks for an HTTP-01
/// token an issuer is waiting to be validated; `None` for every other path (which the
/// routes serve as usual).
pub fn http01_answer(path: &str) -> Option<String> {
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    challenges::get(token)
}

/// The HTTP-01 answers of the orders open right now, by token (random, unique to the
/// order): one table for the process, since the CA may reach any plain listener.
mod challenges {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    fn table() -> &'static Mutex<HashMap<String, String>> {
        static TABLE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
        TABLE.get_or_init(Mutex::default)
    }

    pub(super) fn put(token: &str, key_authorization: &str) {
        super::lock(table()).insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(super) fn remove(token: &str) {
        super::lock(table()).remove(token);
    }

    pub(super) fn get(token: &str) -> Option<String> {
        super::lock(table()).get(token).cloned()
    }
}

/// An issuer running for one listener.
struct Running {
    config: AcmeConfig,
    names: watch::Sender<Vec<String>>,
    status: Arc<issuer::Statuses>,
    task: tokio::task::AbortHandle,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn running() -> &'static Mutex<HashMap<String, Running>> {
    static RUNNING: OnceLock<Mutex<HashMap<String, Running>>> = OnceLock::new();
    RUNNING.get_or_init(Mutex::default)
}

/// Brings the issuers in line with `config` (in force from now on): a listener with
/// `acme` gets an issuer, its stored certificates served at once; one whose settings
/// changed gets a new one; a changed list of names (a route added on reload) goes to
/// the running issuer, which orders the new names; a listener without `acme` any more
/// loses its issuer. Orders run in the background: this returns at once.
pub fn apply(config: &Config) {
    let mut running = lock(running());
    let mut wanted = Vec::new();
    for l in &config.listeners {
        let Some(acme) = l.tls.as_ref().and_then(|t| t.acme.as_ref()) else {
            continue;
        };
        wanted.push(l.name.clone());
        let names = acme.names(&l.name, &config.routes);
        if let Some(r) = running.get(&l.name)
            && same_settings(&r.config, acme)
        {
            r.names.send_if_modified(|current| {
                let changed = *current != names;
                *current = names;
                changed
            });
            continue;
        }
        match issuer::start(&l.name, acme.clone(), names) {
            Ok((names, status, task)) => {
                let r = Running {
                    config: acme.clone(),
                    names,
                    status,
                    task,
                };
                running.insert(l.name.clone(), r);
            }
            Err(e) => {
                tracing::error!(listener = %l.name, "cannot start the ACME issuer: {e}");
            }
        }
    }
    running.retain(|listener, _| wanted.contains(listener));
    issued::retain(|storage, directory| {
        running
            .values()
            .any(|r| r.config.storage == storage && r.config.directory == directory)
    });
}

/// Whether two ACME settings differ only in what a running issuer follows by itself
/// (the names, where it was declared).
fn same_settings(a: &AcmeConfig, b: &AcmeConfig) -> bool {
    a.directory == b.directory
        && a.email == b.email
        && a.challenge == b.challenge
        && a.storage == b.storage
        && a.renew_before == b.renew_before
        && a.ca_roots == b.ca_roots
}

/// The state of each name of listener `listener`'s issuer, by name; `None` when it has
/// none.
pub fn status(listener: &str) -> Option<Vec<(String, NameStatus)>> {
    let running = lock(running());
    let r = running.get(listener)?;
    Some(r.status.snapshot())
}

/// `e` and its sources, `: `-separated: hyper's errors say little at the top.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}
