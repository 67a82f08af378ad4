#!/bin/sh
# Builds filter.wasm with Go >= 1.24 (GOOS=wasip1, a WASI reactor). UNTESTED: the
# project's CI machines have no Go >= 1.24 (Debian 12 ships 1.19), so this example is
# not built or run by tests/e2e/examples.rs. See README.md.
set -eu
cd "$(dirname "$0")"
command -v go >/dev/null || { echo "go not found: install Go >= 1.24 (https://go.dev/dl/)" >&2; exit 1; }
[ -f go.sum ] || go mod tidy
GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o filter.wasm .
echo "built $(pwd)/filter.wasm"
