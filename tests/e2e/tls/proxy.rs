//! Runs the real binary on a configuration directory and finds its bound addresses in
//! its start-up log (`listening listener=NAME address=IP:PORT`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `portcullis run`.
pub struct Proxy {
    child: Child,
    log: Arc<Mutex<String>>,
    addrs: HashMap<String, SocketAddr>,
}

impl Proxy {
    /// Starts the binary on `conf` and waits until `listeners` (and `admin`) are bound.
    pub fn start(conf: &Path, listeners: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--conf"])
            .arg(conf)
            .env("RUST_LOG", "info,access=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start portcullis: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            });
        }
        let mut proxy = Proxy {
            child,
            log,
            addrs: HashMap::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let wanted: Vec<&str> = listeners.iter().copied().chain(["admin"]).collect();
        loop {
            proxy.addrs = bound_addresses(&proxy.log());
            if wanted.iter().all(|l| proxy.addrs.contains_key(*l)) {
                return proxy;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!(
                    "portcullis exited with {status} before listening; log:\n{}",
                    proxy.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "portcullis did not bind {wanted:?} within 60s; log:\n{}",
                    proxy.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The address `listener` is bound to (`admin` for the admin listener).
    pub fn addr(&self, listener: &str) -> SocketAddr {
        match self.addrs.get(listener) {
            Some(a) => *a,
            None => panic!("no listener {listener} bound; log:\n{}", self.log()),
        }
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `GET path` on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr("admin"));
        let resp = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bound_addresses(log: &str) -> HashMap<String, SocketAddr> {
    let mut addrs = HashMap::new();
    for line in log.lines().filter(|l| l.contains(" listening")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_owned())
        };
        if let (Some(name), Some(Ok(addr))) =
            (field("listener="), field("address=").map(|a| a.parse()))
        {
            addrs.insert(name, addr);
        }
    }
    addrs
}
