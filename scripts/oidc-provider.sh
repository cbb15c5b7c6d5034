#!/usr/bin/env bash
# Installs the OpenID provider the sign-in tests run (tests/oidc: the
# oidc-provider package on node, pinned by its package-lock.json) into
# tests/oidc/node_modules. Node.js 20 or later must be installed.
set -euo pipefail
cd "$(dirname "$0")/../tests/oidc"
npm ci --no-audit --no-fund --loglevel=error
