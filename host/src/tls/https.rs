//! The HTTPS client of the proxy's own control-plane calls (an ACME CA, etcd):
//! hyper-util's pooled client over hyper-rustls, with the process's crypto provider
//! (ring) rather than whatever a crate's own client would bring.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use super::load::{self, LoadError};

/// The connector: `https://` with the given rustls config, `http://` in the clear.
pub type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The roots a server's certificate must chain to: the PEM bundle `ca` when given,
/// else the Mozilla roots.
pub fn roots(ca: Option<&Path>) -> Result<Arc<RootCertStore>, LoadError> {
    match ca {
        Some(path) => load::roots(path),
        None => Ok(Arc::new(RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })),
    }
}

/// An HTTP/1.1 client over `http`, speaking TLS with `tls` to `https://` URLs; idle
/// connections are kept 30 s.
pub fn client<B>(tls: rustls::ClientConfig, mut http: HttpConnector) -> Client<Connector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}
