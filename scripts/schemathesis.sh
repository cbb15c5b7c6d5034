#!/usr/bin/env bash
# Property-based API test: schemathesis generates requests from the served
# /openapi.json and checks every response (no 5xx, status codes, content
# types and bodies as documented, valid data accepted, invalid data refused).
# Run by scripts/test.sh; needs `pip install -r tests/python/requirements.txt`.
# Usage: scripts/schemathesis.sh [sqlite|postgres]   (default sqlite; on
# postgres, a database of its own on the server CODITECT_TEST_POSTGRES names)
set -euo pipefail
cd "$(dirname "$0")/.."
BACKEND=${1:-sqlite}
cargo build --locked -q -p coditect-issuer --bin coditect-issuer
cargo build --locked -q -p coditect-tests --bin fake-stripe
BIN=${CARGO_TARGET_DIR:-target}/debug/coditect-issuer
FAKE=${CARGO_TARGET_DIR:-target}/debug/fake-stripe
DATA=$(mktemp -d)
LOG=$DATA/issuer.log
# Payments on, against the tests' fake Stripe: it prints the STRIPE_*
# variables that point the issuer at it.
"$FAKE" >"$DATA/stripe.env" &
FAKE_PID=$!
for _ in $(seq 1 300); do
    grep -q 'listening on' "$DATA/stripe.env" 2>/dev/null && break
    sleep 0.1
done
# Without the fake Stripe the issuer would start with payments off and the
# billing operations would only ever answer 503: fail instead.
if ! grep -q 'listening on' "$DATA/stripe.env" 2>/dev/null; then
    kill "$FAKE_PID" 2>/dev/null || true
    cat "$DATA/stripe.env" >&2 || true
    echo "the fake Stripe did not start within 30 s; payments would be off" >&2
    exit 1
fi
set -a
# shellcheck disable=SC1091
. "$DATA/stripe.env"
set +a
if [ -z "${STRIPE_API_BASE:-}" ] || [ -z "${STRIPE_SECRET_KEY:-}" ]; then
    kill "$FAKE_PID" 2>/dev/null || true
    echo "the fake Stripe printed no STRIPE_API_BASE / STRIPE_SECRET_KEY" >&2
    exit 1
fi
drop_db() { :; }
if [ "$BACKEND" = postgres ]; then
    # shellcheck source=scripts/postgres.sh
    . scripts/postgres.sh
    postgres_for_tests
    DBNAME=coditect_schemathesis_$$
    psql "$CODITECT_TEST_POSTGRES" -XAtqc "CREATE DATABASE $DBNAME TEMPLATE template0"
    export DATABASE_URL=${CODITECT_TEST_POSTGRES%/*}/$DBNAME
    drop_db() {
        psql "$CODITECT_TEST_POSTGRES" -XAtqc "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" || true
        postgres_throwaway_stop
    }
fi
echo "schemathesis on $BACKEND"
# Rate limits are tested on their own; here they would only answer 429.
CODITECT_DATA_DIR=$DATA RUST_LOG=info NO_COLOR=1 \
RATE_LIMIT_LOGIN=1000000/min RATE_LIMIT_SIGNUP=1000000/min RATE_LIMIT_VALIDATE=1000000/min \
RATE_LIMIT_ACTIVATE=1000000/hour RATE_LIMIT_LICENSE_IP=1000000/min \
    "$BIN" serve --bind 127.0.0.1:0 2>"$LOG" &
PID=$!
trap 'kill $PID $FAKE_PID 2>/dev/null || true; drop_db; rm -rf "$DATA"' EXIT
URL=
for _ in $(seq 1 300); do
    URL=$(grep -o 'listening on http://[0-9.:]*' "$LOG" | head -n1 | sed 's/listening on //') || true
    [ -n "$URL" ] && curl -sf "$URL/readyz" >/dev/null && break
    sleep 0.1
done
[ -n "$URL" ] || { cat "$LOG"; echo "the issuer did not start"; exit 1; }
# A signed-in user, so that the account and billing operations are reached
# too.
curl -sf "$URL/api/v1/auth/signup" -H 'content-type: application/json' \
    -d '{"email":"fuzz@example.com","password":"correct horse battery staple","company_name":"Fuzz Ltd"}' >/dev/null
TOKEN=$(curl -sf "$URL/api/v1/auth/login" -H 'content-type: application/json' \
    -d '{"email":"fuzz@example.com","password":"correct horse battery staple"}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
# Payments are on: a checkout reaches the fake Stripe (503 would mean off).
STATUS=$(curl -s -o /dev/null -w '%{http_code}' "$URL/api/v1/billing/checkout" \
    -H 'content-type: application/json' -H "Authorization: Bearer $TOKEN" \
    -d '{"plan":"pilot-starter","interval":"month"}')
if [ "$STATUS" != 200 ]; then
    cat "$LOG" >&2
    echo "payments are not on: a checkout answered $STATUS, not 200" >&2
    exit 1
fi
cd "$DATA"
# The console script sits beside the interpreter pip installed it for (a
# fresh pyenv has no shim for it until `pyenv rehash`).
PYBIN=$(python3 -c 'import os, sys; print(os.path.dirname(sys.executable))')
# Logout would end the session the other operations use; it is tested
# unauthenticated in its own run.
"$PYBIN/st" run "$URL/openapi.json" --checks all --max-examples 50 --seed 1 --no-color \
    --header "Authorization: Bearer $TOKEN" --exclude-operation-id logout
"$PYBIN/st" run "$URL/openapi.json" --checks all --max-examples 50 --seed 1 --no-color \
    --include-operation-id logout
