//! Pebble, Let's Encrypt's ACME test CA (Debian package `pebble`), started on free
//! loopback ports with its own DNS (`pebble-challtestsrv`, answering 127.0.0.1 for
//! every name), so that it validates challenges against the proxy's real listeners:
//! `PEBBLE_VA_ALWAYS_VALID` is never set; `PEBBLE_VA_NOSLEEP=1` skips its random
//! waits before validating.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::pki::{Alg, Ca};

/// A free loopback TCP port (bound, read and released: the caller binds it next).
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket.local_addr().unwrap_or_else(|e| panic!("{e}")).port()
}

/// A running pebble and its DNS server.
pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// The management interface (`/roots/0`).
    pub management: SocketAddr,
    /// The CA pebble's own HTTPS certificate chains to (PEM), for `ca_roots`.
    pub https_ca: PathBuf,
}

/// Where pebble validates: the proxy's plain (HTTP-01) and TLS (TLS-ALPN-01) ports,
/// and how long its certificates last (`None`: its default, years).
pub struct Options {
    pub http_port: u16,
    pub tls_port: u16,
    pub validity: Option<Duration>,
}

fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl Pebble {
    /// Starts pebble and its DNS, and waits until the directory answers.
    pub fn start(opts: &Options) -> Pebble {
        assert!(
            installed("pebble") && installed("pebble-challtestsrv"),
            "pebble is not installed: run `apt-get install -y pebble` (Debian's package; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ca = Ca::new("Pebble HTTPS test CA");
        let leaf = ca.server(&["localhost"], Alg::Ecdsa);
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let https_ca = write("https-ca.pem", &ca.cert_pem);
        let cert = write("cert.pem", &leaf.chain_pem);
        let key = write("key.pem", &leaf.key_pem);

        let (dns_port, dns_mgmt) = (free_port(), free_port());
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt}")])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble-challtestsrv: {e}"));

        let (listen, management) = (free_port(), free_port());
        let mut config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{listen}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": opts.http_port,
            "tlsPort": opts.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        if let Some(v) = opts.validity {
            config["pebble"]["certificateValidityPeriod"] = v.as_secs().into();
        }
        let config_path = write("pebble.json", &config.to_string());
        let mut pebble = Pebble {
            pebble: None,
            dns,
            dir,
            directory: format!("https://localhost:{listen}/dir"),
            management: SocketAddr::from(([127, 0, 0, 1], management)),
            https_ca,
        };
        let log = std::fs::File::create(pebble.dir.path().join("pebble.log"))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble: {e}"));
        pebble.pebble = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not listen on {listen} within 30s; its log:\n{}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    /// Pebble's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The root (PEM) of the certificates pebble issues: new at each start.
    pub async fn root_pem(&self) -> String {
        let ca = std::fs::read(&self.https_ca).unwrap_or_else(|e| panic!("{e}"));
        let ca = reqwest::Certificate::from_pem(&ca).unwrap_or_else(|e| panic!("{e}"));
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .resolve("localhost", self.management)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let url = format!("https://localhost:{}/roots/0", self.management.port());
        let resp = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.text().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops pebble (its DNS stays): the CA is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
    }
}
