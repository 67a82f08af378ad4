//! The error a filter phase may return instead of an [`crate::Action`].

use crate::foreign::ForeignError;
use crate::redis::RedisError;

/// Why a phase could not decide. The SDK logs it and answers the request with 500
/// (the filter failed; the proxy's `on_error` policy is for traps, not for this).
#[derive(Debug)]
pub enum Error {
    /// The host refused a call (`what` names it), e.g. a header read outside a phase.
    Host {
        /// The call that failed.
        what: &'static str,
        /// The proxy-wasm status the host returned.
        status: proxy_wasm::types::Status,
    },
    /// A foreign function failed.
    Foreign(ForeignError),
    /// A Redis call failed.
    Redis(RedisError),
    /// Anything else the filter wants logged.
    Other(String),
}

impl Error {
    pub(crate) fn host(what: &'static str) -> impl FnOnce(proxy_wasm::types::Status) -> Self {
        move |status| Error::Host { what, status }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Host { what, status } => write!(f, "host call {what} failed: {status:?}"),
            Error::Foreign(e) => write!(f, "{e}"),
            Error::Redis(e) => write!(f, "{e}"),
            Error::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

impl From<ForeignError> for Error {
    fn from(e: ForeignError) -> Self {
        Error::Foreign(e)
    }
}

impl From<RedisError> for Error {
    fn from(e: RedisError) -> Self {
        Error::Redis(e)
    }
}
