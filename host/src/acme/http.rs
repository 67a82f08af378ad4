//! The HTTP client instant-acme talks to the CA with: hyper-util's pooled client over
//! hyper-rustls, with the process's crypto provider (ring) and either the configured
//! `ca_roots` (a private CA) or the Mozilla roots. instant-acme's own client would
//! bring the platform verifier and the process-default provider instead.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};

use crate::tls::https::{self, Connector};
use crate::tls::provider;

/// How long one request to the CA may take, connect to last byte: an unreachable CA
/// must end the attempt (and be retried later), not hang the issuer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client for the CA's directory.
pub struct AcmeHttp {
    client: Client<Connector, BodyWrapper<Bytes>>,
}

impl AcmeHttp {
    /// A client trusting `ca_roots` (PEM) when given, else the Mozilla roots.
    pub fn new(ca_roots: Option<&Path>) -> Result<Self, String> {
        let roots = https::roots(ca_roots).map_err(|e| e.to_string())?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        Ok(Self {
            client: https::client(config, http),
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                Ok(Ok(resp)) => Ok(BytesResponse::from(resp)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(e))),
                Err(_) => Err(instant_acme::Error::Other(
                    format!("no answer from the CA within {REQUEST_TIMEOUT:?}").into(),
                )),
            }
        })
    }
}
