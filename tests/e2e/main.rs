//! End-to-end tests: the real `portcullis` binary, real sockets, real wasm. One test
//! binary, one module per concern; the shared harness is [`support`].

#![deny(unsafe_code)]

mod support;

mod access_log;
mod acme;
mod admin;
mod admin_access;
mod canary;
mod check;
mod dashboard;
mod echo;
mod etcd;
mod etcd_fleet;
mod examples;
mod filter_debug;
mod filter_trace;
mod filters_builtin;
mod filters_check;
mod filters_ratelimit;
mod filters_ratelimit_redis;
mod filters_redis_calls;
mod grpc;
mod grpc_callouts;
mod http3;
mod httpwasm;
mod inproc;
mod integrity;
mod l4;
mod module_cache;
mod otel;
mod packaging;
mod reload;
mod reload_memory;
mod reload_rollback;
mod routing;
mod server;
mod services;
mod shadow;
mod tls;
mod upgrade;
mod upstream;
mod wasm_binary;
mod wasm_breaker;
mod wasm_build;
mod wasm_filters;
