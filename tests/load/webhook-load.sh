#!/usr/bin/env bash
# Load run of the Stripe webhook endpoint (issue 4): signed events recorded
# exactly once, against the same requests refused for their signature, in
# the same run. A measurement, not a test.
#   cargo build --release -p coditect-issuer && tests/load/webhook-load.sh
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${ISSUER_BIN:-$HERE/../../target/release/coditect-issuer}
PORT=${PORT_UNDER_TEST:-18182}
D=$(mktemp -d)
SECRET=whsec_load_test_secret
export CODITECT_DATA_DIR=$D RUST_LOG=warn STRIPE_SECRET_KEY=sk_test_load STRIPE_WEBHOOK_SECRET=$SECRET \
    STRIPE_PRICE_STARTER_MONTHLY=price_a STRIPE_PRICE_STARTER_ANNUAL=price_b \
    STRIPE_PRICE_PRO_MONTHLY=price_c STRIPE_PRICE_PRO_ANNUAL=price_d
"$BIN" serve --bind 127.0.0.1:$PORT 2>"$D/log" & PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$D"' EXIT
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.01; done
python3 "$HERE/webhook_load.py" "http://127.0.0.1:$PORT/webhooks/stripe" "$SECRET" "${EVENTS:-2000}" "${THREADS:-4}" "$PID"
echo "stripe_events rows: $(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from stripe_events').fetchone()[0])" "$D/issuer.sqlite3")"
