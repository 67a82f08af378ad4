//! `portcullis-sdk`: write a proxy-wasm filter for Portcullis (and Envoy) in a few lines.
