//! The issuer of one listener: a loop that orders a certificate for each name that has
//! none, or whose certificate is within `renew_before` of expiring, one name at a
//! time, and sleeps until the next is due.
//!
//! A failed order is retried after a back-off that doubles from [`RETRY_FIRST`] to
//! [`RETRY_MAX`], each delay jittered by ±50% so that instances sharing a CA do not
//! retry in step. A failure never touches what is served: the certificate in use
//! stays until a new one replaces it (an expired one included: a client may still
//! accept it, and the alternative, the listener's default certificate, is for
//! another name).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng as _;
use tokio::sync::watch;

use super::lock;
use super::order::Orderer;
use crate::config::AcmeConfig;
use crate::tls::issued::{self, IssuedCert};

/// The first retry of a failed order.
const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(3600);
/// The longest sleep: the loop looks again at least this often.
const IDLE_MAX: Duration = Duration::from_secs(3600);

/// Where a name stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameState {
    /// No certificate yet (being ordered, or waiting to retry).
    #[default]
    Pending,
    /// A certificate serves it.
    Valid,
    /// Its certificate has expired and no new one could be had yet.
    Expired,
}

impl NameState {
    /// As `/status` shows it.
    pub fn name(self) -> &'static str {
        match self {
            NameState::Pending => "pending",
            NameState::Valid => "valid",
            NameState::Expired => "expired",
        }
    }
}

/// One name's state, as `/status` shows it.
#[derive(Debug, Clone, Default)]
pub struct NameStatus {
    /// Pending, valid or expired.
    pub state: NameState,
    /// When the served certificate expires.
    pub valid_until: Option<SystemTime>,
    /// When it is to be renewed (or the failed order retried).
    pub next_attempt: Option<SystemTime>,
    /// The latest failure, cleared by the next success.
    pub last_error: Option<String>,
    /// When that failure happened.
    pub last_error_at: Option<SystemTime>,
    /// Failures in a row.
    pub failures: u32,
}

/// The statuses of one issuer's names.
#[derive(Debug, Default)]
pub struct Statuses(Mutex<BTreeMap<String, NameStatus>>);

impl Statuses {
    /// A copy, by name.
    pub fn snapshot(&self) -> Vec<(String, NameStatus)> {
        lock(&self.0)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut NameStatus)) {
        f(lock(&self.0).entry(name.to_owned()).or_default());
    }

    fn keep_only(&self, names: &[String]) {
        lock(&self.0).retain(|n, _| names.contains(n));
    }
}

/// Starts the issuer of `listener`: serves what `config.storage` holds for `names`
/// at once, then orders the rest in the background.
pub(super) fn start(
    listener: &str,
    config: AcmeConfig,
    names: Vec<String>,
) -> std::io::Result<(
    watch::Sender<Vec<String>>,
    Arc<Statuses>,
    tokio::task::AbortHandle,
)> {
    let runtime = runtime()?;
    let issued = issued::for_storage(&config.storage, &config.directory);
    let orderer = Orderer::new(config, Arc::clone(&issued));
    let statuses = Arc::new(Statuses::default());
    // Read here, before the first handshake can ask: a restart serves at once what
    // the previous run got.
    for name in &names {
        load_stored(&orderer, &statuses, name, listener);
    }
    let (tx, rx) = watch::channel(names);
    let task = runtime.spawn(run(listener.to_owned(), orderer, Arc::clone(&statuses), rx));
    Ok((tx, statuses, task.abort_handle()))
}

/// Serves `name`'s stored certificate, if there is a usable one newer than what is
/// served; whether one was installed.
fn load_stored(orderer: &Orderer, statuses: &Statuses, name: &str, listener: &str) -> bool {
    match orderer.store.load(name) {
        Ok(Some(cert)) => {
            let newer = orderer
                .issued
                .get(name)
                .is_none_or(|old| old.info.not_after < cert.info.not_after);
            if newer {
                statuses.update(name, |s| s.valid_until = Some(unix(cert.info.not_after)));
                orderer.issued.install(name, cert);
            }
            newer
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(listener, name, "ignoring the stored certificate: {e}");
            false
        }
    }
}

