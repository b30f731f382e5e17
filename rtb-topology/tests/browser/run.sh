#!/usr/bin/env bash
# The dashboard's browser test: Debian chromium + playwright-core (npm), against the real rtb binary.
# Installs chromium and the npm packages when missing; fails (never skips) when they cannot be installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (Debian)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
if ! command -v npm >/dev/null; then
  echo "== installing node and npm (Debian)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/pngjs" ]; then
  echo "== installing playwright-core and pngjs (npm)"
  (cd "$here" && npm ci --no-audit --no-fund)
fi

echo "== building rtb"
(cd "$root" && cargo build -p rtb-topology --bin rtb --locked)

echo "== dashboard browser test"
cd "$here"
RTB_BIN="$root/target/debug/rtb" node --test dashboard.test.mjs
