#!/bin/sh
# Builds filter.wasm from assembly/index.ts with AssemblyScript 0.14 and
# @solo-io/proxy-runtime, both pinned in package-lock.json.
# Needs Node.js and npm (Debian: apt-get install nodejs npm).
set -eu
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "npm not found: apt-get install nodejs npm" >&2; exit 1; }
# Install the pinned packages on first use (.ci/install-toolchains does the same).
[ -x node_modules/.bin/asc ] || npm ci --no-audit --no-fund
# --use abort=abort_proc_exit: the runtime's abort, so a failed assertion ends the
# callback with a trap instead of importing AssemblyScript's env.abort.
npm run --silent build
echo "built $(pwd)/filter.wasm"
