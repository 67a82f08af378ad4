#!/bin/sh
# Builds filter.wasm from filter.c with Debian's clang, lld and wasi-libc:
#   apt-get install clang lld wasi-libc libclang-rt-dev-wasm32
# -mexec-model=reactor: a library-like module (exports _initialize, no main), which is
# what a proxy-wasm host instantiates.
set -eu
cd "$(dirname "$0")"
CC=${CC:-clang}
command -v "$CC" >/dev/null || { echo "$CC not found: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2; exit 1; }
"$CC" --target=wasm32-wasi -O2 -Wall -Wextra -Werror -mexec-model=reactor \
  -I ../../sdk/c -Wl,--strip-all -o filter.wasm filter.c
echo "built $(pwd)/filter.wasm"
