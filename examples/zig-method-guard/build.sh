#!/bin/sh
# Builds filter.wasm from filter.zig. Needs Zig; PyPI ships it:
#   pip install ziglang==0.17.1     (then `python3 -m ziglang` is zig)
# A `zig` on PATH is used if there is one.
# wasm32-freestanding: the filter needs no WASI at all. -fno-entry + -rdynamic: a
# library-like module whose `export fn`s are its exports.
set -eu
cd "$(dirname "$0")"
if command -v zig >/dev/null; then ZIG=zig
elif python3 -c 'import ziglang' 2>/dev/null; then ZIG="python3 -m ziglang"
else echo "zig not found: pip install ziglang==0.17.1" >&2; exit 1
fi
$ZIG build-exe filter.zig -target wasm32-freestanding -fno-entry -rdynamic -O ReleaseSmall \
  --cache-dir .zig-cache --global-cache-dir .zig-cache -femit-bin=filter.wasm
echo "built $(pwd)/filter.wasm"
