//! One certificate order (RFC 8555, section 7.4) for one name: the account, the
//! order, the challenge answered while the CA validates, the key and CSR, and the
//! issued chain, stored and ready to serve.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::http::AcmeHttp;
use super::store::Store;
use super::{challenges, error_chain};
use crate::config::{AcmeChallenge, AcmeConfig};
use crate::tls::issued::{Issued, IssuedCert};
use crate::tls::provider;

/// How long the CA may take to validate the challenge, then to issue.
const POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(1.5)
    .timeout(Duration::from_secs(90));

/// The problem type of a request made with an account the CA does not know (its
/// database was reset, or the storage was copied from another CA).
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// What an order needs, shared by the issuer's attempts.
pub(super) struct Orderer {
    pub config: AcmeConfig,
    pub store: Store,
    pub issued: Arc<Issued>,
    account: Option<Account>,
}

impl Orderer {
    pub(super) fn new(config: AcmeConfig, issued: Arc<Issued>) -> Self {
        let store = Store::new(&config.storage, &config.directory);
        Self {
            config,
            store,
            issued,
            account: None,
        }
    }

    /// Orders a certificate for `name`, stores it and returns it.
    pub(super) async fn order(&mut self, name: &str) -> Result<IssuedCert, String> {
        let account = self.account().await?;
        match self.order_with(&account, name).await {
            Err(Failure::Acme(instant_acme::Error::Api(problem)))
                if problem.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST) =>
            {
                // Registered again on the next attempt.
                self.store.forget_account();
                self.account = None;
                Err(format!(
                    "the CA does not know the stored account: {problem}"
                ))
            }
            Err(e) => Err(e.to_string()),
            Ok(cert) => Ok(cert),
        }
    }

    /// The account: the stored one, or a new one registered (and stored).
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let http = || AcmeHttp::new(self.config.ca_roots.as_deref());
        let stored = self
            .store
            .account()
            .map_err(|e| format!("cannot read the stored account: {e}"))?;
        let account = match stored {
            Some(json) => {
                let credentials = serde_json::from_str(&json)
                    .map_err(|e| format!("the stored account is not valid: {e}"))?;
                Account::builder_with_http(Box::new(http()?))
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| format!("cannot reach the CA: {}", error_chain(&e)))?
            }
            None => {
                let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = Account::builder_with_http(Box::new(http()?))
                    .create(&new, self.config.directory.clone(), None)
                    .await
                    .map_err(|e| format!("cannot register an account: {}", error_chain(&e)))?;
                let json = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
                self.store
                    .save_account(&json)
                    .map_err(|e| format!("cannot store the account: {e}"))?;
                tracing::info!(directory = %self.config.directory, "ACME account registered");
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    async fn order_with(&self, account: &Account, name: &str) -> Result<IssuedCert, Failure> {
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
        // Whatever happens from here on, the challenge answers go with the order.
        let mut answers = Answers::new(&self.issued);
        let kind = match self.config.challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(Failure::Other(format!("authorization is {other:?}"))),
            }
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                let kind = self.config.challenge.name();
                Failure::Other(format!("the CA offers no {kind} challenge for {name}"))
            })?;
            let key_auth = challenge.key_authorization();
            match self.config.challenge {
                AcmeChallenge::Http01 => {
                    answers.http01(&challenge.token, key_auth.as_str());
                }
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(name, key_auth.digest().as_ref())?;
                    answers.tls_alpn01(name, cert);
                }
            }
            challenge.set_ready().await?;
        }
        let status = order.poll_ready(&POLL).await?;
        if status != OrderStatus::Ready {
            let mut why = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(authz)) = authorizations.next().await {
                why.extend(
                    authz
                        .challenges
                        .iter()
                        .filter_map(|c| c.error.as_ref())
                        .map(ToString::to_string),
                );
            }
            return Err(Failure::Other(format!(
                "the order is {status:?}: {}",
                if why.is_empty() {
                    "no reason given".into()
                } else {
                    why.join("; ")
                }
            )));
        }
        let key = KeyPair::generate().map_err(|e| Failure::Other(e.to_string()))?;
        let mut params = CertificateParams::new(vec![name.to_owned()])
            .map_err(|e| Failure::Other(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| Failure::Other(e.to_string()))?;
        order.finalize_csr(csr.der()).await?;
        let chain = order.poll_certificate(&POLL).await?;
        drop(answers);
        self.store
            .save(name, &key.serialize_pem(), &chain)
            .map_err(|e| Failure::Other(format!("cannot store the certificate: {e}")))?;
        match self.store.load(name) {
            Ok(Some(cert)) => Ok(cert),
            Ok(None) => Err(Failure::Other("the stored certificate vanished".into())),
            Err(e) => Err(Failure::Other(format!(
                "the issued certificate is not usable: {e}"
            ))),
        }
    }
}

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{}", error_chain(.0))]
    Acme(#[from] instant_acme::Error),
    #[error("{0}")]
    Other(String),
}

/// The challenge answers of one order, withdrawn when it ends however it ends.
struct Answers<'a> {
    issued: &'a Issued,
    tokens: Vec<String>,
    names: Vec<String>,
}

impl<'a> Answers<'a> {
    fn new(issued: &'a Issued) -> Self {
        Self {
            issued,
            tokens: Vec::new(),
            names: Vec::new(),
        }
    }

    fn http01(&mut self, token: &str, key_authorization: &str) {
        challenges::put(token, key_authorization);
        self.tokens.push(token.to_owned());
    }

    fn tls_alpn01(&mut self, name: &str, cert: Arc<CertifiedKey>) {
        self.issued.set_challenge(name, Some(cert));
        self.names.push(name.to_owned());
    }
}

impl Drop for Answers<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            challenges::remove(token);
        }
        for name in &self.names {
            self.issued.set_challenge(name, None);
        }
    }
}

/// The self-signed certificate a TLS-ALPN-01 validation handshake for `name` gets: the
/// name, and the key authorization's digest in the critical `acmeIdentifier`
/// extension (RFC 8737, section 3).
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, Failure> {
    let fail = |e: &dyn std::fmt::Display| Failure::Other(format!("challenge certificate: {e}"));
    let key = KeyPair::generate().map_err(|e| fail(&e))?;
    let mut params = CertificateParams::new(vec![name.to_owned()]).map_err(|e| fail(&e))?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| fail(&e))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| fail(&e))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}
