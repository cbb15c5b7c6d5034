#!/usr/bin/env bash
# The integrator's view of the API, as far as it needs no running issuer:
#   1. installs the pinned tools: npm packages from tests/clients/package-lock.json
#      (npm ci) and Python packages from tests/clients/requirements.txt into
#      tests/clients/.venv;
#   2. lints schemas/openapi.json with Redocly's recommended rules
#      (tests/clients/redocly.yaml): any error or warning fails;
#   3. generates the TypeScript types (openapi-typescript) and the Python
#      client (openapi-python-client) into tests/clients/generated/: any
#      generator warning fails;
#   4. type-checks the TypeScript suites against the generated types.
# tests/tests/clients_e2e.rs then runs the generated clients and the token
# verification examples against the real issuer on both backends.
# Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/../tests/clients"
SPEC=../../schemas/openapi.json
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1 NO_COLOR=1

npm ci --no-audit --no-fund --loglevel=error
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt

# Fails on any output line that is a warning or an error.
clean() {
    local what=$1 out=$2
    printf '%s\n' "$out"
    if grep -qiE 'warn|error|unable|skipp|⚠' <<<"$out"; then
        echo "$what reported a problem (above)" >&2
        exit 1
    fi
}

out=$(node_modules/.bin/redocly lint --config redocly.yaml --format stylish "$SPEC" 2>&1) || {
    printf '%s\n' "$out"
    echo "redocly lint failed" >&2
    exit 1
}
printf '%s\n' "$out"
if ! grep -q 'Your API description is valid' <<<"$out" || grep -qE '[0-9]+ warnings?' <<<"$out"; then
    echo "redocly lint reported warnings (above)" >&2
    exit 1
fi

rm -rf generated
mkdir -p generated/python
clean openapi-typescript "$(node_modules/.bin/openapi-typescript "$SPEC" --redocly redocly.yaml \
    -o generated/api.d.ts 2>&1)"
clean openapi-python-client "$(PATH="$PWD/.venv/bin:$PATH" .venv/bin/openapi-python-client generate \
    --path "$SPEC" --config openapi-python-client.yaml --meta none \
    --output-path generated/python/coditect_api 2>&1)"

node_modules/.bin/tsc -p .
echo "clients.sh: spec lint clean, clients generated without warnings"
