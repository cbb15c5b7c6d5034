#!/usr/bin/env bash
# Renewal throughput of two issuer builds, measured in one run: for each,
# /healthz and licenses/validate with wrk on loopback, the ratio
# validate/healthz, and the server's CPU time per validate (from
# /proc/PID/stat, user + system). Rounds alternate between the builds so
# that the machine's noise falls on both. A measurement, not a test.
#   tests/load/compare-validate.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Needs wrk (apt-get install wrk). Uses the development key and SQLite in a
# temporary folder; the rate limits are lifted.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OLD=$1 NEW=$2 ROUNDS=${3:-3}
PORT=${PORT_UNDER_TEST:-18191}
URL=http://127.0.0.1:$PORT
TICK=$(getconf CLK_TCK)
export RUST_LOG=warn
export RATE_LIMIT_LOGIN=1000000/min RATE_LIMIT_SIGNUP=1000000/min RATE_LIMIT_VALIDATE=1000000/min \
    RATE_LIMIT_ACTIVATE=1000000/hour RATE_LIMIT_LICENSE_IP=1000000/min
cd "$HERE"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One round for one binary: prints "label healthz_rps validate_rps cpu_us_per_validate p50 p99".
round() {
    local label=$1 bin=$2 dir pid key hw out before after rps p50 p99 hz n
    dir=$(mktemp -d)
    export CODITECT_DATA_DIR=$dir VALIDATE_BODY=$dir/validate.json
    "$bin" serve --bind 127.0.0.1:$PORT 2>"$dir/log" &
    pid=$!
    until curl -sf $URL/readyz >/dev/null; do sleep 0.02; done
    key=$("$bin" license create --email load@example.com --tier pilot-professional --json 2>/dev/null \
        | python3 -c 'import json,sys;print(json.load(sys.stdin)["key"])')
    hw=$(python3 -c "print('ab'*32)")
    curl -sf -X POST $URL/api/v1/licenses/activate -H 'content-type: application/json' \
        -d "{\"license_key\":\"$key\",\"hardware_id\":\"$hw\"}" >/dev/null
    echo "{\"license_key\":\"$key\",\"hardware_id\":\"$hw\",\"client_version\":\"1.0\"}" >"$VALIDATE_BODY"
    wrk -t2 -c16 -d3s -s validate.lua $URL/api/v1/licenses/validate >/dev/null # warm-up
    hz=$(wrk -t2 -c16 -d8s -s healthz.lua $URL/healthz | grep RESULT | sed 's/.*rps=\([0-9]*\).*/\1/')
    before=$(cpu_ticks $pid)
    out=$(wrk -t2 -c16 -d8s -s validate.lua $URL/api/v1/licenses/validate | grep RESULT)
    after=$(cpu_ticks $pid)
    kill $pid; wait $pid 2>/dev/null || true
    rm -rf "$dir"
    rps=$(sed 's/.*rps=\([0-9]*\).*/\1/' <<<"$out")
    p50=$(sed 's/.*p50_ms=\([0-9.]*\).*/\1/' <<<"$out")
    p99=$(sed 's/.*p99_ms=\([0-9.]*\).*/\1/' <<<"$out")
    n=$((rps * 8))
    python3 -c "
hz, rps, ticks, n = $hz, $rps, $((after - before)), $n
print(f'$label healthz={hz} validate={rps} ratio={rps/hz:.3f} cpu_us_per_validate={ticks*1e6/$TICK/max(n,1):.0f} p50_ms=$p50 p99_ms=$p99')"
}

for i in $(seq "$ROUNDS"); do
    round old "$OLD"
    round new "$NEW"
done
