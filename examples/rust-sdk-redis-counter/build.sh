#!/bin/sh
# Builds filter.wasm: cargo build --release for wasm32-wasip1, then copies the module
# next to this script, where conf/ expects it.
# Needs the Rust toolchain with the wasm32-wasip1 target (rustup target add wasm32-wasip1;
# the repository's rust-toolchain.toml lists it).
set -eu
cd "$(dirname "$0")"
# Our own target dir, whatever CARGO_TARGET_DIR the caller has set.
cargo build --release --target wasm32-wasip1 --target-dir target
cp target/wasm32-wasip1/release/rust_sdk_redis_counter.wasm filter.wasm
echo "built $(pwd)/filter.wasm"
