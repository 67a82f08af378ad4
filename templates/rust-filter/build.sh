#!/bin/sh
# One command: builds filter.wasm (release, wasm32-wasip1) next to this script, where
# conf/ expects it. Needs Rust with the wasm32-wasip1 target: rustup target add wasm32-wasip1.
set -eu
cd "$(dirname "$0")"
cargo build --release --target wasm32-wasip1 --target-dir target
# The crate's name with '-' as '_': the .wasm cargo writes.
name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' Cargo.toml | head -1 | tr - _)
cp "target/wasm32-wasip1/release/$name.wasm" filter.wasm
echo "built $(pwd)/filter.wasm"
