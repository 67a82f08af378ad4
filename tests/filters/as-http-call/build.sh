#!/bin/sh
# Builds filter.wasm from assembly/index.ts with AssemblyScript 0.14 and
# @solo-io/proxy-runtime, both pinned in package-lock.json (as
# examples/assemblyscript-headers does). Needs Node.js and npm.
set -eu
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm not found: apt-get install nodejs npm" >&2; exit 1; }
[ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund
npm run --silent build
echo "built $(pwd)/filter.wasm"
