#!/usr/bin/env bash
# Sets up what the tests need on a fresh machine, then runs them all.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# Python peers for the interop tests (pycose, cwt) and the spec validator.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    -r tests/python/requirements.txt

# Headless Chromium for the browser tests (Debian packages).
# tests/tests/browser_e2e.rs drives Debian's chromium through chromedriver
# (package chromium-driver); under CI (CI set, not 0/false) it fails when
# they are missing.
if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver
fi

# The committed OpenAPI spec is a valid OpenAPI document (the api tests check
# that it is exactly what the server serves).
python3 -m openapi_spec_validator schemas/openapi.json

# Integrators (docs/integrators.md): Redocly's lint of the spec, and the
# Python and TypeScript clients generated from it without warnings, with
# pinned tools (tests/clients/); tests/tests/clients_e2e.rs runs them
# against the issuer.
scripts/clients.sh

# The architecture rules the compiler cannot check (docs/ARCHITECTURE.md).
scripts/check-layers.sh

# The Cloud Run manifests are what deploy/cloud-run/container.json renders,
# and agree with the Dockerfile and .env.example.
python3 deploy/cloud-run/render.py --check

# Prometheus (Debian package): the alert rules checked and unit-tested with
# promtool; tests/tests/metrics_e2e.rs starts the server.
scripts/prometheus.sh

# PostgreSQL: the server CODITECT_TEST_POSTGRES names, else the one on
# 127.0.0.1:5432, else a throwaway one (initdb into a temporary folder,
# stopped when this script ends). Every test makes its own database.
# shellcheck source=scripts/postgres.sh
. scripts/postgres.sh
postgres_for_tests

# Sign in with Google/GitHub (tests/tests/oauth_e2e.rs): a real OpenID
# provider (oidc-provider on node, tests/oidc).
scripts/oidc-provider.sh

cargo test --workspace --locked "$@"

# The distribution build of the CLI (no dev-keys) on its own: it must refuse
# tokens signed with the public development key.
cargo test --locked -p coditect-cli

# The development build's trust rules (`dev-keys`): only the CLI's own unit
# tests, so only that crate is rebuilt with the feature.
cargo test --locked -p coditect-cli --features dev-keys --lib trust::

# npm packages of the CLI: generated versions, the release workflow's lint,
# the shim's Node tests and the offline npm install end to end.
scripts/test-npm.sh

# Property-based test of the running API against its spec, on each
# backend.
scripts/schemathesis.sh sqlite
scripts/schemathesis.sh postgres
