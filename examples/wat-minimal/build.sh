#!/bin/sh
# Builds filter.wasm from filter.wat. Needs wat2wasm (Debian: apt-get install wabt).
set -eu
cd "$(dirname "$0")"
command -v wat2wasm >/dev/null || { echo "wat2wasm not found: apt-get install wabt" >&2; exit 1; }
wat2wasm filter.wat -o filter.wasm
echo "built $(pwd)/filter.wasm"
