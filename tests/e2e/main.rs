//! End-to-end tests: the real `portcullis` binary, real sockets, real wasm. One test
//! binary, one module per concern; the shared harness is [`support`].

mod support;

mod admin;
mod check;
mod echo;
mod inproc;
mod routing;
mod server;
mod tls;
mod upstream;
mod wasm_build;
mod wasm_filters;
