#!/usr/bin/env bash
# Load run of the Stripe webhook endpoint (issue 4): N paid checkouts on the
# tests' fake Stripe, then their license-creating `checkout.session.completed`
# events, each delivered twice at once, against the same requests refused for
# their signature, in the same run. Fails (exit 1) on any unexpected status,
# or unless the database then holds exactly N events, N licenses and N mails.
# The timings are a measurement, not a test.
#   cargo build --release -p coditect-issuer && cargo build -p coditect-tests --bin fake-stripe \
#     && tests/load/webhook-load.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET=${CARGO_TARGET_DIR:-$HERE/../../target}
BIN=${ISSUER_BIN:-$TARGET/release/coditect-issuer}
FAKE=${FAKE_STRIPE_BIN:-$TARGET/debug/fake-stripe}
PORT=${PORT_UNDER_TEST:-18182}
D=$(mktemp -d)
"$FAKE" >"$D/stripe.env" & FAKE_PID=$!
trap 'kill $FAKE_PID 2>/dev/null || true; rm -rf "$D"' EXIT
for _ in $(seq 1 300); do
    grep -q 'listening on' "$D/stripe.env" 2>/dev/null && break
    sleep 0.1
done
grep -q 'listening on' "$D/stripe.env" || { echo "the fake Stripe did not start" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
. "$D/stripe.env"
set +a
# Development mode, explicitly: the setup signs up many organisations from
# one address, above any limit production accepts.
export CODITECT_ENV=development CODITECT_DATA_DIR=$D RUST_LOG=warn \
    PILOT_USERS_LIMIT=1000000 RATE_LIMIT_LOGIN=1000000/min RATE_LIMIT_SIGNUP=1000000/min \
    RATE_LIMIT_BILLING_USER=1000000/min RATE_LIMIT_BILLING_ORG=1000000/min \
    RATE_LIMIT_WEBHOOK_REFUSALS=1000000/min
"$BIN" serve --bind 127.0.0.1:"$PORT" 2>"$D/log" & PID=$!
trap 'kill $PID $FAKE_PID 2>/dev/null || true; rm -rf "$D"' EXIT
until curl -sf http://127.0.0.1:"$PORT"/readyz >/dev/null; do sleep 0.01; done
python3 "$HERE/webhook_load.py" "http://127.0.0.1:$PORT/webhooks/stripe" "$STRIPE_WEBHOOK_SECRET" \
    "$STRIPE_API_BASE" "$STRIPE_SECRET_KEY" "$D/issuer.sqlite3" "${EVENTS:-300}" "${THREADS:-4}" "$PID"
