#!/bin/sh
# Checks that each FILE is a valid proxy-wasm module as Portcullis (and Envoy) load one:
#   - it validates as WebAssembly;
#   - it exports `proxy_abi_version_0_2_1` or `_0_2_0`, a memory, an allocator
#     (`proxy_on_memory_allocate` or `malloc`) and at least one `proxy_on_*` callback;
#   - it imports only from `env` (the proxy-wasm host functions) and
#     `wasi_snapshot_preview1` / `wasi_unstable`.
# Needs wasm-validate and wasm-objdump (Debian: apt-get install wabt).
# Usage: examples/check-module.sh FILE.wasm...
set -eu
for tool in wasm-validate wasm-objdump; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install wabt" >&2; exit 1; }
done
[ $# -gt 0 ] || { echo "usage: $0 FILE.wasm..." >&2; exit 2; }
status=0
for f in "$@"; do
  bad=0
  fail() { echo "$f: $1" >&2; bad=1; status=1; }
  if ! wasm-validate --enable-all "$f"; then fail "not valid WebAssembly"; continue; fi
  exports=$(wasm-objdump -j Export -x "$f" | sed -n 's/.*-> "\(.*\)"$/\1/p')
  modules=$(wasm-objdump -j Import -x "$f" | sed -n 's/.* <- \([^.]*\)\..*/\1/p' | sort -u)
  echo "$exports" | grep -qx 'proxy_abi_version_0_2_[01]' || fail "exports no proxy_abi_version_0_2_1 / _0_2_0"
  wasm-objdump -j Export -x "$f" | grep -q '^ - memory\[' || fail "exports no memory"
  echo "$exports" | grep -qx 'proxy_on_memory_allocate\|malloc' || fail "exports no proxy_on_memory_allocate / malloc"
  callbacks=$(echo "$exports" | grep -c '^proxy_on_' || true)
  [ "$callbacks" -gt 1 ] || fail "exports no proxy_on_* callback"
  for m in $modules; do
    case $m in
      env|wasi_snapshot_preview1|wasi_unstable) ;;
      *) fail "imports from module '$m' (only env and wasi_snapshot_preview1 / wasi_unstable are offered)" ;;
    esac
  done
  [ $bad -ne 0 ] || echo "$f: ok ($(echo "$exports" | grep -x 'proxy_abi_version_.*'), $callbacks proxy_on_* exports, imports: $(echo $modules))"
done
exit $status
