#!/usr/bin/env bash
# Installs the OpenID provider the sign-in tests run (tests/oidc: the
# oidc-provider package on node, pinned by its package-lock.json) into
# tests/oidc/node_modules, and node and npm first (Debian packages) if they
# are missing. tests/src/oidc.rs fails under CI when it is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nodejs npm
fi
cd tests/oidc
npm ci --no-audit --no-fund --loglevel=error