async fn run(
    listener: String,
    mut orderer: Orderer,
    statuses: Arc<Statuses>,
    mut names_rx: watch::Receiver<Vec<String>>,
) {
    // Failed orders: failures in a row and when to try again.
    let mut retries: HashMap<String, (u32, SystemTime)> = HashMap::new();
    loop {
        let names = names_rx.borrow_and_update().clone();
        statuses.keep_only(&names);
        retries.retain(|n, _| names.contains(n));
        let now = SystemTime::now();
        let mut wake = now + IDLE_MAX;
        for name in &names {
            let renewal = orderer
                .issued
                .get(name)
                .map(|c| renew_at(&c, &orderer.config));
            let due = match (renewal, retries.get(name)) {
                (_, Some((_, retry))) => *retry,
                (Some(at), None) => at,
                (None, None) => now,
            };
            if due > now {
                statuses.update(name, |s| {
                    s.next_attempt = Some(due);
                    s.state = state(orderer.issued.get(name).as_ref(), now);
                });
                wake = wake.min(due);
                continue;
            }
            match attempt(&listener, &mut orderer, &statuses, name).await {
                Ok(cert) => {
                    retries.remove(name);
                    let next = renew_at(&cert, &orderer.config);
                    wake = wake.min(next);
                    statuses.update(name, |s| {
                        s.state = NameState::Valid;
                        s.valid_until = Some(unix(cert.info.not_after));
                        s.next_attempt = Some(next);
                        s.last_error = None;
                        s.failures = 0;
                    });
                }
                Err(e) => {
                    let failures = retries.get(name).map_or(1, |(n, _)| n + 1);
                    let next = SystemTime::now() + backoff(failures);
                    retries.insert(name.clone(), (failures, next));
                    wake = wake.min(next);
                    tracing::warn!(listener, name, failures, "ACME order failed: {e}");
                    let served = orderer.issued.get(name);
                    statuses.update(name, |s| {
                        s.state = state(served.as_ref(), SystemTime::now());
                        s.next_attempt = Some(next);
                        s.last_error = Some(e);
                        s.last_error_at = Some(SystemTime::now());
                        s.failures = failures;
                    });
                }
            }
        }
        let sleep = wake
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            changed = names_rx.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// One try at `name`: under the storage's lock, a certificate another instance stored
/// meanwhile is taken as it is; otherwise one is ordered.
async fn attempt(
    listener: &str,
    orderer: &mut Orderer,
    statuses: &Statuses,
    name: &str,
) -> Result<IssuedCert, String> {
    let store = orderer.store.clone();
    let lock = tokio::task::spawn_blocking(move || store.lock())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot lock the storage: {e}"))?;
    if load_stored(orderer, statuses, name, listener)
        && let Some(cert) = orderer.issued.get(name)
        && renew_at(&cert, &orderer.config) > SystemTime::now()
    {
        tracing::info!(
            listener,
            name,
            "using the certificate another instance stored"
        );
        return Ok(cert);
    }
    tracing::info!(listener, name, "ordering a certificate");
    let cert = orderer.order(name).await?;
    drop(lock);
    tracing::info!(
        listener,
        name,
        not_after = %crate::tls::info::date(cert.info.not_after),
        "certificate issued"
    );
    orderer.issued.install(name, cert.clone());
    Ok(cert)
}

/// When `cert` is to be renewed: `renew_before` ahead of its expiry, or halfway
/// through its life when that is shorter (a short-lived certificate).
fn renew_at(cert: &IssuedCert, config: &AcmeConfig) -> SystemTime {
    let (from, to) = (cert.info.not_before, cert.info.not_after);
    let life = Duration::from_secs(u64::try_from(to - from).unwrap_or(0));
    let before = config.renew_before.min(life / 2);
    unix(to) - before
}

fn state(cert: Option<&IssuedCert>, now: SystemTime) -> NameState {
    match cert {
        None => NameState::Pending,
        Some(c) if unix(c.info.not_after) <= now => NameState::Expired,
        Some(_) => NameState::Valid,
    }
}

/// The wait before retry number `failures`: doubling from [`RETRY_FIRST`], at most
/// [`RETRY_MAX`], jittered by ±50%.
fn backoff(failures: u32) -> Duration {
    let base = RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX);
    base.mul_f64(rand::rng().random_range(0.5..1.5))
}

fn unix(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH,
    }
}

/// The `acme` thread's runtime, started the first time an issuer is: ACME traffic and
/// its waits never run on a worker.
fn runtime() -> std::io::Result<tokio::runtime::Handle> {
    static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name("acme".into())
        .spawn(move || rt.block_on(std::future::pending::<()>()))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}
