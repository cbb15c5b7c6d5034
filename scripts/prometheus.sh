#!/usr/bin/env bash
# Prometheus for the monitoring checks: Debian's package `prometheus`
# (the server and promtool). Installs it when missing, then checks the
# alert rules (`promtool check rules`) and runs their unit tests
# (`promtool test rules`). tests/tests/metrics_e2e.rs starts the server.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # No recommends: the node exporter and the web console are not needed.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus
    # The package starts a server where an init system runs; the tests
    # start their own on a free port, so the packaged one is not needed.
fi

promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
