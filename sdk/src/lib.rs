//! `portcullis-sdk`: write a proxy-wasm filter for Portcullis (and Envoy) in a few lines.
//!
//! A filter is a type implementing [`Filter`]: a typed, validated configuration, and a
//! function per phase that looks at the request (or response) through a small handle
//! and returns an [`Action`]: go on, or answer the client now.
//!
//! ```
//! use portcullis_sdk::{Action, Filter, ConfigError, Request, Error};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { header: String }
//!
//! struct RequireHeader { header: String }
//!
//! impl Filter for RequireHeader {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, ConfigError> {
//!         if config.header.is_empty() {
//!             return Err(ConfigError::new("header", "must not be empty"));
//!         }
//!         Ok(Self { header: config.header.to_ascii_lowercase() })
//!     }
//!     fn on_request(&self, req: &mut Request) -> Result<Action, Error> {
//!         Ok(match req.header(&self.header)? {
//!             Some(_) => Action::Continue,
//!             None => Action::deny(400, "missing header\n"),
//!         })
//!     }
//! }
//!
//! portcullis_sdk::export_filter!(RequireHeader);
//! ```
//!
//! ## Why on top of the `proxy-wasm` crate
//!
//! The SDK is built on the reference [`proxy_wasm`] crate rather than on hostcalls of
//! our own: its dispatcher (the exported `proxy_on_*` callbacks, context bookkeeping,
//! the allocator export) is what Envoy, Istio and others test against, so a module
//! built with this SDK runs there unchanged. We use only its `hostcalls` layer, whose
//! calls return `Result`, instead of its context traits' helpers, which panic when
//! the host refuses a call (a panic traps the filter). Nothing here is
//! Portcullis-only except the [`foreign`] functions (and [`redis`], Higress's), which fail with a clear
//! [`ForeignError::Unavailable`] on another host.
//!
//! ## The pieces
//!
//! - [`Filter`] and [`Action`]: what you implement and what you return.
//! - [`Request`] and [`Response`]: headers, path, client address, properties.
//! - [`LocalResponse`]: an answer sent by the filter itself (deny, redirect).
//! - [`config`]: configuration parsing with errors that name the field, and
//!   [`config::Duration`] for values such as `30s`.
//! - [`foreign`]: typed wrappers around Portcullis' host extensions.
//! - [`redis`]: commands to the Redis the proxy names, shared by every instance
//!   (Higress's Redis calls, so they run on Higress too).
//! - [`query`]: query parameters and cookies.

#![deny(missing_docs)]

mod dispatch;
mod error;
mod filter;
mod http;
mod landing;

pub mod config;
pub mod foreign;
pub mod query;
pub mod redis;

pub use config::ConfigError;
pub use error::Error;
pub use filter::{Action, Filter, LocalResponse};
pub use foreign::ForeignError;
pub use http::{Request, Response};

#[doc(hidden)]
pub mod __private {
    pub use crate::dispatch::start;
    pub use proxy_wasm;
}

/// Exports a [`Filter`] as a proxy-wasm module: defines the module's `_initialize`
/// entry point, which installs the root context for the filter type.
///
/// Use it once, in the crate (`crate-type = ["cdylib"]`) built to `wasm32-wasip1`.
/// On other targets it expands to nothing, so the filter's logic can be unit-tested
/// natively with `cargo test`.
///
/// It also exports `portcullis_headers_only`, an empty function that tells Portcullis
/// the module's body, trailer, `on_done` and `on_log` callbacks are the `proxy-wasm`
/// crate's defaults (a [`Filter`] has no such phases), so the host may skip entering
/// the VM for them (docs/filters-abi.md). Other hosts ignore the export.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::proxy_wasm::main! {{
            $crate::__private::start::<$filter>();
        }}

        /// A promise to the host, never called: see `portcullis_sdk::export_filter!`.
        #[cfg(target_arch = "wasm32")]
        #[unsafe(no_mangle)]
        pub extern "C" fn portcullis_headers_only() {}
    };
}
