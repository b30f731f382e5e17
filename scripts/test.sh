#!/usr/bin/env bash
# The project's tests, with their set-up: `cargo test --workspace`, then the dashboard's end-to-end test in
# a real browser (installs Debian's chromium and the npm packages when missing; fails, never skips, when
# they cannot be installed). `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== services (Kafka, Redis, PostgreSQL)"
./scripts/services.sh

echo "== cargo test --workspace"
cargo test --workspace --locked

echo "== dashboard in a real browser (Debian chromium + playwright-core)"
bash rtb-topology/tests/browser/run.sh
