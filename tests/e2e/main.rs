//! End-to-end tests: one binary, one module per concern.

mod echo;
mod inproc;
mod routing;
mod upstream;
