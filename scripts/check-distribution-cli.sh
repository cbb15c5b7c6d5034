#!/usr/bin/env bash
# Refuses a `coditect` binary that is not a distribution build: one whose
# `--version` reports a development build or names a feature that only
# development and test builds have (dev-keys: trusts the public development
# signing key; test-hooks: takes the clock and machine id from the
# environment). Used by scripts/package-cli.sh before anything is packaged,
# and by the tests (tests/tests/packaging_e2e.rs).
# Usage: scripts/check-distribution-cli.sh BINARY
# Exit: 0 a distribution build; 1 refused (the message says why).
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BINARY" >&2
    exit 2
fi
bin=$1
if [ ! -x "$bin" ]; then
    echo "check-distribution-cli: $bin is not an executable file" >&2
    exit 1
fi
# A clean environment: nothing the test hooks read.
if ! version=$(env -i PATH=/usr/bin:/bin "$bin" --version 2>&1); then
    echo "check-distribution-cli: \`$bin --version\` failed: $version" >&2
    exit 1
fi
for marker in "development build" "dev-keys" "test-hooks"; do
    if printf '%s' "$version" | grep -qiF -- "$marker"; then
        echo "check-distribution-cli: refused $bin: \`coditect --version\` says \"$version\"" >&2
        echo "  it is not a distribution build ($marker); build it with" >&2
        echo "  \`cargo build --release --locked -p coditect-cli --bin coditect\` (no features)" >&2
        exit 1
    fi
done
if ! printf '%s' "$version" | grep -qE '^coditect [0-9]+\.[0-9]+\.[0-9]+$'; then
    echo "check-distribution-cli: refused $bin: unexpected \`--version\` output \"$version\"" >&2
    echo "  (a distribution build prints exactly \`coditect X.Y.Z\`)" >&2
    exit 1
fi
echo "$bin: distribution build ($version)"
