//! Portcullis: an edge proxy whose every middleware is a proxy-wasm module.
//!
//! A tour of the core pieces, in the order a request meets them:
//!
//! - [`config`] turns a directory of YAML files into a validated [`config::Config`],
//!   or into every error found, each naming file, line and field; [`etcd`] adds the
//!   documents under an etcd prefix, watched.
//! - [`snapshot`] builds an immutable [`snapshot::Snapshot`] from a config: the
//!   router, the upstreams and a configured VM of every filter. [`reload`] builds a new
//!   one on every change and swaps it in atomically; a bad one is never applied.
//! - [`server`] runs the worker threads: one current-thread tokio runtime each, with
//!   its own `SO_REUSEPORT` socket per listener, serving HTTP/1.1, HTTP/2 and TLS.
//! - [`proxy`] drives one request through its phases (`proxy::drive`): route, request
//!   filters, upstream, response filters, log; [`body`] is the body type it relays.
//! - [`wasm`] is the proxy-wasm host: engine, module cache, per-worker VMs, limits;
//!   [`extensions`] gives it the host extensions filters call (the rate limiter).
//! - [`upstream`] balances, pools, health-checks and forwards.
//! - [`admin`] serves `/ready`, `/status` and `/metrics`.
//! - [`acme`] orders and renews certificates from an ACME CA, off the request path.
//! - [`testkit`] runs a filter on requests described in code or YAML, through the same
//!   driver but without a server (`portcullis filter-test`).
//!
//! The modules form layers without import cycles (docs/architecture.md, "The layers";
//! checked by a test in `layering.rs`).

// `unsafe` is denied everywhere but in the few functions that need it, each allowed by
// name with its reason, and each block with a SAFETY comment (clippy's
// undocumented_unsafe_blocks).
#![deny(unsafe_code)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod alloc;
pub mod app;
pub mod body;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod etcd;
pub mod extensions;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc_status;
pub mod handover;
pub mod integrity;
pub mod l4;
pub mod listeners;
pub mod metrics;
pub mod otel;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod router;
pub mod server;
pub mod snapshot;
pub mod testkit;
pub mod tls;
pub mod upstream;
pub mod wasm;

#[cfg(test)]
mod layering;
